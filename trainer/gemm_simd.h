// gemm_simd.h: AVX-512 helpers shared by the fp32 tiles (gemm_tiles.c) and
// the bf16 tiles (gemm_bf16.c). Include only under __AVX512F__.
#pragma once
#include <immintrin.h>

// Masks for a 32-column panel that has w valid columns (the last panel of an N that is not a multiple of 32).
static inline __mmask16 low_mask(int w) { return w >= 16 ? (__mmask16)0xFFFF : w <= 0 ? 0 : (__mmask16)((1u << w) - 1); }

// r[i][j] -> r[j][i] for a 16 x 16 block in 16 registers: 2x2 blocks of floats, then of float pairs
// (within 128-bit lanes), then 128-bit lanes across registers in two rounds.
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // u[4g + c], lane L: column c + 4L of rows 4g .. 4g+3
    for (int g = 0; g < 16; g += 4) {
        u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[g]), _mm512_castps_pd(t[g + 2])));
        u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[g]), _mm512_castps_pd(t[g + 2])));
        u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[g + 1]), _mm512_castps_pd(t[g + 3])));
        u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[g + 1]), _mm512_castps_pd(t[g + 3])));
    }
    for (int c = 0; c < 4; c++) {
        __m512 v02 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), v13 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        __m512 w02 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88), w13 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(v02, w02, 0x88);
        r[c + 8] = _mm512_shuffle_f32x4(v02, w02, 0xDD);
        r[c + 4] = _mm512_shuffle_f32x4(v13, w13, 0x88);
        r[c + 12] = _mm512_shuffle_f32x4(v13, w13, 0xDD);
    }
}

