// resample.c: a port of PIL's Resample.c (precompute_coeffs,
// normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc) for 1 and 3
// channels. Exactness against PIL is what the crop test checks.
#include "resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE4_1__
#include <immintrin.h>
#endif

#include "common.h"

enum { PRECISION_BITS = 32 - 8 - 2 };
typedef int32_t v4si __attribute__((vector_size(16)));

// Four bytes -> four int32 lanes: one instruction with SSE4.1.
static inline v4si widen_u8x4(int32_t px) {
#ifdef __SSE4_1__
    return (v4si)_mm_cvtepu8_epi32(_mm_cvtsi32_si128(px));
#else
    v4si v = {px & 255, px >> 8 & 255, px >> 16 & 255, (int32_t)((uint32_t)px >> 24)};
    return v;
#endif
}

static double filter_bilinear(double x) {
    if (x < 0) x = -x;
    return x < 1 ? 1 - x : 0;
}

static double filter_bicubic(double x) {
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

static double filter_support(Interpolation f) { return f == INTERP_BICUBIC ? 2.0 : 1.0; }

// One output pixel's window: PIL's arithmetic, kept verbatim for exactness.
static void window(int in_size, double in0, double in1, int out_size, int xx, double support_base, int *xmin,
                   int *xmax, double *center, double *ss) {
    double scale = (in1 - in0) / out_size, filterscale = scale < 1 ? 1 : scale;
    double support = support_base * filterscale;
    *center = in0 + (xx + 0.5) * scale;
    *ss = 1.0 / filterscale;
    int lo = (int)(*center - support + 0.5), hi = (int)(*center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in_size) hi = in_size;
    *xmin = lo;
    *xmax = hi - lo;
}

void resample_input_range(int in_size, double in0, double in1, int out_size, int o0, int o1, Interpolation f,
                          int *lo, int *hi) {
    int a, n, b, m;
    double c, ss;
    window(in_size, in0, in1, out_size, o0, filter_support(f), &a, &n, &c, &ss);
    window(in_size, in0, in1, out_size, o1 - 1, filter_support(f), &b, &m, &c, &ss);
    *lo = a;
    *hi = b + m;
}

// Coefficients for outputs [o0, o0+n) in fixed point; returns ksize.
static int coeffs(int in_size, double in0, double in1, int out_size, int o0, int n, Interpolation f, int **bounds,
                  int32_t **kk, int *cap_out, int *cap_k) {
    double scale = (in1 - in0) / out_size, filterscale = scale < 1 ? 1 : scale;
    double support = filter_support(f) * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    if (n > *cap_out) {
        free(*bounds);
        *cap_out = n;
        *bounds = xmalloc(sizeof(int) * 2 * n, "resample bounds");
    }
    if ((size_t)n * ksize > (size_t)*cap_k) {
        free(*kk);
        *cap_k = n * ksize;
        *kk = xmalloc(sizeof(int32_t) * n * ksize, "resample weights");
    }
    double (*fn)(double) = f == INTERP_BICUBIC ? filter_bicubic : filter_bilinear;
    double w[ksize];
    for (int i = 0; i < n; i++) {
        int xmin, xmax;
        double center, ss, ww = 0;
        window(in_size, in0, in1, out_size, o0 + i, filter_support(f), &xmin, &xmax, &center, &ss);
        for (int x = 0; x < xmax; x++) {
            w[x] = fn((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = *kk + (size_t)i * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax && ww != 0 ? w[x] / ww : 0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        (*bounds)[2 * i] = xmin;
        (*bounds)[2 * i + 1] = xmax;
    }
    return ksize;
}

static inline uint8_t clip8(int32_t ss) {
    int32_t v = ss >> PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

void resample_u8(const uint8_t *src, int w, int h, int ch, size_t stride, double bx0, double by0, double bx1, double by1, int out_w,
                 int out_h, int ox, int oy, int dw, int dh, Interpolation f, uint8_t *dst, ResampleScratch *s) {
    s->ksize = coeffs(w, bx0, bx1, out_w, ox, dw, f, &s->bounds, &s->weights, &s->cap_out, &s->cap_k);
    s->ksize_v = coeffs(h, by0, by1, out_h, oy, dh, f, &s->bounds_v, &s->weights_v, &s->cap_out_v, &s->cap_k_v);
    // Rows the vertical pass reads: the horizontal pass computes only these.
    int y_first = s->bounds_v[0], y_last = s->bounds_v[2 * (dh - 1)] + s->bounds_v[2 * (dh - 1) + 1];
    int rows = y_last - y_first;
    size_t need = (size_t)rows * dw * ch;
    if (need > s->tmp_cap) {
        free(s->tmp);
        s->tmp_cap = need;
        s->tmp = xmalloc(need, "resample temp");
    }
    const int ks = s->ksize, ksv = s->ksize_v;
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(y + y_first) * stride;
        uint8_t *out = s->tmp + (size_t)y * dw * ch;
        for (int x = 0; x < dw; x++) {
            int xmin = s->bounds[2 * x], xmax = s->bounds[2 * x + 1];
            const int32_t *k = s->weights + (size_t)x * ks;
            if (ch == 1) {
                int32_t ss = 1 << (PRECISION_BITS - 1);
                for (int i = 0; i < xmax; i++) ss += in[xmin + i] * k[i];
                out[x] = clip8(ss);
            } else {
                // RGB in one 4-lane vector per tap; the 4th byte is the next
                // pixel's R, ignored. The image's last pixel is read by itself
                // so nothing past the row end is touched.
                const uint8_t *p = in + 3 * xmin;
                int nvec = xmin + xmax == w ? xmax - 1 : xmax;
                v4si acc = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 0};
                for (int i = 0; i < nvec; i++) {
                    int32_t px;
                    memcpy(&px, p + 3 * i, 4);
                    acc += widen_u8x4(px) * k[i];
                }
                for (int i = nvec; i < xmax; i++) {
                    v4si v = {p[3 * i], p[3 * i + 1], p[3 * i + 2], 0};
                    acc += v * k[i];
                }
                out[3 * x] = clip8(acc[0]), out[3 * x + 1] = clip8(acc[1]), out[3 * x + 2] = clip8(acc[2]);
            }
        }
    }
    // Vertical pass row by row: accumulate whole input rows into an int32 row
    // (contiguous, so the compiler vectorises it) instead of strided columns.
    const int rowlen = dw * ch;
    int32_t acc[rowlen];
    for (int y = 0; y < dh; y++) {
        int ymin = s->bounds_v[2 * y] - y_first, ymax = s->bounds_v[2 * y + 1];
        const int32_t *k = s->weights_v + (size_t)y * ksv;
        for (int x = 0; x < rowlen; x++) acc[x] = 1 << (PRECISION_BITS - 1);
        for (int i = 0; i < ymax; i++) {
            const uint8_t *p = s->tmp + (size_t)(ymin + i) * rowlen;
            const int32_t kw = k[i];
            for (int x = 0; x < rowlen; x++) acc[x] += p[x] * kw;
        }
        uint8_t *out = dst + (size_t)y * rowlen;
        for (int x = 0; x < rowlen; x++) out[x] = clip8(acc[x]);
    }
}

void resample_scratch_free(ResampleScratch *s) {
    free(s->bounds);
    free(s->weights);
    free(s->bounds_v);
    free(s->weights_v);
    free(s->tmp);
    memset(s, 0, sizeof *s);
}
