// gemm_tiles.c: register-tiled AVX-512 sgemm for the linear layers and
// attention (see gemm_tiles.h).
//
// One micro-kernel shape for every product: an MR x 32 tile of C in 2*MR zmm
// accumulators; each step of k broadcasts MR scalars of A and loads 32 floats
// of B. Tiles were chosen by measurement against single-threaded OpenBLAS on
// the Fashion-MNIST shapes (M 6400, K and N in {192, 576, 768}): MR 8 beat 12
// and 14; KC 384 for the row products; KC 128 for the weight gradient, whose
// B rows are read in place (256 was up to 8% slower, 512 up to 23%).
#include "gemm_tiles.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm_bf16.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __AVX512F__
#include "gemm_simd.h"

#define MR 8
#define NR 32
#define KC_ROWS 384
#define KC_GRAD 128


static float *packed_b = NULL;  // the weight in 32-column panels, grown on first use then reused
static size_t packed_capacity = 0;

// C[mr,32] = (C or bias or 0) + A[mr,kc] @ P[kc,32]: A rows at lda, P a packed panel (32 floats per k).
static inline __attribute__((always_inline)) void tile_rows(int mr, int kc, const float *A, long lda, const float *P,
                                                            float *C, long ldc, int load_c, const float *bias,
                                                            __mmask16 m0, __mmask16 m1) {
    __m512 c0[MR], c1[MR];
    __m512 init0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 init1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        c0[i] = load_c ? _mm512_maskz_loadu_ps(m0, C + i * ldc) : init0;
        c1[i] = load_c ? _mm512_maskz_loadu_ps(m1, C + i * ldc + 16) : init1;
    }
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(P + k * NR), b1 = _mm512_load_ps(P + k * NR + 16);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512 a = _mm512_set1_ps(A[i * lda + k]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        _mm512_mask_storeu_ps(C + i * ldc, m0, c0[i]);
        _mm512_mask_storeu_ps(C + i * ldc + 16, m1, c1[i]);
    }
}

// C[mr,32] += A[kc,mr]^T @ B[kc,32]: A and B rows at lda and ldb, read in place (no packing).
// With col_sums, also col_sums[0..mr) += sum_k A[k, 0..mr): the bias gradient, while A is in L1.
static inline __attribute__((always_inline)) void tile_grad(int mr, int kc, const float *A, long lda, const float *B,
                                                            long ldb, float *C, long ldc, int sum_cols,
                                                            float *col_sums, __mmask16 m0, __mmask16 m1) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    __mmask16 rows = (__mmask16)((1u << mr) - 1);
    __m512 sums = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, B + k * ldb), b1 = _mm512_maskz_loadu_ps(m1, B + k * ldb + 16);
        if (sum_cols) sums = _mm512_add_ps(sums, _mm512_maskz_loadu_ps(rows, A + k * lda));
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512 a = _mm512_set1_ps(A[k * lda + i]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
    }
    if (sum_cols) _mm512_mask_storeu_ps(col_sums, rows, _mm512_add_ps(sums, _mm512_maskz_loadu_ps(rows, col_sums)));
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        _mm512_mask_storeu_ps(C + i * ldc, m0, _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, C + i * ldc)));
        _mm512_mask_storeu_ps(C + i * ldc + 16, m1, _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, C + i * ldc + 16)));
    }
}

// The edge tiles (mr < MR) get their own fully unrolled copies: a constant mr keeps the accumulators in registers.
#define MR_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)

static void tile_rows_any(int mr, int kc, const float *A, long lda, const float *P, float *C, long ldc, int load_c,
                          const float *bias, __mmask16 m0, __mmask16 m1) {
    switch (mr) {
#define ROWS_CASE(r) \
    case r: tile_rows(r, kc, A, lda, P, C, ldc, load_c, bias, m0, m1); break;
        MR_CASES(ROWS_CASE)
#undef ROWS_CASE
    }
}

static void tile_grad_any(int mr, int kc, const float *A, long lda, const float *B, long ldb, float *C, long ldc,
                          float *col_sums, __mmask16 m0, __mmask16 m1) {
    // sum_cols is a constant in each copy too: a run-time test inside the k loop halved its speed
    if (col_sums) switch (mr) {
#define GRAD_CASE(r) \
    case r: tile_grad(r, kc, A, lda, B, ldb, C, ldc, 1, col_sums, m0, m1); break;
            MR_CASES(GRAD_CASE)
#undef GRAD_CASE
        }
    else switch (mr) {
#define GRAD_CASE(r) \
    case r: tile_grad(r, kc, A, lda, B, ldb, C, ldc, 0, NULL, m0, m1); break;
            MR_CASES(GRAD_CASE)
#undef GRAD_CASE
        }
}

