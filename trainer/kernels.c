// kernels.c: forward/backward kernels of the ViT. Shapes are in kernels.h.
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "common.h"
#include "gemm_bf16.h"
#include "gemm_tiles.h"
#ifdef _OPENMP
#include <omp.h>
#endif

int kernel_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int kernel_thread_num(void) { return thread_id(); }

void kernel_set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;  // one thread whatever is asked
#endif
}

// Row reductions in LANES fixed lanes, combined in a fixed order: a plain
// float `sum +=` loop is a serial dependency chain that GCC may not vectorise
// (it would reorder the additions); lanes vectorise and the bits still depend
// only on n, never on the thread count.
#define LANES 16

// sum x[i]
static float lane_sum(const float *x, int n) {
    float lane[LANES] = {0};
    int full = n / LANES * LANES;
    for (int i = 0; i < full; i += LANES)
        for (int j = 0; j < LANES; j++) lane[j] += x[i + j];
    float sum = 0.0f;
    for (int j = 0; j < LANES; j++) sum += lane[j];
    for (int i = full; i < n; i++) sum += x[i];
    return sum;
}

// sum (x[i] - m)^2
static float lane_sum_sq_dev(const float *x, float m, int n) {
    float lane[LANES] = {0};
    int full = n / LANES * LANES;
    for (int i = 0; i < full; i += LANES)
        for (int j = 0; j < LANES; j++) lane[j] += (x[i + j] - m) * (x[i + j] - m);
    float sum = 0.0f;
    for (int j = 0; j < LANES; j++) sum += lane[j];
    for (int i = full; i < n; i++) sum += (x[i] - m) * (x[i] - m);
    return sum;
}

// sum a[i] * b[i]
static float lane_dot(const float *a, const float *b, int n) {
    float lane[LANES] = {0};
    int full = n / LANES * LANES;
    for (int i = 0; i < full; i += LANES)
        for (int j = 0; j < LANES; j++) lane[j] += a[i + j] * b[i + j];
    float sum = 0.0f;
    for (int j = 0; j < LANES; j++) sum += lane[j];
    for (int i = full; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// Column sums over rows, dst[c] += sum_n src[n*C + c] (times x if given).
// Parallel over blocks of 16 columns (one cache line): each thread owns its
// columns and adds rows in order, so the result is thread-count independent.
#define COL_BLOCK 16
static void column_sums_accumulate(float *dst, const float *src, int N, int C) {
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < nblocks; cb++) {
        int c0 = cb * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        float acc[COL_BLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *row = src + (long)n * C;
            for (int c = c0; c < c1; c++) acc[c - c0] += row[c];
        }
        for (int c = c0; c < c1; c++) dst[c] += acc[c - c0];
    }
}

// Our own tiles (gemm_tiles.c) take the linear layers' products when built with
// AVX-512 (attention's go through head_gemm below); inside a parallel region
// the OpenBLAS path below stays.
static int use_tiles(void) {
#ifdef _OPENMP
    if (omp_in_parallel()) return 0;
#endif
    return gemm_tiles_enabled();
}

// ---- deterministic sgemm ---------------------------------------------------------
// OpenBLAS picks different kernels (and summation orders) for the same product
// depending on its thread count, e.g. 144x48x390 differs in 80% of its outputs
// between 1 and 2 threads. So we split C into a number of row blocks that
// depends only on M, and run one single-threaded sgemm per block in our own
// OpenMP loop: the same shapes on any thread count give the same bits, and
// there is exactly one thread pool.
#define GEMM_MAX_ROW_BLOCKS 8
#define GEMM_MIN_BLOCK_ROWS 32

static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    int nblocks = (M + GEMM_MIN_BLOCK_ROWS - 1) / GEMM_MIN_BLOCK_ROWS;
    if (nblocks > GEMM_MAX_ROW_BLOCKS) nblocks = GEMM_MAX_ROW_BLOCKS;
#ifdef _OPENMP
    if (omp_in_parallel()) nblocks = 1;
#endif
    if (nblocks <= 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int rows = (M + nblocks - 1) / nblocks;
    rows = (rows + 15) / 16 * 16;  // whole register tiles
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int r0 = blk * rows, r1 = r0 + rows < M ? r0 + rows : M;
        if (r0 >= r1) continue;
        const float *Ablk = ta == CblasNoTrans ? A + (long)r0 * lda : A + r0;
        cblas_sgemm(CblasRowMajor, ta, tb, r1 - r0, N, K, alpha, Ablk, lda, B, ldb, beta, C + (long)r0 * ldc, ldc);
    }
}

// dW[O,I] += dout^T[O,M] @ inp[M,I] and db[O] += sum_m dout[m,:] (db may be NULL),
// where M (tokens) is the long side. Row blocks of dW would each re-pack all of
// inp, so instead M is cut into a fixed number of chunks (a function of M only),
// each chunk's product goes to its own partial buffer on one thread, and the
// partials are added in chunk order: no repeated packing, and the same bits on
// any thread count. The chunk's bias column sums run right after its product,
// while its rows of dout are still in cache, instead of another pass over dout.
#define KSPLIT_MAX_CHUNKS 8
#define KSPLIT_MIN_ROWS 2048
static float *ksplit_partials = NULL;  // grown on the first step, then reused
static size_t ksplit_capacity = 0;

