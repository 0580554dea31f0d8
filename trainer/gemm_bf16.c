// gemm_bf16.c: bf16 products with fp32 sums (see gemm_bf16.h).
//
// Layouts. A k pair is one dword: two bf16, element 2i in the low half, which
// is what vdpbf16ps multiplies lane by lane. The packed B panel holds 32
// columns of pairs, [k/2][32] dwords (two zmm per pair of k); A is read as
// dwords at A[i * a_row + kp * a_pair], so row-major bf16 rows (a_row = K/2,
// a_pair = 1) and column-interleaved packs (a_row = 1) share one tile.
#include "gemm_bf16.h"

#include <math.h>
#include <string.h>

#include "common.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 8
#define NR 32
#define KC_ROWS 384  // k per chunk of the row products, even: a chunk ends on a pair
#define KC_GRAD 128  // m per chunk of the weight gradient, even

// ---- the scalar definitions (portable path and tests) ------------------------------

uint16_t bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);           // zero or denormal
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);  // NaN, quieted
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float flush_denormal(float x) { return fabsf(x) < 0x1p-126f ? copysignf(0.0f, x) : x; }

// One lane on operands that are not denormal (bf16_round never makes one): only the sums need the flush.
static inline float dot_pair_normal(float acc, uint32_t a, uint32_t b) {
    acc = flush_denormal(fmaf(bf16_to_float((uint16_t)(a >> 16)), bf16_to_float((uint16_t)(b >> 16)), flush_denormal(acc)));
    return flush_denormal(fmaf(bf16_to_float((uint16_t)a), bf16_to_float((uint16_t)b), acc));
}

// A pair with each denormal half (exponent bits 0) made a signed zero
static inline uint32_t flush_pair(uint32_t p) {
    if (!(p & 0x7F800000u)) p &= 0x8000FFFFu;
    if (!(p & 0x7F80u)) p &= 0xFFFF8000u;
    return p;
}

float bf16_dot_pair(float acc, uint32_t a, uint32_t b) { return dot_pair_normal(acc, flush_pair(a), flush_pair(b)); }

