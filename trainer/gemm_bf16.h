// gemm_bf16.h: the products in bf16 (precision: bf16): both operands rounded to
// bf16, pairs of k multiplied and summed into fp32 accumulators by vdpbf16ps.
// gemm_tiles.c sends its entry points here when the precision is bf16; the
// contracts (shapes, bias, accumulate, epilogue) are gemm_tiles.h's.
//
// Two implementations give the same bits: the vdpbf16ps tiles (built with
// AVX512_BF16), and a portable one that emulates the instruction lane by lane
// (bf16_dot_pair). Each output is summed by one thread over k pairs in order,
// so neither depends on the thread count. K is padded with a zero to an even
// count; the weight gradient's bias sums stay fp32.
#pragma once
#include <stdint.h>

#include "gemm_tiles.h"

// fp32 -> bf16 as vcvtneps2bf16 does it: round to nearest even, a denormal
// input becomes a signed zero, a NaN stays a (quiet) NaN.
uint16_t bf16_round(float x);
float bf16_to_float(uint16_t h);
// One fp32 lane of vdpbf16ps: a and b each hold a pair of bf16 (element 2i in
// the low half). acc + a.hi * b.hi, then + a.lo * b.lo: two fp32 FMAs, with
// denormals read as zero and flushed to zero (Intel SDM; oneDNN emulates it so).
float bf16_dot_pair(float acc, uint32_t a, uint32_t b);

// n floats -> bf16 by bf16_round (vectorised where built with AVX512_BF16: the same bits); and back, exactly.
void bf16_store(uint16_t *dst, const float *src, long n);
void bf16_load(float *dst, const uint16_t *src, long n);

// emulated = 0: the vdpbf16ps tiles (only when gemm_bf16_native()); 1: the portable path.
// A (or X) is fp32, or A16 (X16) a bf16 copy a producer stored: one of the two is NULL. A bf16
// operand gives the same bits as the fp32 one it was rounded from.
void bf16_gemm_rows(int emulated, int M, int N, int K, const float *A, const uint16_t *A16, int lda, const float *B,
                    int ldb, int b_is_nk, const float *bias, int accumulate, float *C, int ldc,
                    gemm_rows_epilogue epilogue, void *ctx);
void bf16_gemm_weight_grad(int emulated, int O, int IN, int M, const float *dY, const float *X, const uint16_t *X16,
                           float *dW, float *dbias);
void bf16_gemm_small(int emulated, int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A,
                     const uint16_t *A16, int lda, const float *B, const uint16_t *B16, int ldb, float *C, int ldc);