static void gemm_weight_grad(int O, int IN, int M, const float *dout, const float *inp, float *dweight, float *dbias) {
    if (use_tiles()) {
        gemm_tiles_weight_grad(O, IN, M, dout, inp, dweight, dbias);
        return;
    }
    // 1, 2, 4 or 8 chunks: a power of two splits evenly over 2, 4 or 8 threads (3 chunks on 2 threads
    // left one idle for a third of the product: the pixel head's M = 6304 on ViT-Ti)
    int chunks = 1;
    while (chunks < KSPLIT_MAX_CHUNKS && (long)M >= 2L * chunks * KSPLIT_MIN_ROWS) chunks *= 2;
#ifdef _OPENMP
    if (omp_in_parallel()) chunks = 1;
#endif
    if (chunks <= 1) {  // short M: row blocks of dW, which are cheap to re-pack at this size
        gemm(CblasTrans, CblasNoTrans, O, IN, M, 1.0f, dout, O, inp, IN, 1.0f, dweight, IN);
        if (dbias) column_sums_accumulate(dbias, dout, M, O);
        return;
    }
    xreserve_floats(&ksplit_partials, &ksplit_capacity, (size_t)chunks * (O * IN + O), "weight-gradient partials");
    int rows = (M + chunks - 1) / chunks;
    float *bias_partials = ksplit_partials + (size_t)chunks * O * IN;  // [chunks][O]
#pragma omp parallel for schedule(static)
    for (int c = 0; c < chunks; c++) {
        int r0 = c * rows, r1 = r0 + rows < M ? r0 + rows : M;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, IN, r1 - r0, 1.0f, dout + (long)r0 * O, O,
                    inp + (long)r0 * IN, IN, 0.0f, ksplit_partials + (size_t)c * O * IN, IN);
        if (dbias) {
            float *acc = bias_partials + (size_t)c * O;
            memset(acc, 0, sizeof(float) * O);
            for (int m = r0; m < r1; m++) {
                const float *row = dout + (long)m * O;
                for (int o = 0; o < O; o++) acc[o] += row[o];
            }
        }
    }
    if (dbias)
        for (int o = 0; o < O; o++) {
            float acc = dbias[o];
            for (int c = 0; c < chunks; c++) acc += bias_partials[(size_t)c * O + o];
            dbias[o] = acc;
        }
    long n = (long)O * IN;
#pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++) {
        float acc = dweight[j];
        for (int c = 0; c < chunks; c++) acc += ksplit_partials[(size_t)c * n + j];
        dweight[j] = acc;
    }
}

// ---- linear -------------------------------------------------------------------

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int M, int IN, int OUT) {
    // out[M,OUT] = inp[M,IN] @ weight[OUT,IN]^T (+ bias)
    if (use_tiles()) {  // the bias starts the accumulators
        gemm_tiles_rows(M, OUT, IN, inp, IN, weight, IN, 1, bias, 0, out, OUT);
        return;
    }
    // OpenBLAS: fill with the bias, then sgemm with beta = 1
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int m = 0; m < M; m++) memcpy(out + (long)m * OUT, bias, sizeof(float) * OUT);
        beta = 1.0f;
    }
    gemm(CblasNoTrans, CblasTrans, M, OUT, IN, 1.0f, inp, IN, weight, IN, beta, out, OUT);
}

static void linear_backward_beta(float dinp_beta, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *weight, int M, int IN, int OUT) {
    if (dinp && use_tiles())  // dinp[M,IN] = dinp_beta * dinp + dout[M,OUT] @ weight[OUT,IN], dinp_beta 0 or 1
        gemm_tiles_rows(M, IN, OUT, dout, OUT, weight, IN, 0, NULL, dinp_beta != 0.0f, dinp, IN);
    else if (dinp)
        gemm(CblasNoTrans, CblasNoTrans, M, IN, OUT, 1.0f, dout, OUT, weight, IN, dinp_beta, dinp, IN);
    if (dweight)  // dweight[OUT,IN] += dout^T[OUT,M] @ inp[M,IN]; dbias[OUT] += sum_m dout
        gemm_weight_grad(OUT, IN, M, dout, inp, dweight, dbias);
    else if (dbias)
        column_sums_accumulate(dbias, dout, M, OUT);
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int M, int IN, int OUT) {
    linear_backward_beta(1.0f, dinp, dweight, dbias, dout, inp, weight, M, IN, OUT);
}

void linear_backward_set_dinp(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, int M, int IN, int OUT) {
    linear_backward_beta(0.0f, dinp, dweight, dbias, dout, inp, weight, M, IN, OUT);
}

// ---- layernorm -----------------------------------------------------------------

static inline void layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *weight,
                                 const float *bias, int C) {
    float m = lane_sum(x, C) / C;
    float v = lane_sum_sq_dev(x, m, C) / C;  // two-pass variance: no cancellation for rows with a large mean
    float s = 1.0f / sqrtf(v + LAYERNORM_EPS);
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    *mean = m;
    *rstd = s;
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        layernorm_row(out + (long)n * C, mean + n, rstd + n, inp + (long)n * C, weight, bias, C);
}

void residual_layernorm_forward(float *x, float *out, float *mean, float *rstd, const float *a, const float *b,
                                const float *weight, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *xr = x + (long)n * C;
        const float *ar = a + (long)n * C, *br = b + (long)n * C;
        for (int c = 0; c < C; c++) xr[c] = ar[c] + br[c];
        layernorm_row(out + (long)n * C, mean + n, rstd + n, xr, weight, bias, C);  // the row is still in L1
    }
}

// The weight and bias gradients are summed per chunk of LN_ROW_CHUNK rows in the same
// pass as dinp (x and dy are read once), then the chunks' partials are added in chunk
// order: the chunks do not depend on the thread count, so neither do the bits.
// Called from outside parallel regions (the partials buffer is shared).
#define LN_ROW_CHUNK 64
static float *ln_partials = NULL;
static size_t ln_partials_capacity = 0;

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    int nchunks = (N + LN_ROW_CHUNK - 1) / LN_ROW_CHUNK;
    float *part_w = NULL, *part_b = NULL;  // [nchunks, C] each
    if (dweight || dbias) {
        part_w = xreserve_floats(&ln_partials, &ln_partials_capacity, (size_t)nchunks * 2 * C, "layernorm partials");
        part_b = part_w + (size_t)nchunks * C;
    }