void bf16_load(float *restrict dst, const uint16_t *restrict src, long n) {
    for (long i = 0; i < n; i++) {  // written on the bits, so that it vectorises
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

#ifndef __AVX512BF16__
void bf16_store(uint16_t *dst, const float *src, long n) {
    for (long i = 0; i < n; i++) dst[i] = bf16_round(src[i]);
}
#endif

// rows [R, cols] of bf16 at ld -> dense fp32 [R, cols] (exact; the portable path re-rounds them to the same bits)
static float *expand_rows(const uint16_t *src, long ld, int R, int cols) {
    float *dst = xmalloc(sizeof(float) * ((size_t)R * cols + 1), "bf16 operand as fp32");
    for (int r = 0; r < R; r++) bf16_load(dst + (size_t)r * cols, src + r * ld, cols);
    return dst;
}

// ---- the portable path: operands rounded to bf16 once, then one lane of vdpbf16ps at a time ----

static inline uint16_t scaled_bf16(float alpha, float x) {
    uint16_t h = bf16_round(x);
    return alpha == 1.0f ? h : bf16_round(alpha * bf16_to_float(h));
}

// Pairs of k of an operand: pair (r, kp) = (x(r, 2kp), x(r, 2kp+1)) at dst[r * r_step + kp * kp_step], zero past K,
// with x(r, k) = alpha * bf16(src[r * rs + k * ks]): alpha scales the rounded operand, so an operand
// stored in bf16 by its producer gives the same pairs as the fp32 one it came from.
static uint32_t *pairs_of(int R, int K, const float *src, long rs, long ks, float alpha, int pair_major) {
    int kp_n = (K + 1) / 2;
    long r_step = pair_major ? 1 : kp_n, kp_step = pair_major ? R : 1;
    uint32_t *dst = xmalloc(sizeof(uint32_t) * ((size_t)R * kp_n + 1), "bf16 pairs");
    for (int r = 0; r < R; r++)
        for (int kp = 0; kp < kp_n; kp++) {
            uint32_t lo = scaled_bf16(alpha, src[r * rs + 2L * kp * ks]);
            uint32_t hi = 2 * kp + 1 < K ? scaled_bf16(alpha, src[r * rs + (2L * kp + 1) * ks]) : 0;
            dst[r * r_step + kp * kp_step] = lo | hi << 16;
        }
    return dst;
}

// C[i][j] = init + sum over pairs of A(i, kp) . B(kp, j), in the tiles' order of k; Ap is [M][kp],
// Bp is [kp][N], so the inner loop runs along a row of C (and vectorises where the CPU has FMA).
static void dot_rows_emulated(int M, int N, int kp_n, const uint32_t *Ap, const uint32_t *Bp, const float *bias,
                              int load_c, float *C, int ldc, int parallel) {
    (void)parallel;  // read only by the pragma, which NO_OMP=1 builds ignore
#pragma omp parallel for schedule(static) if (parallel)
    for (int i = 0; i < M; i++) {
        float *c = C + (long)i * ldc;
        for (int j = 0; j < N; j++) c[j] = load_c ? c[j] : bias ? bias[j] : 0.0f;
        for (int kp = 0; kp < kp_n; kp++) {
            uint32_t a = Ap[(size_t)i * kp_n + kp];
            const uint32_t *b = Bp + (size_t)kp * N;
            for (int j = 0; j < N; j++) c[j] = dot_pair_normal(c[j], a, b[j]);
        }
    }
}

static void rows_emulated(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_is_nk,
                          const float *bias, int accumulate, float *C, int ldc, gemm_rows_epilogue epilogue, void *ctx) {
    uint32_t *Ap = pairs_of(M, K, A, lda, 1, 1.0f, 0);
    uint32_t *Bp = b_is_nk ? pairs_of(N, K, B, ldb, 1, 1.0f, 1) : pairs_of(N, K, B, 1, ldb, 1.0f, 1);
    dot_rows_emulated(M, N, (K + 1) / 2, Ap, Bp, bias, accumulate, C, ldc, 1);
    if (epilogue)
        for (int i0 = 0; i0 < M; i0 += MR) epilogue(ctx, i0, M - i0 < MR ? M - i0 : MR);
    xfree(Ap);
    xfree(Bp);
}

// dW[o][n] += sum_m dY[m][o] X[m][n], in m pairs; dbias[o] += its KC_GRAD-row chunk sums, as the tiles add them.
static void weight_grad_emulated(int O, int IN, int M, const float *dY, const float *X, float *dW, float *dbias) {
    uint32_t *Ap = pairs_of(O, M, dY, 1, O, 1.0f, 0), *Bp = pairs_of(IN, M, X, 1, IN, 1.0f, 1);
    dot_rows_emulated(O, IN, (M + 1) / 2, Ap, Bp, NULL, 1, dW, IN, 1);
    for (int o = 0; dbias && o < O; o++)
        for (int m0 = 0; m0 < M; m0 += KC_GRAD) {
            float sum = 0.0f;
            for (int m = m0; m < M && m < m0 + KC_GRAD; m++) sum += dY[(long)m * O + o];
            dbias[o] += sum;
        }
    xfree(Ap);
    xfree(Bp);
}

static void small_emulated(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A, int lda,
                           const float *B, int ldb, float *C, int ldc) {
    uint32_t *Ap = a_trans ? pairs_of(M, K, A, 1, lda, 1.0f, 0) : pairs_of(M, K, A, lda, 1, 1.0f, 0);
    uint32_t *Bp = b_trans ? pairs_of(N, K, B, ldb, 1, alpha, 1) : pairs_of(N, K, B, 1, ldb, alpha, 1);
    dot_rows_emulated(M, N, (K + 1) / 2, Ap, Bp, NULL, 0, C, ldc, 0);
    xfree(Ap);
    xfree(Bp);
}

#ifdef __AVX512BF16__
#include "gemm_simd.h"

static uint32_t *reserve_dwords(float **buf, size_t *capacity, size_t count, const char *what) {
    // cppcheck-suppress invalidPointerCast ; heap scratch, only ever read and written as dwords
    return (uint32_t *)xreserve_floats(buf, capacity, count ? count : 1, what);
}

// words 2j, 2j+1 of the result = words j, 16 + j of the input: two rows' bf16 into pairs
static const uint16_t interleave_index[32] __attribute__((aligned(64))) = {
    0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// 32 floats (lo: elements 0..15, hi: 16..31) -> 32 bf16 in order
static inline __m512i bf16x32(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// alpha * bf16(x) in fp32, for the packers to round again (scaled_bf16 above); x itself when alpha is 1
static inline __m512 scale_rounded(__m512 x, float alpha) {
    if (alpha == 1.0f) return x;
    __m512 r = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x)), 16));
    return _mm512_mul_ps(_mm512_set1_ps(alpha), r);
}

