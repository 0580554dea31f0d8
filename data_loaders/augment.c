// augment.c: the random draws copy torchvision's order and formulas; the
// colour ops copy torchvision.transforms.functional_tensor (float images).
#include "augment.h"

#include <math.h>
#include <string.h>

void rrc_params(Rng *r, int width, int height, const float scale[2], const float ratio[2], int *x, int *y, int *w,
                int *h) {
    double area = (double)width * height;
    double lr0 = log(ratio[0]), lr1 = log(ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * rng_uniform_range(r, scale[0], scale[1]);
        double aspect = exp(rng_uniform_range(r, lr0, lr1));
        int cw = (int)nearbyint(sqrt(target * aspect));  // Python round(): half to even
        int ch = (int)nearbyint(sqrt(target / aspect));
        if (cw > 0 && cw <= width && ch > 0 && ch <= height) {
            *y = (int)rng_below(r, height - ch + 1);
            *x = (int)rng_below(r, width - cw + 1);
            *w = cw, *h = ch;
            return;
        }
    }
    double in_ratio = (double)width / height;
    int cw, ch;
    if (in_ratio < ratio[0]) cw = width, ch = (int)nearbyint(cw / ratio[0]);
    else if (in_ratio > ratio[1]) ch = height, cw = (int)nearbyint(ch * ratio[1]);
    else cw = width, ch = height;
    *w = cw, *h = ch;
    *y = (height - ch) / 2;
    *x = (width - cw) / 2;
}

void draw_view_params(Rng *r, const LoaderConfig *cfg, int width, int height, ViewParams *v) {
    memset(v, 0, sizeof *v);
    rrc_params(r, width, height, cfg->crop_scale, cfg->crop_ratio, &v->x, &v->y, &v->w, &v->h);
    v->flip = rng_uniform(r) < cfg->flip_p;
    v->jitter = rng_uniform(r) < cfg->jitter_p;
    if (v->jitter) {
        uint32_t order[4] = {0, 1, 2, 3};
        rng_shuffle_u32(r, order, 4);
        for (int i = 0; i < 4; i++) v->jitter_order[i] = (int)order[i];
        float b = cfg->brightness, c = cfg->contrast, s = cfg->saturation, hh = cfg->hue;
        v->bright_f = (float)rng_uniform_range(r, b < 1 ? 1 - b : 0, 1 + b);
        v->contrast_f = (float)rng_uniform_range(r, c < 1 ? 1 - c : 0, 1 + c);
        v->sat_f = (float)rng_uniform_range(r, s < 1 ? 1 - s : 0, 1 + s);
        v->hue_f = (float)rng_uniform_range(r, -hh, hh);
    }
    v->grayscale = rng_uniform(r) < cfg->grayscale_p;
    v->blur = rng_uniform(r) < cfg->blur_p;
    v->blur_sigma = (float)rng_uniform_range(r, cfg->blur_sigma[0], cfg->blur_sigma[1]);
    v->solarize = rng_uniform(r) < cfg->solarize_p;
}

void eval_geometry(int width, int height, float resize, int size, int *rw, int *rh, int *cx, int *cy) {
    int short_side = width < height ? width : height, long_side = width < height ? height : width;
    int new_short = (int)resize, new_long = (int)((double)new_short * long_side / short_side);
    *rw = width <= height ? new_short : new_long;
    *rh = width <= height ? new_long : new_short;
    *cx = (int)nearbyint((*rw - size) / 2.0);
    *cy = (int)nearbyint((*rh - size) / 2.0);
}

void hflip_u8(uint8_t *img, int w, int h, int ch) {
    for (int y = 0; y < h; y++) {
        uint8_t *row = img + (size_t)y * w * ch;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int c = 0; c < ch; c++) {
                uint8_t t = row[a * ch + c];
                row[a * ch + c] = row[b * ch + c];
                row[b * ch + c] = t;
            }
    }
}

static inline float clamp01(float x) { return x < 0 ? 0 : x > 1 ? 1 : x; }
static inline float grey_of(const float *p) { return 0.2989f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }

// out = clamp(f * img + (1 - f) * other), other per pixel (grey) or a constant.
static void blend(float *img, size_t npix, int ch, float f, const float *grey, float constant) {
    for (size_t i = 0; i < npix; i++) {
        float o = grey ? grey[i] : constant;
        for (int c = 0; c < ch; c++) img[i * ch + c] = clamp01(f * img[i * ch + c] + (1 - f) * o);
    }
}