#pragma omp parallel for schedule(static)
    for (int chunk = 0; chunk < nchunks; chunk++) {
        float *pw = part_w ? part_w + (size_t)chunk * C : NULL, *pb = part_w ? part_b + (size_t)chunk * C : NULL;
        if (pw) {
            memset(pw, 0, sizeof(float) * C);
            memset(pb, 0, sizeof(float) * C);
        }
        int n1 = (chunk + 1) * LN_ROW_CHUNK < N ? (chunk + 1) * LN_ROW_CHUNK : N;
        for (int n = chunk * LN_ROW_CHUNK; n < n1; n++) {
            const float *x = inp + (long)n * C, *dy = dout + (long)n * C;
            float m = mean[n], s = rstd[n];
            if (pw)
                for (int c = 0; c < C; c++) {
                    pw[c] += dy[c] * (x[c] - m) * s;
                    pb[c] += dy[c];
                }
            if (!dinp) continue;
            float *dx = dinp + (long)n * C;
            // sum_c dn_c and sum_c dn_c * xhat_c, with dn = dy * weight, in fixed lanes
            float lane_dn[LANES] = {0}, lane_dx[LANES] = {0};
            int full = C / LANES * LANES;
            for (int c0 = 0; c0 < full; c0 += LANES)
                for (int j = 0; j < LANES; j++) {
                    float dn = dy[c0 + j] * weight[c0 + j];
                    lane_dn[j] += dn;
                    lane_dx[j] += dn * (x[c0 + j] - m);
                }
            float sum_dn = 0.0f, sum_dn_xhat = 0.0f;
            for (int j = 0; j < LANES; j++) sum_dn += lane_dn[j], sum_dn_xhat += lane_dx[j];
            for (int c = full; c < C; c++) {
                float dn = dy[c] * weight[c];
                sum_dn += dn;
                sum_dn_xhat += dn * (x[c] - m);
            }
            sum_dn /= C;
            sum_dn_xhat *= s / C;
            for (int c = 0; c < C; c++) {
                float xhat = (x[c] - m) * s;
                dx[c] += s * (dy[c] * weight[c] - sum_dn - xhat * sum_dn_xhat);
            }
        }
    }
    if (dweight) column_sums_accumulate(dweight, part_w, nchunks, C);
    if (dbias) column_sums_accumulate(dbias, part_b, nchunks, C);
}

// ---- GELU -----------------------------------------------------------------------
// libm's erff and expf are scalar calls here (glibc only offers vector forms
// under -ffast-math), which made GELU cost as much as the fc1 matrix product.
// So GELU uses its own exp (Cephes' expf: range reduction to [-ln2/2, ln2/2]
// and a degree-5 polynomial, ~1 ulp) and erf (Abramowitz & Stegun 7.1.26,
// |error| < 1.5e-7 absolute, about 3e-7 when evaluated in float), both plain
// arithmetic that the compiler vectorises. GELU's derivative reuses the same
// exp(-x^2/2). The loops run over fixed blocks so that which elements fall in
// a vector loop's remainder never depends on the thread count.
#define GELU_BLOCK 1024

static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    // n = round(x / ln 2) by the 1.5 * 2^23 trick, which vectorises where floorf does not
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;  // 2^n
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// Softmax of one row (out may equal in): exp_approx instead of libm's scalar
// expf so that the exp loop vectorises (attention alone takes B*H*T*T exps per
// layer), and the max and the sum run in 16 fixed lanes combined in a fixed
// order, so the bits depend on n only, never on the thread count.
static void softmax_row(float *out, const float *in, int n) {
    float lane[LANES];
    int full = n / LANES * LANES;
    for (int j = 0; j < LANES; j++) lane[j] = -INFINITY;
    for (int i = 0; i < full; i += LANES)
        for (int j = 0; j < LANES; j++) lane[j] = in[i + j] > lane[j] ? in[i + j] : lane[j];
    float mx = -INFINITY;
    for (int j = 0; j < LANES; j++) mx = lane[j] > mx ? lane[j] : mx;
    for (int i = full; i < n; i++) mx = in[i] > mx ? in[i] : mx;
    for (int i = 0; i < n; i++) out[i] = exp_approx(in[i] - mx);
    float inv = 1.0f / lane_sum(out, n);
    for (int i = 0; i < n; i++) out[i] *= inv;
}

// Phi(x) = 0.5 (1 + erf(x / sqrt 2)); *pdf gets exp(-x^2/2) / sqrt(2 pi).
static inline float gaussian_cdf(float x, float *pdf) {
    const float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f, a4 = -1.453152027f,
                a5 = 1.061405429f;
    float z = fabsf(x) * (float)M_SQRT1_2;
    float t = 1.0f / (1.0f + p * z);
    float e = exp_approx(-z * z);
    float erf_abs = 1.0f - t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * e;
    *pdf = 0.3989422804014327f * e;
    return 0.5f + 0.5f * (x < 0 ? -erf_abs : erf_abs);
}

// The per-block bodies take an int count: with a 64-bit index mixed into the
// float<->int32 conversions of exp_approx, GCC 12 gives up on vectorising.
static void gelu_forward_block(float *restrict out, const float *restrict inp, int len) {
    for (int i = 0; i < len; i++) {
        float pdf, x = inp[i];
        out[i] = x * gaussian_cdf(x, &pdf);
    }
}