// dst[kp * stride + j] = (x(2kp, n0 + j), x(2kp + 1, n0 + j)) for j < width (a multiple of 16; 0 past w),
// x(k, n) = alpha * bf16(B[k * ldb + n]) (see scaled_bf16): pairs across two rows of a [K, N] operand.
static void pack_pairs_across_rows(uint32_t *dst, long stride, const float *B, long ldb, float alpha, int K, int n0,
                                   int w, int width) {
    const __m512i idx = _mm512_load_si512(interleave_index);
    for (int kp = 0; kp < (K + 1) / 2; kp++) {
        const float *r0 = B + 2L * kp * ldb + n0, *r1 = r0 + ldb;
        for (int j0 = 0; j0 < width; j0 += 16) {
            __mmask16 m = low_mask(w - j0);
            __m512 lo = scale_rounded(_mm512_maskz_loadu_ps(m, r0 + j0), alpha);
            __m512 hi = 2 * kp + 1 < K ? scale_rounded(_mm512_maskz_loadu_ps(m, r1 + j0), alpha) : _mm512_setzero_ps();
            _mm512_store_si512(dst + (long)kp * stride + j0, _mm512_permutexvar_epi16(idx, bf16x32(lo, hi)));
        }
    }
}

// rows [R, K] of A (rows at lda) -> bf16 rows [R, K rounded up to even] (the pairs are the row's dwords)
static void rows_to_bf16(uint16_t *dst, const float *A, long lda, int R, int K) {
    int kp2 = (K + 1) / 2 * 2;
    for (int r = 0; r < R; r++)
        for (int k0 = 0; k0 < kp2; k0 += 32) {
            const float *src = A + r * lda + k0;
            __m512i h = bf16x32(_mm512_maskz_loadu_ps(low_mask(K - k0), src), _mm512_maskz_loadu_ps(low_mask(K - k0 - 16), src + 16));
            int n = kp2 - k0 < 32 ? kp2 - k0 : 32;
            _mm512_mask_storeu_epi16(dst + (long)r * kp2 + k0, (__mmask32)(n == 32 ? 0xFFFFFFFFu : (1u << n) - 1), h);
        }
}

void bf16_store(uint16_t *dst, const float *src, long n) {
    long i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(dst + i, bf16x32(_mm512_loadu_ps(src + i), _mm512_loadu_ps(src + i + 16)));
    for (; i < n; i++) dst[i] = bf16_round(src[i]);
}

// rows [R, K] of bf16 (at lda) -> rows [R, K rounded up to even]: a copy with the pad pair's zero
static void rows16_padded(uint16_t *dst, const uint16_t *A, long lda, int R, int K) {
    int kp2 = (K + 1) / 2 * 2;
    for (int r = 0; r < R; r++) {
        memcpy(dst + (long)r * kp2, A + r * lda, sizeof(uint16_t) * K);
        if (kp2 > K) dst[(long)r * kp2 + K] = 0;
    }
}

// 16 bf16 -> 16 floats, exactly
static inline __m512 float16_of(__m256i words) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(words), 16));
}

// 32 bf16 (lo: elements 0..15, hi: 16..31) -> 32 bf16 of alpha * x, rounded again (as scaled_bf16)
static inline __m512i words_scaled(__m256i lo, __m256i hi, float alpha) {
    if (alpha == 1.0f) return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    __m512 a = _mm512_set1_ps(alpha);
    return bf16x32(_mm512_mul_ps(a, float16_of(lo)), _mm512_mul_ps(a, float16_of(hi)));
}