static void adjust_hue(float *img, size_t npix, float shift) {
    for (size_t i = 0; i < npix; i++) {
        float *p = img + 3 * i;
        float r = p[0], g = p[1], b = p[2];
        float mx = fmaxf(r, fmaxf(g, b)), mn = fminf(r, fminf(g, b)), cr = mx - mn;
        float s = mx > 0 ? cr / mx : 0, v = mx, h = 0;
        if (cr > 0) {
            if (mx == r) h = fmodf((g - b) / cr, 6.0f);
            else if (mx == g) h = (b - r) / cr + 2.0f;
            else h = (r - g) / cr + 4.0f;
            h /= 6.0f;
            if (h < 0) h += 1.0f;
        }
        h = fmodf(h + shift + 1.0f, 1.0f);
        float hh = h * 6.0f;
        int sector = (int)floorf(hh) % 6;
        float f = hh - floorf(hh);
        float pp = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
        float rgb[6][3] = {{v, t, pp}, {q, v, pp}, {pp, v, t}, {pp, q, v}, {t, pp, v}, {v, pp, q}};
        p[0] = clamp01(rgb[sector][0]), p[1] = clamp01(rgb[sector][1]), p[2] = clamp01(rgb[sector][2]);
    }
}

// torchvision GaussianBlur: kernel from sigma, reflect padding, separable.
static void gaussian_blur(float *img, int w, int h, int ch, int ksize, float sigma, float *tmp) {
    float k[ksize];
    int half = ksize / 2;
    float sum = 0;
    for (int i = 0; i < ksize; i++) {
        float x = (float)(i - half);
        k[i] = expf(-0.5f * (x / sigma) * (x / sigma));
        sum += k[i];
    }
    for (int i = 0; i < ksize; i++) k[i] /= sum;
#define REFLECT(i, n) ((i) < 0 ? -(i) : (i) >= (n) ? 2 * (n) - 2 - (i) : (i))
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                float s = 0;
                for (int i = 0; i < ksize; i++) {
                    int xx = REFLECT(x + i - half, w);
                    s += k[i] * img[((size_t)y * w + xx) * ch + c];
                }
                tmp[((size_t)y * w + x) * ch + c] = s;
            }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                float s = 0;
                for (int i = 0; i < ksize; i++) {
                    int yy = REFLECT(y + i - half, h);
                    s += k[i] * tmp[((size_t)yy * w + x) * ch + c];
                }
                img[((size_t)y * w + x) * ch + c] = s;
            }
#undef REFLECT
}

void apply_colour_ops(float *img, int w, int h, int ch, const ViewParams *v, const LoaderConfig *cfg, float *tmp) {
    size_t npix = (size_t)w * h;
    float *grey = tmp;  // npix floats
    if (v->jitter) {
        for (int i = 0; i < 4; i++) {
            switch (v->jitter_order[i]) {
            case 0: blend(img, npix, ch, v->bright_f, NULL, 0); break;
            case 1: {
                double m = 0;
                for (size_t p = 0; p < npix; p++) m += ch == 3 ? grey_of(img + 3 * p) : img[p];
                blend(img, npix, ch, v->contrast_f, NULL, (float)(m / npix));
                break;
            }
            case 2:
                if (ch == 3) {
                    for (size_t p = 0; p < npix; p++) grey[p] = grey_of(img + 3 * p);
                    blend(img, npix, ch, v->sat_f, grey, 0);
                }
                break;
            case 3:
                if (ch == 3 && v->hue_f != 0) adjust_hue(img, npix, v->hue_f);
                break;
            }
        }
    }
    if (v->grayscale && ch == 3)
        for (size_t p = 0; p < npix; p++) {
            float g = grey_of(img + 3 * p);
            img[3 * p] = img[3 * p + 1] = img[3 * p + 2] = g;
        }
    if (v->blur) {
        int ksize = (int)(0.1 * cfg->image_size) | 1;  // ~10% of the side, odd (BYOL: 23 at 224)
        if (ksize >= 3 && ksize < 2 * w && ksize < 2 * h) gaussian_blur(img, w, h, ch, ksize, v->blur_sigma, tmp);
    }
    if (v->solarize)
        for (size_t i = 0; i < npix * ch; i++)
            if (img[i] >= cfg->solarize_threshold) img[i] = 1.0f - img[i];
}