static void bias_gelu_forward_block(float *restrict out, float *restrict pre, const float *restrict bias, int len) {
    for (int i = 0; i < len; i++) {
        float pdf, x = pre[i] + bias[i];
        pre[i] = x;
        out[i] = x * gaussian_cdf(x, &pdf);
    }
}

static void gelu_backward_block(float *restrict dinp, const float *restrict dout, const float *restrict inp, int len) {
    for (int i = 0; i < len; i++) {
        float pdf, x = inp[i], cdf = gaussian_cdf(x, &pdf);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

static void gelu_backward_inplace_block(float *restrict d, const float *restrict inp, int len) {
    for (int i = 0; i < len; i++) {
        float pdf, x = inp[i], cdf = gaussian_cdf(x, &pdf);
        d[i] *= cdf + x * pdf;
    }
}

void gelu_forward(float *out, const float *inp, long n) {
    long nblocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (long blk = 0; blk < nblocks; blk++) {
        long lo = blk * GELU_BLOCK;
        gelu_forward_block(out + lo, inp + lo, (int)(lo + GELU_BLOCK < n ? GELU_BLOCK : n - lo));
    }
}

void bias_gelu_forward(float *out, float *pre, const float *bias, int M, int N) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) bias_gelu_forward_block(out + (long)m * N, pre + (long)m * N, bias, N);
}

void gelu_backward(float *dinp, const float *dout, const float *inp, long n) {
    long nblocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (long blk = 0; blk < nblocks; blk++) {
        long lo = blk * GELU_BLOCK;
        gelu_backward_block(dinp + lo, dout + lo, inp + lo, (int)(lo + GELU_BLOCK < n ? GELU_BLOCK : n - lo));
    }
}

void gelu_backward_inplace(float *d, const float *inp, long n) {
    long nblocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (long blk = 0; blk < nblocks; blk++) {
        long lo = blk * GELU_BLOCK;
        gelu_backward_inplace_block(d + lo, inp + lo, (int)(lo + GELU_BLOCK < n ? GELU_BLOCK : n - lo));
    }
}

static void gelu_backward_recompute_block(float *restrict out, float *restrict d, const float *restrict inp, int len) {
    for (int i = 0; i < len; i++) {
        float pdf, x = inp[i], cdf = gaussian_cdf(x, &pdf);
        out[i] = x * cdf;
        d[i] *= cdf + x * pdf;
    }
}

void gelu_backward_recompute(float *out, float *d, const float *inp, long n) {
    long nblocks = (n + GELU_BLOCK - 1) / GELU_BLOCK;
#pragma omp parallel for schedule(static)
    for (long blk = 0; blk < nblocks; blk++) {
        long lo = blk * GELU_BLOCK;
        gelu_backward_recompute_block(out + lo, d + lo, inp + lo, (int)(lo + GELU_BLOCK < n ? GELU_BLOCK : n - lo));
    }
}

// ---- linear + GELU: the MLP's fc1 forward and fc2 input-gradient with GELU in the GEMM's epilogue
// On the tiles, each finished strip of rows goes through GELU while it is in cache instead of in
// a separate pass over M x N floats; elsewhere, the two passes as before.

static __thread float *staging = NULL;  // one thread's fp32 rows before they are rounded to bf16
static __thread size_t staging_capacity = 0;

static float *staging_floats(size_t n) { return xreserve_floats(&staging, &staging_capacity, n, "bf16 staging rows"); }

// What an epilogue writes for a strip of rows: fp32 into out, or bf16 into out16 (computed in fp32 in
// the thread's staging rows, then rounded once: the bits a product reading fp32 would round to).
typedef struct {
    float *out;
    uint16_t *out16;
    float *d;           // GELU backward: d(pre), in place
    const float *pre;   // GELU's input; for store_bf16_rows, the rows to round
    int N;
} EpilogueRows;

static float *rows_dst(const EpilogueRows *g, long lo, long n) { return g->out16 ? staging_floats(n) : g->out + lo; }

static void rows_done(const EpilogueRows *g, const float *dst, long lo, long n) {
    if (g->out16) bf16_store(g->out16 + lo, dst, n);
}

static void gelu_forward_rows(void *ctx, int row0, int rows) {
    EpilogueRows *g = ctx;
    long lo = (long)row0 * g->N, n = (long)rows * g->N;
    float *dst = rows_dst(g, lo, n);
    gelu_forward_block(dst, g->pre + lo, (int)n);
    rows_done(g, dst, lo, n);
}

static void gelu_backward_recompute_rows(void *ctx, int row0, int rows) {
    EpilogueRows *g = ctx;
    long lo = (long)row0 * g->N, n = (long)rows * g->N;
    float *dst = rows_dst(g, lo, n);
    gelu_backward_recompute_block(dst, g->d + lo, g->pre + lo, (int)n);
    rows_done(g, dst, lo, n);
}

void linear_bias_gelu_forward(float *out, float *pre, const float *inp, const float *weight, const float *bias, int M,
                              int IN, int OUT) {
    if (use_tiles()) {
        EpilogueRows g = {out, NULL, NULL, pre, OUT};
        gemm_tiles_rows_epilogue(M, OUT, IN, inp, IN, weight, IN, 1, bias, 0, pre, OUT, gelu_forward_rows, &g);
        return;
    }
    linear_forward(pre, inp, weight, NULL, M, IN, OUT);
    bias_gelu_forward(out, pre, bias, M, OUT);
}