// 32 elements of a row, from fp32 (B) or bf16 (B16) storage at off, as 16 dwords of bf16 pairs
static inline __m512 row_pairs(const float *B, const uint16_t *B16, long off, __mmask16 m_lo, __mmask16 m_hi,
                               float alpha) {
    if (B16)
        return _mm512_castsi512_ps(words_scaled(_mm256_maskz_loadu_epi16(m_lo, B16 + off),
                                                _mm256_maskz_loadu_epi16(m_hi, B16 + off + 16), alpha));
    return _mm512_castsi512_ps(bf16x32(scale_rounded(_mm512_maskz_loadu_ps(m_lo, B + off), alpha),
                                       scale_rounded(_mm512_maskz_loadu_ps(m_hi, B + off + 16), alpha)));
}

// One 32-column panel of pairs from an [N, K] operand (a forward product's weight, attention's k), fp32 in B
// or bf16 in B16: the pairs lie along each row, so 16 rows are converted to dwords and transposed in registers.
static void pack_pairs_along_rows(uint32_t *dst, const float *B, const uint16_t *B16, long ldb, float alpha, int K,
                                  int n0, int w) {
    int kp_n = (K + 1) / 2;
    for (int j0 = 0; j0 < NR; j0 += 16)
        for (int kp0 = 0; kp0 < kp_n; kp0 += 16) {
            int k0 = 2 * kp0;
            __mmask16 m_lo = low_mask(K - k0), m_hi = low_mask(K - k0 - 16);
            __m512 r[16];
            for (int j = 0; j < 16; j++)
                r[j] = j0 + j < w ? row_pairs(B, B16, (long)(n0 + j0 + j) * ldb + k0, m_lo, m_hi, alpha) : _mm512_setzero_ps();
            transpose16(r);  // r[kp][j]: pair kp0 + kp of column j0 + j
            for (int kp = 0; kp < 16 && kp0 + kp < kp_n; kp++)
                _mm512_store_si512(dst + (long)(kp0 + kp) * NR + j0, _mm512_castps_si512(r[kp]));
        }
}

// pack_pairs_across_rows for a bf16 operand: the two rows' words interleaved as they are
static void pack_pairs_across_rows16(uint32_t *dst, long stride, const uint16_t *B, long ldb, float alpha, int K,
                                     int n0, int w, int width) {
    const __m512i idx = _mm512_load_si512(interleave_index);
    for (int kp = 0; kp < (K + 1) / 2; kp++) {
        const uint16_t *r0 = B + 2L * kp * ldb + n0, *r1 = r0 + ldb;
        for (int j0 = 0; j0 < width; j0 += 16) {
            __mmask16 m = low_mask(w - j0);
            __m256i lo = _mm256_maskz_loadu_epi16(m, r0 + j0);
            __m256i hi = 2 * kp + 1 < K ? _mm256_maskz_loadu_epi16(m, r1 + j0) : _mm256_setzero_si256();
            _mm512_store_si512(dst + (long)kp * stride + j0, _mm512_permutexvar_epi16(idx, words_scaled(lo, hi, alpha)));
        }
    }
}

// C[mr,32] = (C or bias or 0) + sum over kp_n pairs of A(i, kp) . P[kp][0..32)
static inline __attribute__((always_inline)) void tile_pairs(int mr, int kp_n, const uint32_t *A, long a_row,
                                                             long a_pair, const uint32_t *P, float *C, long ldc,
                                                             int load_c, const float *bias, __mmask16 m0, __mmask16 m1) {
    __m512 c0[MR], c1[MR];
    __m512 init0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 init1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        c0[i] = load_c ? _mm512_maskz_loadu_ps(m0, C + i * ldc) : init0;
        c1[i] = load_c ? _mm512_maskz_loadu_ps(m1, C + i * ldc + 16) : init1;
    }
    for (int kp = 0; kp < kp_n; kp++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(P + kp * NR), b1 = (__m512bh)_mm512_load_si512(P + kp * NR + 16);
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[i * a_row + kp * a_pair]);
            c0[i] = _mm512_dpbf16_ps(c0[i], a, b0);
            c1[i] = _mm512_dpbf16_ps(c1[i], a, b1);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        _mm512_mask_storeu_ps(C + i * ldc, m0, c0[i]);
        _mm512_mask_storeu_ps(C + i * ldc + 16, m1, c1[i]);
    }
}

#define MR_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)