// One 32-column panel of alpha * op(B): dst[k][j] = alpha * op(B)[k][n0 + j] for j < w, 0 past it.
// op(B) = B^T for B stored [N,K] (b_trans), else B stored [K,N]; rows at ldb. The transposed
// operand (a forward product's weight, attention's k and v) goes through 16 x 16 register
// transposes: element by element, its strided reads made packing ~2% of a step.
static void pack_panel(float *dst, const float *B, int ldb, int b_trans, float alpha, int n0, int w, int K) {
    if (!b_trans) {
        for (int k = 0; k < K; k++) {
            float *row = dst + (size_t)k * NR;
            for (int j = 0; j < w; j++) row[j] = alpha * B[(long)k * ldb + n0 + j];
            for (int j = w; j < NR; j++) row[j] = 0.0f;
        }
        return;
    }
    __m512 scale = _mm512_set1_ps(alpha);
    for (int k0 = 0; k0 < K; k0 += 16) {
        int kw = K - k0 < 16 ? K - k0 : 16;
        __mmask16 kmask = low_mask(kw);
        for (int j0 = 0; j0 < NR; j0 += 16) {
            __m512 r[16];
            for (int j = 0; j < 16; j++)  // rows of B past w are the panel's zero columns
                r[j] = j0 + j < w ? _mm512_maskz_loadu_ps(kmask, B + (long)(n0 + j0 + j) * ldb + k0) : _mm512_setzero_ps();
            transpose16(r);
            for (int k = 0; k < kw; k++) _mm512_store_ps(dst + (size_t)(k0 + k) * NR + j0, _mm512_mul_ps(scale, r[k]));
        }
    }
}

// C[mr,N] (= or +=) A[mr,K] @ the packed panels (+ bias on the first k chunk): one strip of rows.
static void strip_times_panels(int mr, int N, int K, const float *A, int lda, const float *panels, float *C, int ldc,
                               int accumulate, const float *bias) {
    for (int k0 = 0; k0 < K; k0 += KC_ROWS) {
        int kc = K - k0 < KC_ROWS ? K - k0 : KC_ROWS;
        int load_c = k0 > 0 || accumulate;
        const float *add_bias = k0 == 0 ? bias : NULL;  // the first chunk starts from the bias
        for (int n0 = 0; n0 < N; n0 += NR)
            tile_rows_any(mr, kc, A + k0, lda, panels + (size_t)n0 * K + (size_t)k0 * NR, C + n0, ldc, load_c,
                          add_bias ? add_bias + n0 : NULL, low_mask(N - n0), low_mask(N - n0 - 16));
    }
}

static void rows_fp32(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_is_nk,
                      const float *bias, int accumulate, float *C, int ldc, gemm_rows_epilogue epilogue, void *ctx) {
    int panels = (N + NR - 1) / NR;
    xreserve_floats(&packed_b, &packed_capacity, (size_t)panels * NR * (K > 0 ? K : 1), "packed weight panels");
    int strips = (M + MR - 1) / MR;
#pragma omp parallel
    {
        // P[p][k][j] = op(B)[k][32p + j], zero past column N
#pragma omp for schedule(static)
        for (int p = 0; p < panels; p++)
            pack_panel(packed_b + (size_t)p * K * NR, B, ldb, b_is_nk, 1.0f, p * NR, N - p * NR < NR ? N - p * NR : NR, K);
        // An A strip of MR rows stays in L1 while the packed panels stream from L2. Strips are handed
        // out dynamically: each is summed by one thread in the same order whichever thread takes it,
        // and on a shared VM a core the host preempts no longer holds up the other at the barrier.
#pragma omp for schedule(dynamic, 8)
        for (int s = 0; s < strips; s++) {
            int i0 = s * MR, mr = M - i0 < MR ? M - i0 : MR;
            if (K <= 0) {  // an empty sum: C stays (accumulate) or becomes the bias or 0
                if (!accumulate)
                    for (int i = i0; i < i0 + mr; i++)
                        for (int j = 0; j < N; j++) C[(long)i * ldc + j] = bias ? bias[j] : 0.0f;
            } else {
                strip_times_panels(mr, N, K, A + (long)i0 * lda, lda, packed_b, C + (long)i0 * ldc, ldc, accumulate,
                                   bias);
            }
            if (epilogue) epilogue(ctx, i0, mr);
        }
    }
}