void linear_gelu_backward_dinp(float *dhidden, float *gelu_out, const float *dout, const float *weight,
                               const float *pre, int M, int IN, int OUT) {
    if (use_tiles()) {
        EpilogueRows g = {gelu_out, NULL, dhidden, pre, IN};
        gemm_tiles_rows_epilogue(M, IN, OUT, dout, OUT, weight, IN, 0, NULL, 0, dhidden, IN,
                                 gelu_backward_recompute_rows, &g);
        return;
    }
    linear_backward_set_dinp(dhidden, NULL, NULL, dout, NULL, weight, M, IN, OUT);
    gelu_backward_recompute(gelu_out, dhidden, pre, (long)M * IN);
}

// ---- producers that store bf16 for the products that read them (precision bf16) -----------
// Each computes its fp32 rows as the fp32 kernel does, then rounds them once: the products would
// round them to the same bf16, so the bits are unchanged and half the bytes move.

void layernorm_forward_bf16(uint16_t *out16, float *mean, float *rstd, const float *inp, const float *weight,
                            const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *row = staging_floats(C);
        layernorm_row(row, mean + n, rstd + n, inp + (long)n * C, weight, bias, C);
        bf16_store(out16 + (long)n * C, row, C);
    }
}

void residual_layernorm_forward_bf16(float *x, uint16_t *out16, float *mean, float *rstd, const float *a,
                                     const float *b, const float *weight, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *xr = x + (long)n * C, *row = staging_floats(C);
        const float *ar = a + (long)n * C, *br = b + (long)n * C;
        for (int c = 0; c < C; c++) xr[c] = ar[c] + br[c];
        layernorm_row(row, mean + n, rstd + n, xr, weight, bias, C);
        bf16_store(out16 + (long)n * C, row, C);
    }
}

static void store_bf16_rows(void *ctx, int row0, int rows) {
    EpilogueRows *st = ctx;
    long lo = (long)row0 * st->N;
    bf16_store(st->out16 + lo, st->pre + lo, (long)rows * st->N);
}

void linear_forward_to_bf16(uint16_t *out16, float *out32, const float *inp, const uint16_t *inp16,
                            const float *weight, const float *bias, int M, int IN, int OUT) {
    EpilogueRows st = {NULL, out16, NULL, out32, OUT};
    if (inp16) gemm_tiles_rows_a16(M, OUT, IN, inp16, IN, weight, IN, 1, bias, out32, OUT, store_bf16_rows, &st);
    else gemm_tiles_rows_epilogue(M, OUT, IN, inp, IN, weight, IN, 1, bias, 0, out32, OUT, store_bf16_rows, &st);
}

void linear_forward_bf16in(float *out, const uint16_t *inp16, const float *weight, const float *bias, int M, int IN,
                           int OUT) {
    gemm_tiles_rows_a16(M, OUT, IN, inp16, IN, weight, IN, 1, bias, out, OUT, NULL, NULL);
}

void linear_bias_gelu_forward_bf16(uint16_t *out16, float *pre, const uint16_t *inp16, const float *weight,
                                   const float *bias, int M, int IN, int OUT) {
    EpilogueRows g = {NULL, out16, NULL, pre, OUT};
    gemm_tiles_rows_a16(M, OUT, IN, inp16, IN, weight, IN, 1, bias, pre, OUT, gelu_forward_rows, &g);
}

void linear_gelu_backward_dinp_bf16(float *dhidden, uint16_t *gelu16, const float *dout, const float *weight,
                                    const float *pre, int M, int IN, int OUT) {
    EpilogueRows g = {NULL, gelu16, dhidden, pre, IN};
    gemm_tiles_rows_epilogue(M, IN, OUT, dout, OUT, weight, IN, 0, NULL, 0, dhidden, IN,
                             gelu_backward_recompute_rows, &g);
}

void linear_backward_set_dinp_bf16in(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const uint16_t *inp16, const float *weight, int M, int IN, int OUT) {
    if (dinp) gemm_tiles_rows(M, IN, OUT, dout, OUT, weight, IN, 0, NULL, 0, dinp, IN);
    if (dweight) gemm_tiles_weight_grad_x16(OUT, IN, M, dout, inp16, dweight, dbias);
    else if (dbias) column_sums_accumulate(dbias, dout, M, OUT);
}

// ---- residual and layer scale -----------------------------------------------------

void residual_forward(float *out, const float *a, const float *b, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

void layerscale_forward(float *out, const float *inp, const float *gamma, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) out[(long)n * C + c] = inp[(long)n * C + c] * gamma[c];
}

void layerscale_backward(float *dinp, float *dgamma, const float *dout, const float *inp, const float *gamma,
                         int N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) dinp[(long)n * C + c] += dout[(long)n * C + c] * gamma[c];
    }
    if (dgamma) {
        int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
        for (int cb = 0; cb < nblocks; cb++) {
            int c0 = cb * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
            float acc[COL_BLOCK] = {0};
            for (int n = 0; n < N; n++)
                for (int c = c0; c < c1; c++) acc[c - c0] += dout[(long)n * C + c] * inp[(long)n * C + c];
            for (int c = c0; c < c1; c++) dgamma[c] += acc[c - c0];
        }
    }
}

// ---- attention --------------------------------------------------------------------
// One (image, head) pair per loop iteration; the products inside run on one
// thread: our tiles' serial entry, or OpenBLAS, which being OpenMP-built does
// not spawn inside a parallel region.

// C[M,N] = alpha * op(A) @ op(B) on the calling thread (row-major, beta 0)
static void head_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float *C, int ldc) {
    if (gemm_tiles_enabled())
        gemm_tiles_small(ta == CblasTrans, tb == CblasTrans, M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, 0.0f, C, ldc);
}

static void softmax_rows_inplace(float *s, int rows, int cols) {
    for (int r = 0; r < rows; r++) softmax_row(s + (long)r * cols, s + (long)r * cols, cols);
}