// a constant mr per copy keeps the accumulators in registers
static void tile_pairs_any(int mr, int kp_n, const uint32_t *A, long a_row, long a_pair, const uint32_t *P, float *C,
                           long ldc, int load_c, const float *bias, int w) {
    __mmask16 m0 = low_mask(w), m1 = low_mask(w - 16);
    switch (mr) {
#define PAIRS_CASE(r) \
    case r: tile_pairs(r, kp_n, A, a_row, a_pair, P, C, ldc, load_c, bias, m0, m1); break;
        MR_CASES(PAIRS_CASE)
#undef PAIRS_CASE
    }
}

static float *panels_buf = NULL;  // packed op(B) of a rows product, or a weight gradient chunk of X; shared by the team
static size_t panels_capacity = 0;
static __thread float *strip_buf = NULL, *small_a_buf = NULL, *small_b_buf = NULL;
static __thread size_t strip_capacity = 0, small_a_capacity = 0, small_b_capacity = 0;

// C[mr, N] = (C or bias) + A rows (bf16 pairs, a_row apart) @ the panels, in k chunks of KC_ROWS
static void strip_times_panels(int mr, int N, int kp_n, const uint32_t *A, long a_row, const uint32_t *panels, float *C,
                               int ldc, int accumulate, const float *bias) {
    for (int kp0 = 0; kp0 < kp_n || kp0 == 0; kp0 += KC_ROWS / 2) {  // K = 0: one empty sum writes the bias or 0
        int kc = kp_n - kp0 < KC_ROWS / 2 ? kp_n - kp0 : KC_ROWS / 2;
        for (int n0 = 0; n0 < N; n0 += NR)
            tile_pairs_any(mr, kc, A + kp0, a_row, 1, panels + (size_t)n0 * kp_n + (size_t)kp0 * NR, C + n0, ldc,
                           kp0 > 0 || accumulate, kp0 == 0 && bias ? bias + n0 : NULL, N - n0);
    }
}

// one 32-column panel of op(B), from B (fp32) or B16 (bf16)
static void pack_panel(uint32_t *dst, const float *B, const uint16_t *B16, int ldb, int b_nk, float alpha, int K, int n0,
                       int N) {
    int w = N - n0 < NR ? N - n0 : NR;
    if (b_nk) pack_pairs_along_rows(dst, B, B16, ldb, alpha, K, n0, w);
    else if (B16) pack_pairs_across_rows16(dst, NR, B16, ldb, alpha, K, n0, w, NR);
    else pack_pairs_across_rows(dst, NR, B, ldb, alpha, K, n0, w, NR);
}

static void rows_native(int M, int N, int K, const float *A, const uint16_t *A16, int lda, const float *B, int ldb,
                        int b_is_nk, const float *bias, int accumulate, float *C, int ldc, gemm_rows_epilogue epilogue,
                        void *ctx) {
    int in_place = A16 && K % 2 == 0 && lda % 2 == 0;  // bf16 rows whose pairs are already the dwords to broadcast
    int kp_n = (K + 1) / 2, panels = (N + NR - 1) / NR, strips = (M + MR - 1) / MR;
    uint32_t *P = reserve_dwords(&panels_buf, &panels_capacity, (size_t)panels * NR * kp_n, "bf16 weight panels");
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int p = 0; p < panels; p++) pack_panel(P + (size_t)p * NR * kp_n, B, NULL, ldb, b_is_nk, 1.0f, K, p * NR, N);
        uint32_t *Ab = reserve_dwords(&strip_buf, &strip_capacity, (size_t)MR * kp_n, "bf16 activation strip");
#pragma omp for schedule(dynamic, 8)
        for (int s = 0; s < strips; s++) {
            int i0 = s * MR, mr = M - i0 < MR ? M - i0 : MR;
            // the strip's rows in bf16, once, while they are read for every panel
            const uint32_t *As = Ab;
            long a_row = kp_n;
            if (in_place) As = (const uint32_t *)(A16 + (long)i0 * lda), a_row = lda / 2;
            else if (A16) rows16_padded((uint16_t *)Ab, A16 + (long)i0 * lda, lda, mr, K);
            else rows_to_bf16((uint16_t *)Ab, A + (long)i0 * lda, lda, mr, K);
            strip_times_panels(mr, N, kp_n, As, a_row, P, C + (long)i0 * ldc, ldc, accumulate, bias);
            if (epilogue) epilogue(ctx, i0, mr);
        }
    }
}