static void weight_grad_fp32(int O, int IN, int M, const float *dY, const float *X, float *dW, float *dbias) {
    int strips = (O + MR - 1) / MR;
#pragma omp parallel
    {
        // Each thread owns a contiguous range of O strips (rows of dW) and walks all of M in
        // chunks, so every element is summed in the order of m whatever the thread count.
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        int s0 = (int)((long)strips * t / nt), s1 = (int)((long)strips * (t + 1) / nt);
        for (int m0 = 0; m0 < M; m0 += KC_GRAD) {
            int kc = M - m0 < KC_GRAD ? M - m0 : KC_GRAD;
            for (int s = s0; s < s1; s++) {
                int o0 = s * MR, mr = O - o0 < MR ? O - o0 : MR;
                for (int n0 = 0; n0 < IN; n0 += NR)
                    tile_grad_any(mr, kc, dY + (long)m0 * O + o0, O, X + (long)m0 * IN + n0, IN, dW + (long)o0 * IN + n0,
                                  IN, n0 == 0 && dbias ? dbias + o0 : NULL, low_mask(IN - n0), low_mask(IN - n0 - 16));
            }
        }
    }
}

// Per thread: op(B) of one small product in 32-column panels, grown then reused.
static __thread float *small_panels = NULL;
static __thread size_t small_capacity = 0;

static void small_fp32(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float *C, int ldc) {
    if (K <= 0) {
        for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, sizeof(float) * N);
        return;
    }
    int panels = (N + NR - 1) / NR;
    xreserve_floats(&small_panels, &small_capacity, (size_t)panels * NR * K, "small-product panels");
    // alpha goes into the packed B: C = A @ (alpha op(B))
    for (int p = 0; p < panels; p++)
        pack_panel(small_panels + (size_t)p * K * NR, B, ldb, b_trans, alpha, p * NR, N - p * NR < NR ? N - p * NR : NR, K);
    if (a_trans)  // the transposed-A tile accumulates, so C starts at 0
        for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, sizeof(float) * N);
    for (int i0 = 0; i0 < M; i0 += MR) {
        int mr = M - i0 < MR ? M - i0 : MR;
        if (!a_trans) {
            strip_times_panels(mr, N, K, A + (long)i0 * lda, lda, small_panels, C + (long)i0 * ldc, ldc, 0, NULL);
            continue;
        }
        for (int n0 = 0; n0 < N; n0 += NR)  // A(i, k) = A[k * lda + i]: whole K in one pass (a head's token count)
            tile_grad_any(mr, K, A + i0, lda, small_panels + (size_t)n0 * K, NR, C + (long)i0 * ldc + n0, ldc, NULL,
                          low_mask(N - n0), low_mask(N - n0 - 16));
    }
}

#define FP32_TILES_BUILT 1
#else  // no AVX-512: fp32 products stay on OpenBLAS (the callers ask gemm_tiles_enabled)
#define FP32_TILES_BUILT 0
// The stubs swallow their arguments (a macro, not a function with a dozen unused parameters).
#define NO_FP32_TILES(what) fatal("%s: built without AVX-512 (check gemm_tiles_enabled() first)", what)
#define rows_fp32(...) NO_FP32_TILES("gemm_tiles_rows")
#define weight_grad_fp32(...) NO_FP32_TILES("gemm_tiles_weight_grad")
#define small_fp32(...) NO_FP32_TILES("gemm_tiles_small")
#endif

// ---- the switches and the entry points: fp32 on the tiles above, bf16 in gemm_bf16.c -----------

static int tiles_switched_off = 0;
static int precision = GEMM_FP32;

// CCVIT_GEMM is read once, at load time: a lazy read on the first call could
// come from several threads of attention's parallel loop at once.
__attribute__((constructor)) static void read_gemm_switch(void) {
    const char *v = getenv("CCVIT_GEMM");
    tiles_switched_off = v && strcmp(v, "blas") == 0;
}

// bf16 products exist only here, so in bf16 every product comes here whatever CCVIT_GEMM says.
int gemm_tiles_enabled(void) { return precision != GEMM_FP32 || (FP32_TILES_BUILT && !tiles_switched_off); }

void gemm_tiles_set_enabled(int on) { tiles_switched_off = !on; }

int gemm_bf16_native(void) {
#ifdef __AVX512BF16__
    return 1;
#else
    return 0;
#endif
}

void gemm_set_precision(int p) {
    if (p != GEMM_FP32 && p != GEMM_BF16 && p != GEMM_BF16_EMULATED) fatal("gemm_set_precision: unknown precision %d", p);
    precision = p == GEMM_BF16 && !gemm_bf16_native() ? GEMM_BF16_EMULATED : p;
}