// Image b's query rows: their count, where its compact rows and its probs start.
static inline int attention_rows(const RowSet *rows, int b, int T, long *first) {
    if (!rows) {
        *first = (long)b * T;
        return T;
    }
    *first = rows->start[b];
    return rows->start[b + 1] - rows->start[b];
}

// Per thread: dS [T,T], the kept q rows [T,hd] and their gradient [T,hd], and a head's output [T,hd]
// before it is stored as bf16 (hd <= D bounds each).
long attention_scratch_floats(int T, int D) { return (long)T * T + 3L * T * D; }

// This head's q, k and v rows (3D apart): fp32 in qkv, or bf16 in qkv16 (the other three NULL).
typedef struct {
    const float *q, *k, *v;
    const uint16_t *q16, *k16, *v16;
} HeadQKV;

static HeadQKV head_qkv(const float *qkv, const uint16_t *qkv16, int b, int h, int T, int D, int hd) {
    long base = (long)b * T * 3 * D + (long)h * hd;
    if (qkv) return (HeadQKV){qkv + base, qkv + base + D, qkv + base + 2 * D, NULL, NULL, NULL};
    return (HeadQKV){NULL, NULL, NULL, qkv16 + base, qkv16 + base + D, qkv16 + base + 2 * D};
}

// head_gemm with A or B (or both) given as fp32 or as bf16 storage (one of each pair NULL)
static void head_gemm16(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                        const uint16_t *A16, int lda, const float *B, const uint16_t *B16, int ldb, float *C, int ldc) {
    if (A16 || B16)
        gemm_tiles_small16(ta == CblasTrans, tb == CblasTrans, M, N, K, alpha, A, A16, lda, B, B16, ldb, C, ldc);
    else
        head_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc);
}

// the kept query rows idx[0..R) of this head, as fp32 rows hd apart
static void gather_q_rows(float *qs, const HeadQKV *x, const int32_t *idx, int R, int ld, int hd) {
    for (int i = 0; i < R; i++) {
        if (x->q) memcpy(qs + (long)i * hd, x->q + (long)idx[i] * ld, sizeof(float) * hd);
        else bf16_load(qs + (long)i * hd, x->q16 + (long)idx[i] * ld, hd);
    }
}

static float *thread_scratch(float *scratch, int T, int D) {
    return scratch + (long)thread_id() * attention_scratch_floats(T, D);
}

// out (fp32) or out16 (bf16): one is NULL; qkv or qkv16 likewise.
static void attention_forward_any(float *out, uint16_t *out16, float *probs, float *scratch, const float *qkv,
                                  const uint16_t *qkv16, const RowSet *rows, int B, int T, int D, int H) {
    int hd = D / H, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
    // dynamic: with rows, images differ in cost; each (b, h) writes its own slice whichever thread runs it
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        long first;
        int R = attention_rows(rows, b, T, &first);
        if (R == 0) continue;
        float *qs = thread_scratch(scratch, T, D) + (long)T * T, *head_out = qs + 2L * T * D;
        HeadQKV x = head_qkv(qkv, qkv16, b, h, T, D, hd);
        const float *q = x.q;
        const uint16_t *q16 = x.q16;
        int ldq = ld;
        if (rows) {  // gather the kept query rows of this head
            gather_q_rows(qs, &x, rows->index + first, R, ld, hd);
            q = qs, q16 = NULL, ldq = hd;
        }
        float *p = probs + (first * H + (long)h * R) * T;
        // p[R,T] = scale * q[R,hd] @ k[T,hd]^T, then softmax over keys
        head_gemm16(CblasNoTrans, CblasTrans, R, T, hd, scale, q, q16, ldq, x.k, x.k16, ld, p, T);
        softmax_rows_inplace(p, R, T);
        // out[R,hd] (row stride D) = p[R,T] @ v[T,hd]
        if (out) {
            head_gemm16(CblasNoTrans, CblasNoTrans, R, hd, T, 1.0f, p, NULL, T, x.v, x.v16, ld, out + first * D + h * hd, D);
            continue;
        }
        head_gemm16(CblasNoTrans, CblasNoTrans, R, hd, T, 1.0f, p, NULL, T, x.v, x.v16, ld, head_out, hd);
        for (int i = 0; i < R; i++) bf16_store(out16 + (first + i) * D + h * hd, head_out + (long)i * hd, hd);
    }
}

void attention_forward(float *out, float *probs, float *scratch, const float *qkv, const RowSet *rows, int B, int T,
                       int D, int H) {
    attention_forward_any(out, NULL, probs, scratch, qkv, NULL, rows, B, T, D, H);
}

void attention_forward_bf16(uint16_t *out16, float *probs, float *scratch, const uint16_t *qkv16, const RowSet *rows,
                            int B, int T, int D, int H) {
    attention_forward_any(NULL, out16, probs, scratch, NULL, qkv16, rows, B, T, D, H);
}