// dst[kp][0..16) = pairs (dY[2kp][o0 + i], dY[2kp + 1][o0 + i]) for i < mr of one chunk's kc rows (ldy apart);
// with dbias, dbias[o0 + i] += the chunk's fp32 column sum, added in the order of the rows.
static void pack_grad_strip(uint32_t *dst, const float *dY, long ldy, int kc, int o0, int mr, float *dbias) {
    const __m512i idx = _mm512_load_si512(interleave_index);
    __mmask16 m = low_mask(mr);
    __m512 sum = _mm512_setzero_ps();
    for (int kp = 0; kp < (kc + 1) / 2; kp++) {
        __m512 lo = _mm512_maskz_loadu_ps(m, dY + 2L * kp * ldy + o0), hi = _mm512_setzero_ps();
        sum = _mm512_add_ps(sum, lo);
        if (2 * kp + 1 < kc) {
            hi = _mm512_maskz_loadu_ps(m, dY + (2L * kp + 1) * ldy + o0);
            sum = _mm512_add_ps(sum, hi);
        }
        _mm512_store_si512(dst + (long)kp * 16, _mm512_permutexvar_epi16(idx, bf16x32(lo, hi)));
    }
    if (dbias) _mm512_mask_storeu_ps(dbias + o0, m, _mm512_add_ps(sum, _mm512_maskz_loadu_ps(m, dbias + o0)));
}

// dW[O,IN] += dY^T X, M in KC_GRAD chunks. Per chunk the team packs X's pairs once into shared panels;
// then each thread runs its own contiguous range of O strips over them (dY's columns packed per strip),
// so every element is summed in the order of m whatever the thread count.
static void weight_grad_native(int O, int IN, int M, const float *dY, const float *X, const uint16_t *X16, float *dW,
                               float *dbias) {
    int strips = (O + MR - 1) / MR, panels = (IN + NR - 1) / NR;
    uint32_t *Xp = reserve_dwords(&panels_buf, &panels_capacity, (size_t)panels * NR * KC_GRAD / 2,
                                  "bf16 weight-gradient panels");
#pragma omp parallel
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        int s0 = (int)((long)strips * t / nt), s1 = (int)((long)strips * (t + 1) / nt);
        uint32_t *Ap = reserve_dwords(&strip_buf, &strip_capacity, 16 * KC_GRAD / 2, "bf16 gradient strip");
        for (int m0 = 0; m0 < M; m0 += KC_GRAD) {
            int kc = M - m0 < KC_GRAD ? M - m0 : KC_GRAD, kp_n = (kc + 1) / 2;
#pragma omp for schedule(static)
            for (int p = 0; p < panels; p++) {
                int w = IN - p * NR < NR ? IN - p * NR : NR;
                if (X16) pack_pairs_across_rows16(Xp + (size_t)p * NR * kp_n, NR, X16 + (long)m0 * IN, IN, 1.0f, kc, p * NR, w, NR);
                else pack_pairs_across_rows(Xp + (size_t)p * NR * kp_n, NR, X + (long)m0 * IN, IN, 1.0f, kc, p * NR, w, NR);
            }
            for (int s = s0; s < s1; s++) {
                int o0 = s * MR, mr = O - o0 < MR ? O - o0 : MR;
                pack_grad_strip(Ap, dY + (long)m0 * O, O, kc, o0, mr, dbias);
                for (int p = 0; p < panels; p++)
                    tile_pairs_any(mr, kp_n, Ap, 1, 16, Xp + (size_t)p * NR * kp_n, dW + (long)o0 * IN + p * NR, IN, 1,
                                   NULL, IN - p * NR);
            }
#pragma omp barrier  // the panels are repacked for the next chunk
        }
    }
}

