// sample_transform.c: decode only the union of the crop boxes, at the
// smallest JPEG DCT scale that still gives every crop at least S pixels, then
// resample each crop like torchvision's resized_crop (the filter stops at the
// crop's edges, as it does after PIL's crop()).
#include "sample_transform.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void build_luts(TransformScratch *ts, const LoaderConfig *cfg) {
    for (int v = 0; v < 256; v++) {
        ts->clean_lut[v] = v / 255.0f;
        for (int c = 0; c < 3; c++) ts->norm_lut[c][v] = (v / 255.0f - cfg->mean[c]) / cfg->std[c];
    }
    int S = cfg->image_size, C = cfg->channels;
    ts->crop = xmalloc((size_t)S * S * C, "crop");
    ts->hwc = xmalloc(sizeof(float) * S * S * C, "crop floats");
    ts->tmp = xmalloc(sizeof(float) * S * S * C, "crop scratch");
    ts->luts_ready = 1;
}

void transform_scratch_free(TransformScratch *ts) {
    decoded_image_free(&ts->img);
    resample_scratch_free(&ts->rs);
    free(ts->crop);
    free(ts->hwc);
    free(ts->tmp);
    memset(ts, 0, sizeof *ts);
}

static int has_colour_ops(const ViewParams *v) { return v->jitter || v->grayscale || v->blur || v->solarize; }

// u8 HWC crop -> CHW planes, through the colour ops when the view has any.
static void write_view(TransformScratch *ts, const LoaderConfig *cfg, const ViewParams *v, float *norm, float *clean) {
    int S = cfg->image_size, C = cfg->channels;
    size_t np = (size_t)S * S;
    const uint8_t *u = ts->crop;
    for (int c = 0; c < C; c++) {
        float *cl = clean + c * np;
        for (size_t p = 0; p < np; p++) cl[p] = ts->clean_lut[u[p * C + c]];
    }
    if (!has_colour_ops(v)) {
        for (int c = 0; c < C; c++) {
            const float *lut = ts->norm_lut[c];
            float *nm = norm + c * np;
            for (size_t p = 0; p < np; p++) nm[p] = lut[u[p * C + c]];
        }
        return;
    }
    for (size_t i = 0; i < np * C; i++) ts->hwc[i] = ts->clean_lut[u[i]];
    apply_colour_ops(ts->hwc, S, S, C, v, cfg, ts->tmp);
    for (int c = 0; c < C; c++) {
        float m = cfg->mean[c], is = 1.0f / cfg->std[c];
        float *nm = norm + c * np;
        for (size_t p = 0; p < np; p++) nm[p] = (ts->hwc[p * C + c] - m) * is;
    }
}

static int fail(int why, char *detail, size_t n, const char *msg) {
    snprintf(detail, n, "%s", msg);
    return why;
}

int sample_check_header(const uint8_t *data, size_t len, ImageFormat ext, int64_t max_pixels, int *W, int *H,
                        char *detail, size_t dlen) {
    ImageFormat fmt = image_sniff(data, len);
    if (fmt == IMG_UNKNOWN) return fail(SKIP_WRONG_FORMAT, detail, dlen, "bytes are neither JPEG nor PNG");
    if (ext != IMG_UNKNOWN && fmt != ext)
        return fail(SKIP_WRONG_FORMAT, detail, dlen, fmt == IMG_PNG ? "PNG data under a JPEG extension" : "JPEG data under a PNG extension");
    DecodeStatus st = image_read_size(data, len, W, H, detail, dlen);
    if (st != DECODE_OK) return st == DECODE_WRONG_FORMAT ? SKIP_WRONG_FORMAT : SKIP_CORRUPT_IMAGE;
    if ((int64_t)*W * *H > max_pixels) {
        snprintf(detail, dlen, "%dx%d pixels exceeds max_pixels %lld", *W, *H, (long long)max_pixels);
        return SKIP_TOO_LARGE;
    }
    if (*W <= 0 || *H <= 0) return fail(SKIP_CORRUPT_IMAGE, detail, dlen, "zero-sized image");
    return -1;
}

