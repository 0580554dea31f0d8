// mixing.c: mixup and cutmix (mixing.h).
#include "mixing.h"

#include <math.h>
#include <string.h>

#include "common.h"

#define MIX_STREAM_SALT 0x6d69787570000000ULL  // "mixup": its own draws

int mix_enabled(const MixConfig *m) { return m->mixup_alpha > 0 || m->cutmix_alpha > 0; }

// Gamma(a, 1) (Marsaglia and Tsang; a < 1 through Gamma(a + 1) * U^(1/a)).
static double rng_gamma(Rng *r, double a) {
    if (a < 1) return rng_gamma(r, a + 1) * pow(1.0 - rng_uniform(r), 1.0 / a);
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = 1.0 - rng_uniform(r);  // (0, 1]
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

double rng_beta_symmetric(Rng *r, double a) {
    double x = rng_gamma(r, a), y = rng_gamma(r, a);
    return x + y > 0 ? x / (x + y) : 0.5;
}

static int clip_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// timm's rand_bbox: a box of side sqrt(1 - lam) around a uniform centre, clipped to the image.
static void draw_box(int32_t *box, Rng *r, double lam, int H, int W) {
    double cut = sqrt(1.0 - lam);
    int ch = (int)(H * cut), cw = (int)(W * cut);
    int cy = (int)rng_below(r, (uint32_t)H), cx = (int)rng_below(r, (uint32_t)W);
    box[0] = clip_int(cy - ch / 2, 0, H), box[1] = clip_int(cy + ch / 2, 0, H);
    box[2] = clip_int(cx - cw / 2, 0, W), box[3] = clip_int(cx + cw / 2, 0, W);
}

static void smoothed_target(float *t, int label, float lam, const MixConfig *m) {
    int K = m->num_classes;
    float off = m->smoothing / (float)K;
    for (int k = 0; k < K; k++) t[k] += lam * off;
    t[label] += lam * (1.0f - m->smoothing);
}

// One pair (a, b) of images of n values each, C planes of H x W.
static void mix_pair(float *oa, float *ob, const float *a, const float *b, float lam, const int32_t *box, int C, int H,
                     int W) {
    long n = (long)C * H * W;
    if (!box) {
        for (long i = 0; i < n; i++) oa[i] = lam * a[i] + (1 - lam) * b[i], ob[i] = lam * b[i] + (1 - lam) * a[i];
        return;
    }
    memcpy(oa, a, sizeof(float) * n), memcpy(ob, b, sizeof(float) * n);
    for (int c = 0; c < C; c++)
        for (int y = box[0]; y < box[1]; y++)
            for (int x = box[2]; x < box[3]; x++) {
                long i = ((long)c * H + y) * W + x;
                oa[i] = b[i], ob[i] = a[i];
            }
}

void mix_batch(float *out, float *targets, float *lam, int32_t *box, const float *images, const int32_t *labels, int B,
               int C, int H, int W, const MixConfig *m, int64_t step, int64_t first_image) {
    long n = (long)C * H * W;
    int K = m->num_classes;
    memset(targets, 0, sizeof(float) * (size_t)B * K);
    if (box) memset(box, 0, sizeof(int32_t) * 4 * (size_t)B);
    for (int a = 0; a + 1 < B; a += 2) {
        Rng r;
        rng_seed_image(&r, m->seed ^ MIX_STREAM_SALT, step, first_image + a);
        int cutmix = m->cutmix_alpha > 0 && (m->mixup_alpha <= 0 || rng_uniform(&r) < 0.5);
        double l = rng_beta_symmetric(&r, cutmix ? m->cutmix_alpha : m->mixup_alpha);
        int32_t bx[4] = {0, 0, 0, 0};
        if (cutmix) {
            draw_box(bx, &r, l, H, W);
            l = 1.0 - (double)(bx[1] - bx[0]) * (bx[3] - bx[2]) / ((double)H * W);
        }
        mix_pair(out + a * n, out + (a + 1) * n, images + a * n, images + (a + 1) * n, (float)l, cutmix ? bx : NULL, C,
                 H, W);
        for (int j = 0; j < 2; j++) {
            float *t = targets + (long)(a + j) * K;
            smoothed_target(t, labels[a + j], (float)l, m);
            smoothed_target(t, labels[a + 1 - j], (float)(1 - l), m);
            if (lam) lam[a + j] = (float)l;
            if (box) memcpy(box + 4L * (a + j), bx, sizeof bx);
        }
    }
    if (B % 2) {  // the unpaired last image
        memcpy(out + (long)(B - 1) * n, images + (long)(B - 1) * n, sizeof(float) * n);
        smoothed_target(targets + (long)(B - 1) * K, labels[B - 1], 1.0f, m);
        if (lam) lam[B - 1] = 1.0f;
    }
}