static void attention_backward_any(float *dqkv, float *scratch, const float *dout, const float *qkv,
                                   const uint16_t *qkv16, const float *probs, const RowSet *rows, int B, int T, int D,
                                   int H) {
    int hd = D / H, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        long first;
        int R = attention_rows(rows, b, T, &first);
        float *ds = thread_scratch(scratch, T, D);  // dP, then dS in place
        float *dq = dqkv + (long)b * T * ld + h * hd, *dk = dq + D, *dv = dq + 2 * D;
        if (rows) {  // q rows not kept get 0; the kept ones are scattered below
            for (int t = 0; t < T; t++) memset(dq + (long)t * ld, 0, sizeof(float) * hd);
            if (R == 0) {
                for (int t = 0; t < T; t++) {
                    memset(dk + (long)t * ld, 0, sizeof(float) * hd);
                    memset(dv + (long)t * ld, 0, sizeof(float) * hd);
                }
                continue;
            }
        }
        HeadQKV x = head_qkv(qkv, qkv16, b, h, T, D, hd);
        const float *p = probs + (first * H + (long)h * R) * T;
        const float *dO = dout + first * D + h * hd;
        // dP[R,T] = dO[R,hd] @ v^T ; dv = p^T @ dO
        head_gemm16(CblasNoTrans, CblasTrans, R, T, hd, 1.0f, dO, NULL, D, x.v, x.v16, ld, ds, T);
        head_gemm(CblasTrans, CblasNoTrans, T, hd, R, 1.0f, p, T, dO, D, dv, ld);
        // softmax backward: dS = p * (dP - rowsum(dP * p))
        for (int i = 0; i < R; i++) {
            float *dsr = ds + (long)i * T;
            const float *pr = p + (long)i * T;
            float dot = lane_dot(dsr, pr, T);
            for (int j = 0; j < T; j++) dsr[j] = pr[j] * (dsr[j] - dot);
        }
        if (!rows) {
            // dq = scale * dS @ k ; dk = scale * dS^T @ q
            head_gemm16(CblasNoTrans, CblasNoTrans, T, hd, T, scale, ds, NULL, T, x.k, x.k16, ld, dq, ld);
            head_gemm16(CblasTrans, CblasNoTrans, T, hd, T, scale, ds, NULL, T, x.q, x.q16, ld, dk, ld);
            continue;
        }
        float *qs = ds + (long)T * T, *dqs = qs + (long)T * hd;
        const int32_t *idx = rows->index + first;
        gather_q_rows(qs, &x, idx, R, ld, hd);
        head_gemm16(CblasNoTrans, CblasNoTrans, R, hd, T, scale, ds, NULL, T, x.k, x.k16, ld, dqs, hd);
        head_gemm(CblasTrans, CblasNoTrans, T, hd, R, scale, ds, T, qs, hd, dk, ld);
        for (int i = 0; i < R; i++) memcpy(dq + (long)idx[i] * ld, dqs + (long)i * hd, sizeof(float) * hd);
    }
}

void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *probs,
                        const RowSet *rows, int B, int T, int D, int H) {
    attention_backward_any(dqkv, scratch, dout, qkv, NULL, probs, rows, B, T, D, H);
}

void attention_backward_bf16(float *dqkv, float *scratch, const float *dout, const uint16_t *qkv16, const float *probs,
                             const RowSet *rows, int B, int T, int D, int H) {
    attention_backward_any(dqkv, scratch, dout, NULL, qkv16, probs, rows, B, T, D, H);
}

// ---- patches ------------------------------------------------------------------------

void patchify(float *patches, const float *images, int B, int C, int H, int W, int P) {
    int gh = H / P, gw = W / P, d = C * P * P;
#pragma omp parallel for schedule(static)
    for (long bn = 0; bn < (long)B * gh * gw; bn++) {
        int b = bn / (gh * gw), n = bn % (gh * gw), py = n / gw, px = n % gw;
        float *dst = patches + bn * d;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < P; y++)
                memcpy(dst + (c * P + y) * P, images + (((long)b * C + c) * H + py * P + y) * W + px * P,
                       sizeof(float) * P);
    }
}

void unpatchify(float *images, const float *patches, int B, int C, int H, int W, int P) {
    int gh = H / P, gw = W / P, d = C * P * P;
#pragma omp parallel for schedule(static)
    for (long bn = 0; bn < (long)B * gh * gw; bn++) {
        int b = bn / (gh * gw), n = bn % (gh * gw), py = n / gw, px = n % gw;
        const float *src = patches + bn * d;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < P; y++)
                memcpy(images + (((long)b * C + c) * H + py * P + y) * W + px * P, src + (c * P + y) * P,
                       sizeof(float) * P);
    }
}

// ---- mask token, cls token and position embedding -----------------------------------

void mask_token_forward(float *emb, const float *mask_token, const uint8_t *mask, int B, int N, int D) {
#pragma omp parallel for schedule(static)
    for (long bn = 0; bn < (long)B * N; bn++)
        if (mask[bn]) memcpy(emb + bn * D, mask_token, sizeof(float) * D);
}

void mask_token_backward(float *demb, float *dmask_token, const uint8_t *mask, int B, int N, int D) {
    int nblocks = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < nblocks; cb++) {
        int c0 = cb * COL_BLOCK, c1 = c0 + COL_BLOCK < D ? c0 + COL_BLOCK : D;
        float acc[COL_BLOCK] = {0};
        for (long bn = 0; bn < (long)B * N; bn++) {
            if (!mask[bn]) continue;
            for (int c = c0; c < c1; c++) {
                acc[c - c0] += demb[bn * D + c];
                demb[bn * D + c] = 0.0f;  // the patch embedding did not reach the output here
            }
        }
        if (dmask_token)
            for (int c = c0; c < c1; c++) dmask_token[c] += acc[c - c0];
    }
}

void cls_pos_forward(float *x, const float *emb, const float *cls, const float *pos, int B, int N, int D) {
    cls_pos_window_forward(x, emb, cls, pos, NULL, B, N, D);
}

void cls_pos_backward(float *demb, float *dcls, float *dpos, const float *dx, int B, int N, int D) {
    int T = N + 1;
    // dpos[t] sums over the batch: parallel over t, batch added in order.
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            const float *g = dx + ((long)b * T + t) * D;
            if (dpos)
                for (int c = 0; c < D; c++) dpos[(long)t * D + c] += g[c];
            if (t == 0) {
                if (dcls)
                    for (int c = 0; c < D; c++) dcls[c] += g[c];
            } else if (demb) {
                float *de = demb + ((long)b * N + t - 1) * D;
                for (int c = 0; c < D; c++) de[c] += g[c];
            }
        }
    }
}