static void small_native(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A,
                         const uint16_t *A16, int lda, const float *B, const uint16_t *B16, int ldb, float *C, int ldc) {
    int kp_n = (K + 1) / 2, panels = (N + NR - 1) / NR, m16 = (M + 15) / 16 * 16;
    uint32_t *P = reserve_dwords(&small_b_buf, &small_b_capacity, (size_t)panels * NR * kp_n, "bf16 small panels");
    for (int p = 0; p < panels; p++) pack_panel(P + (size_t)p * NR * kp_n, B, B16, ldb, b_trans, alpha, K, p * NR, N);
    uint32_t *Ap = reserve_dwords(&small_a_buf, &small_a_capacity, (size_t)m16 * kp_n, "bf16 small rows");
    const uint32_t *As = Ap;
    long a_row = kp_n, a_pair = 1;
    if (a_trans) {  // op(A)(i, k) = A[k * lda + i]: pairs across rows, [kp][m16]
        if (A16) pack_pairs_across_rows16(Ap, m16, A16, lda, 1.0f, K, 0, M, m16);
        else pack_pairs_across_rows(Ap, m16, A, lda, 1.0f, K, 0, M, m16);
        a_row = 1, a_pair = m16;
    } else if (A16 && K % 2 == 0 && lda % 2 == 0) {  // bf16 rows are their own pairs
        As = (const uint32_t *)A16, a_row = lda / 2;
    } else if (A16) {
        rows16_padded((uint16_t *)Ap, A16, lda, M, K);
    } else {
        rows_to_bf16((uint16_t *)Ap, A, lda, M, K);
    }
    for (int i0 = 0; i0 < M; i0 += MR) {
        int mr = M - i0 < MR ? M - i0 : MR;
        for (int n0 = 0; n0 < N; n0 += NR)
            tile_pairs_any(mr, kp_n, As + i0 * a_row, a_row, a_pair, P + (size_t)n0 * kp_n, C + (long)i0 * ldc + n0,
                           ldc, 0, NULL, N - n0);
    }
}
#endif

// ---- entry points -------------------------------------------------------------------

void bf16_gemm_rows(int emulated, int M, int N, int K, const float *A, const uint16_t *A16, int lda, const float *B,
                    int ldb, int b_is_nk, const float *bias, int accumulate, float *C, int ldc,
                    gemm_rows_epilogue epilogue, void *ctx) {
#ifdef __AVX512BF16__
    if (!emulated) {
        rows_native(M, N, K, A, A16, lda, B, ldb, b_is_nk, bias, accumulate, C, ldc, epilogue, ctx);
        return;
    }
#else
    (void)emulated;  // without AVX512-BF16 every product is emulated
#endif
    float *A32 = A16 ? expand_rows(A16, lda, M, K) : NULL;
    rows_emulated(M, N, K, A16 ? A32 : A, A16 ? K : lda, B, ldb, b_is_nk, bias, accumulate, C, ldc, epilogue, ctx);
    xfree(A32);
}

void bf16_gemm_weight_grad(int emulated, int O, int IN, int M, const float *dY, const float *X, const uint16_t *X16,
                           float *dW, float *dbias) {
#ifdef __AVX512BF16__
    if (!emulated) {
        weight_grad_native(O, IN, M, dY, X, X16, dW, dbias);
        return;
    }
#else
    (void)emulated;  // without AVX512-BF16 every product is emulated
#endif
    float *X32 = X16 ? expand_rows(X16, IN, M, IN) : NULL;
    weight_grad_emulated(O, IN, M, dY, X16 ? X32 : X, dW, dbias);
    xfree(X32);
}

void bf16_gemm_small(int emulated, int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A,
                     const uint16_t *A16, int lda, const float *B, const uint16_t *B16, int ldb, float *C, int ldc) {
#ifdef __AVX512BF16__
    if (!emulated) {
        small_native(a_trans, b_trans, M, N, K, alpha, A, A16, lda, B, B16, ldb, C, ldc);
        return;
    }
#else
    (void)emulated;  // without AVX512-BF16 every product is emulated
#endif
    // op(A) is [M,K], op(B) [K,N]: a bf16 operand expanded as stored, rows of its storage at lda / ldb
    float *A32 = A16 ? expand_rows(A16, lda, a_trans ? K : M, a_trans ? M : K) : NULL;
    float *B32 = B16 ? expand_rows(B16, ldb, b_trans ? N : K, b_trans ? K : N) : NULL;
    small_emulated(a_trans, b_trans, M, N, K, alpha, A16 ? A32 : A, A16 ? (a_trans ? M : K) : lda, B16 ? B32 : B,
                   B16 ? (b_trans ? K : N) : ldb, C, ldc);
    xfree(A32);
    xfree(B32);
}