int gemm_precision(void) { return precision; }

static void require_bf16(const char *what) {
    if (precision == GEMM_FP32) fatal("%s: a bf16 operand needs precision bf16 (gemm_set_precision)", what);
}

const char *gemm_precision_summary(void) {
    if (precision == GEMM_BF16)
        return "bf16 products (vdpbf16ps, fp32 sums); weights, AdamW, norms, softmax and losses in fp32";
    if (precision == GEMM_BF16_EMULATED)
        return "bf16 products EMULATED: this build has no vdpbf16ps (AVX512_BF16), so each pair is two fp32 FMAs in "
               "portable C, the same bits but many times slower than fp32 (use precision: fp32 on this machine)";
    return gemm_tiles_enabled() ? "fp32 (products on our AVX-512 tiles)" : "fp32 (products on OpenBLAS)";
}

static double flops_issued = 0;  // atomic where gemm_tiles_small adds to it from inside parallel loops

double gemm_tiles_flops_issued(void) { return flops_issued; }

void gemm_tiles_rows(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_is_nk,
                     const float *bias, int accumulate, float *C, int ldc) {
    gemm_tiles_rows_epilogue(M, N, K, A, lda, B, ldb, b_is_nk, bias, accumulate, C, ldc, NULL, NULL);
}

void gemm_tiles_rows_epilogue(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_is_nk,
                              const float *bias, int accumulate, float *C, int ldc, gemm_rows_epilogue epilogue,
                              void *ctx) {
    if (M <= 0 || N <= 0 || K < 0) return;
    if (bias && accumulate) fatal("gemm_tiles_rows: a bias is only added to a written C (accumulate = 0)");
    flops_issued += 2.0 * M * N * K;
    if (precision == GEMM_FP32)
        rows_fp32(M, N, K, A, lda, B, ldb, b_is_nk, bias, accumulate, C, ldc, epilogue, ctx);
    else
        bf16_gemm_rows(precision == GEMM_BF16_EMULATED, M, N, K, A, NULL, lda, B, ldb, b_is_nk, bias, accumulate, C,
                       ldc, epilogue, ctx);
}


void gemm_tiles_rows_a16(int M, int N, int K, const uint16_t *A, int lda, const float *B, int ldb, int b_is_nk,
                         const float *bias, float *C, int ldc, gemm_rows_epilogue epilogue, void *ctx) {
    if (M <= 0 || N <= 0 || K < 0) return;
    require_bf16("gemm_tiles_rows_a16");
    flops_issued += 2.0 * M * N * K;
    bf16_gemm_rows(precision == GEMM_BF16_EMULATED, M, N, K, NULL, A, lda, B, ldb, b_is_nk, bias, 0, C, ldc, epilogue,
                   ctx);
}

void gemm_tiles_weight_grad_x16(int O, int IN, int M, const float *dY, const uint16_t *X, float *dW, float *dbias) {
    if (O <= 0 || IN <= 0 || M <= 0) return;
    require_bf16("gemm_tiles_weight_grad_x16");
    flops_issued += 2.0 * O * IN * M;
    bf16_gemm_weight_grad(precision == GEMM_BF16_EMULATED, O, IN, M, dY, NULL, X, dW, dbias);
}

void gemm_tiles_weight_grad(int O, int IN, int M, const float *dY, const float *X, float *dW, float *dbias) {
    if (O <= 0 || IN <= 0 || M <= 0) return;
    flops_issued += 2.0 * O * IN * M;
    if (precision == GEMM_FP32) weight_grad_fp32(O, IN, M, dY, X, dW, dbias);
    else bf16_gemm_weight_grad(precision == GEMM_BF16_EMULATED, O, IN, M, dY, X, NULL, dW, dbias);
}

void gemm_tiles_small(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K < 0) return;
#pragma omp atomic
    flops_issued += 2.0 * M * N * K;
    if (precision == GEMM_FP32) small_fp32(a_trans, b_trans, M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else bf16_gemm_small(precision == GEMM_BF16_EMULATED, a_trans, b_trans, M, N, K, alpha, A, NULL, lda, B, NULL, ldb,
                         C, ldc);
}

void gemm_tiles_small16(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A, const uint16_t *A16,
                        int lda, const float *B, const uint16_t *B16, int ldb, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K < 0) return;
    require_bf16("gemm_tiles_small16");
#pragma omp atomic
    flops_issued += 2.0 * M * N * K;
    bf16_gemm_small(precision == GEMM_BF16_EMULATED, a_trans, b_trans, M, N, K, alpha, A, A16, lda, B, B16, ldb, C, ldc);
}