void cls_pos_window_forward(float *x, const float *emb, const float *cls, const float *pos, const int32_t *pos_rows,
                            int B, int N, int D) {
    int T = N + 1;
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        long b = bt / T;
        int t = bt % T;
        const float *src = t == 0 ? cls : emb + (b * N + t - 1) * D;
        const float *p = pos + (long)(t == 0 || !pos_rows ? t : pos_rows[b * N + t - 1]) * D;
        float *dst = x + bt * D;
        for (int c = 0; c < D; c++) dst[c] = src[c] + p[c];
    }
}

void cls_pos_window_backward(float *demb, float *dcls, float *dpos, const float *dx, const int32_t *pos_rows, int B,
                             int N, int D) {
    int T = N + 1;
    // Several tokens add into one position row: parallel over channels, tokens added in order.
#pragma omp parallel for schedule(static)
    for (int c = 0; c < D; c++)
        for (long bt = 0; bt < (long)B * T; bt++) {
            long b = bt / T;
            int t = bt % T;
            float g = dx[bt * D + c];
            if (dpos) dpos[(long)(t == 0 ? 0 : pos_rows[b * N + t - 1]) * D + c] += g;
            if (t == 0) {
                if (dcls) dcls[c] += g;
            } else if (demb) {
                demb[(b * N + t - 1) * D + c] += g;
            }
        }
}

// ---- mean pooling ----------------------------------------------------------------

void meanpool_forward(float *out, const float *x, int B, int T, int D, int start) {
    float inv = 1.0f / (float)(T - start);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *o = out + (long)b * D;
        for (int c = 0; c < D; c++) o[c] = 0.0f;
        for (int t = start; t < T; t++)
            for (int c = 0; c < D; c++) o[c] += x[((long)b * T + t) * D + c];
        for (int c = 0; c < D; c++) o[c] *= inv;
    }
}

void meanpool_backward(float *dx, const float *dout, int B, int T, int D, int start) {
    float inv = 1.0f / (float)(T - start);
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        if (bt % T < start) continue;
        const float *g = dout + (bt / T) * D;
        for (int c = 0; c < D; c++) dx[bt * D + c] += g[c] * inv;
    }
}

// ---- softmax cross-entropy -----------------------------------------------------------

float softmax_xent_forward(float *probs, const float *logits, const int32_t *labels, int N, int K, float smoothing) {
    // Rows are normalised in parallel; the loss is summed in row order in
    // float64 so that it does not depend on the thread count.
    double total = 0.0;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        softmax_row(probs + (long)n * K, logits + (long)n * K, K);
    }
    for (int n = 0; n < N; n++) {
        const float *l = logits + (long)n * K;
        const float *p = probs + (long)n * K;
        // -log p_label from the normalised probability when it is not tiny; else,
        // and for smoothing (which needs every -log p_k = lse - l_k), from the logits.
        float pl = p[labels[n]];
        if (pl > 1e-30f && smoothing == 0.0f) {
            total += -log((double)pl);
        } else {
            double mx = l[0], s = 0.0, sum_l = 0.0;
            for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
            for (int k = 0; k < K; k++) {
                s += exp((double)l[k] - mx);
                sum_l += l[k];
            }
            // cppcheck-suppress invalidFunctionArg ; s >= 1: the maximum logit adds exp(0) (K >= 1)
            double lse = log(s) + mx;
            total += (1.0 - smoothing) * (lse - l[labels[n]]) + smoothing * (lse - sum_l / K);
        }
    }
    return (float)(total / N);
}

void softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels, int N, int K, float smoothing,
                           float dloss) {
    float scale = dloss / (float)N, off = smoothing / (float)K;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *d = dlogits + (long)n * K;
        const float *p = probs + (long)n * K;
        for (int k = 0; k < K; k++) d[k] += scale * (p[k] - off);
        d[labels[n]] -= scale * (1.0f - smoothing);
    }
}

float softmax_xent_soft_forward(float *probs, const float *logits, const float *targets, int N, int K) {
    double total = 0.0;  // summed in row order, in float64: independent of the thread count
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) softmax_row(probs + (long)n * K, logits + (long)n * K, K);
    for (int n = 0; n < N; n++) {
        const float *l = logits + (long)n * K, *t = targets + (long)n * K;
        double mx = l[0], s = 0.0;  // -log p_k = lse - l_k, from the logits (no log of a tiny p)
        for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
        for (int k = 0; k < K; k++) s += exp((double)l[k] - mx);
        // cppcheck-suppress invalidFunctionArg ; s >= 1: the maximum logit adds exp(0) (K >= 1)
        double lse = log(s) + mx;
        for (int k = 0; k < K; k++) total += t[k] * (lse - l[k]);
    }
    return (float)(total / N);
}

void softmax_xent_soft_backward(float *dlogits, const float *probs, const float *targets, int N, int K, float dloss) {
    float scale = dloss / (float)N;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) dlogits[(long)n * K + k] += scale * (probs[(long)n * K + k] - targets[(long)n * K + k]);
}

void gather_scored_rows(float *rows, const float *src, const int32_t *scored, int M, int N, int T, int D) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        long b = scored[m] / N, n = scored[m] % N;
        memcpy(rows + (long)m * D, src + (b * T + 1 + n) * D, sizeof(float) * D);
    }
}

void scatter_add_scored_rows(float *dst, const float *rows, const int32_t *scored, int M, int N, int T, int D) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        long b = scored[m] / N, n = scored[m] % N;
        float *out = dst + (b * T + 1 + n) * D;
        const float *in = rows + (long)m * D;
        for (int c = 0; c < D; c++) out[c] += in[c];
    }
}
