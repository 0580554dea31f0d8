// gemm_tiles.h: our own sgemm (AVX-512) for the linear layers' three products and attention's.
//
// Why not OpenBLAS here: it packs both operands of every call, and the long
// operand is the token activations (M = batch x tokens rows), so each product
// re-copies M x K floats before computing; that packing was ~12% of a
// pretraining step's CPU samples. These kernels read the activations in place,
// pack only the weight (N x K floats, 1/M of the product's work), and start
// the accumulators from the bias instead of a separate fill pass.
//
// Each output element is summed by one thread in a fixed order of k (in
// fixed-size chunks), so the bits depend on the shapes only, never on the
// thread count. gemm_tiles_rows and gemm_tiles_weight_grad run on the OpenMP
// team: call them from outside parallel regions (the weight pack buffer is
// shared by the team); gemm_tiles_small is the one-thread entry for inside them.
#pragma once
#include <stdint.h>

// 1 when built with AVX-512 and not switched off with CCVIT_GEMM=blas in the
// environment (benchmarks use that to run OpenBLAS and these side by side).
int gemm_tiles_enabled(void);
// Tests and benchmarks: 0 sends the products to OpenBLAS, 1 back to the tiles (if built with AVX-512).
void gemm_tiles_set_enabled(int on);

// Precision of the products: GEMM_FP32, or GEMM_BF16 (operands rounded to bf16, products summed in
// fp32 with vdpbf16ps; trainer/gemm_bf16.c). GEMM_BF16_EMULATED forces the portable path that gives
// the same bits without the instruction (tests; a CPU without AVX512_BF16 gets it anyway).
enum { GEMM_FP32 = 0, GEMM_BF16 = 1, GEMM_BF16_EMULATED = 2 };
void gemm_set_precision(int precision);
// What runs now: GEMM_FP32, GEMM_BF16 (vdpbf16ps) or GEMM_BF16_EMULATED.
int gemm_precision(void);
// One line for a start-up summary: the precision, and where the products run (says when bf16 is emulated).
const char *gemm_precision_summary(void);
// 1 when this build has vdpbf16ps (-march=native on a CPU with AVX512_BF16).
int gemm_bf16_native(void);

// 2*M*N*K summed over every product the tiles computed since start-up: the FLOP-count
// test adds it to the OpenBLAS calls it intercepts.
double gemm_tiles_flops_issued(void);

// C[M,N] = A[M,K] @ op(B) (+ C if accumulate, or + bias[N] if bias; not both), A rows at lda.
// op(B) = B^T for B stored [N,K] (b_is_nk = 1: a weight in a forward product),
// op(B) = B   for B stored [K,N] (b_is_nk = 0: a weight in the input-gradient product).
void gemm_tiles_rows(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_is_nk,
                     const float *bias, int accumulate, float *C, int ldc);

// The same, then epilogue(ctx, row0, rows) on each finished strip of C's rows while they are still
// in cache (rows 0..M in strips whose bounds depend on M only); the bias+GELU fusions use it.
typedef void (*gemm_rows_epilogue)(void *ctx, int row0, int rows);
void gemm_tiles_rows_epilogue(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int b_is_nk,
                              const float *bias, int accumulate, float *C, int ldc, gemm_rows_epilogue epilogue,
                              void *ctx);

// dW[O,IN] += dY[M,O]^T @ X[M,IN] and dbias[O] += sum_m dY[m,:] (dbias may be NULL): the weight and
// bias gradients, summed over the M rows in order; the bias sums ride along in the first column panel.
void gemm_tiles_weight_grad(int O, int IN, int M, const float *dY, const float *X, float *dW, float *dbias);

// In bf16 only (gemm_precision() != GEMM_FP32): the forward product and the weight gradient with the
// activation operand already in bf16 (a saved activation a producer stored as bf16), rows at lda / IN.
// The same bits as the fp32 operand it was rounded from.
void gemm_tiles_rows_a16(int M, int N, int K, const uint16_t *A, int lda, const float *B, int ldb, int b_is_nk,
                         const float *bias, float *C, int ldc, gemm_rows_epilogue epilogue, void *ctx);
void gemm_tiles_weight_grad_x16(int O, int IN, int M, const float *dY, const uint16_t *X, float *dW, float *dbias);
// gemm_tiles_small with either operand from bf16 storage (A16 / B16 instead of A / B; the other NULL).
void gemm_tiles_small16(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A, const uint16_t *A16,
                        int lda, const float *B, const uint16_t *B16, int ldb, float *C, int ldc);

// One small product on the calling thread, for use INSIDE parallel loops (attention's per
// (image, head) products): C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N], C written (beta 0).
// op(A) = A [M,K] rows at lda, or A^T for A stored [K,M] (a_trans); op(B) = B [K,N], or B^T
// for B stored [N,K] (b_trans). op(B) is packed per call into a per-thread buffer.
void gemm_tiles_small(int a_trans, int b_trans, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float *C, int ldc);