int transform_sample(const LoaderConfig *cfg, const uint8_t *data, size_t len, ImageFormat ext, Rng *rng, int nviews,
                     float *out_norm[2], float *out_clean[2], TransformScratch *ts, char *detail, size_t dlen) {
    if (!ts->luts_ready) build_luts(ts, cfg);
    int W, H, why = sample_check_header(data, len, ext, cfg->max_pixels, &W, &H, detail, dlen);
    if (why >= 0) return why;
    DecodeStatus st;
    const int S = cfg->image_size, C = cfg->channels;

    ViewParams views[2];
    int x0 = W, y0 = H, x1 = 0, y1 = 0;
    double min_scale = 0;
    int rw = 0, rh = 0, cx = 0, cy = 0;
    if (cfg->mode == LOADER_EVAL) {
        memset(views, 0, sizeof views);
        eval_geometry(W, H, cfg->eval_resize, S, &rw, &rh, &cx, &cy);
        x0 = y0 = 0, x1 = W, y1 = H;
        min_scale = fmax((double)rw / W, (double)rh / H);
        nviews = 1;
    } else {
        for (int v = 0; v < nviews; v++) {
            ViewParams *p = &views[v];
            draw_view_params(rng, cfg, W, H, p);
            if (p->x < x0) x0 = p->x;
            if (p->y < y0) y0 = p->y;
            if (p->x + p->w > x1) x1 = p->x + p->w;
            if (p->y + p->h > y1) y1 = p->y + p->h;
            min_scale = fmax(min_scale, fmax((double)S / p->w, (double)S / p->h));
        }
    }
    DecodedImage *img = &ts->img;
    st = image_decode_region(data, len, C, cfg->max_pixels, x0, y0, x1, y1, min_scale, img);
    if (st != DECODE_OK) {
        snprintf(detail, dlen, "%s", img->error);
        return st == DECODE_TOO_LARGE ? SKIP_TOO_LARGE : st == DECODE_WRONG_FORMAT ? SKIP_WRONG_FORMAT : SKIP_CORRUPT_IMAGE;
    }
    for (int v = 0; v < nviews; v++) {
        if (cfg->mode == LOADER_EVAL) {
            // The whole decoded image is resized; only the centre window is computed.
            resample_u8(img->pixels, img->width, img->height, C, (size_t)img->width * C, 0, 0, W * img->scale_x,
                        H * img->scale_y, rw, rh, cx, cy, S, S, cfg->interp, ts->crop, &ts->rs);
        } else {
            const ViewParams *p = &views[v];
            double bx0 = p->x * img->scale_x - img->off_x, bx1 = (p->x + p->w) * img->scale_x - img->off_x;
            double by0 = p->y * img->scale_y - img->off_y, by1 = (p->y + p->h) * img->scale_y - img->off_y;
            // The crop's own pixels, so the filter is clamped at its edges.
            int ix0 = (int)floor(bx0 + 1e-9), iy0 = (int)floor(by0 + 1e-9);
            int ix1 = (int)ceil(bx1 - 1e-9), iy1 = (int)ceil(by1 - 1e-9);
            if (ix0 < 0) ix0 = 0;
            if (iy0 < 0) iy0 = 0;
            if (ix1 > img->width) ix1 = img->width;
            if (iy1 > img->height) iy1 = img->height;
            if (ix1 <= ix0 || iy1 <= iy0) return fail(SKIP_CORRUPT_IMAGE, detail, dlen, "decoded region misses the crop");
            const uint8_t *src = img->pixels + ((size_t)iy0 * img->width + ix0) * C;
            resample_u8(src, ix1 - ix0, iy1 - iy0, C, (size_t)img->width * C, bx0 - ix0, by0 - iy0, bx1 - ix0,
                        by1 - iy0, S, S, 0, 0, S, S, cfg->interp, ts->crop, &ts->rs);
            if (p->flip) hflip_u8(ts->crop, S, S, C);
        }
        write_view(ts, cfg, &views[v], out_norm[v], out_clean[v]);
    }
    return -1;
}
