// kernels.h: the ViT's forward/backward kernels. They know nothing of files,
// configs or losses: pointers and shapes only.
//
// Conventions (after llm.c): outputs first, then inputs, then saved caches,
// then dimensions. Every *_backward ACCUMULATES (+=) into its gradient
// outputs, so callers zero a buffer once and branches can add into it, except
// where a declaration says the output is WRITTEN (linear_backward_set_dinp's
// dinp, attention_backward's dqkv: no zeroing needed before them); a NULL
// gradient pointer means "not needed" and skips that work. Parallel loops write
// disjoint slices and reduce in a fixed order, so results do not depend on the
// number of threads.
#pragma once
#include <stdint.h>

// ---- linear: out[M,OUT] = inp[M,IN] @ weight[OUT,IN]^T + bias[OUT] (bias may be NULL)
void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int M, int IN, int OUT);
// dinp[M,IN] += dout @ weight; dweight[OUT,IN] += dout^T @ inp; dbias[OUT] += sum_m dout
void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int M, int IN, int OUT);
// The same, except dinp = dout @ weight (written, not accumulated): saves zeroing a fresh buffer.
void linear_backward_set_dinp(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                              const float *weight, int M, int IN, int OUT);

// ---- layernorm over the last dim: out, mean, rstd: [N,C], [N], [N]; eps 1e-6
#define LAYERNORM_EPS 1e-6f
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);
// The residual add and the next norm in one pass: x = a + b (x may be a), then
// out, mean, rstd = layernorm(x). The same bits as residual_forward + layernorm_forward.
void residual_layernorm_forward(float *x, float *out, float *mean, float *rstd, const float *a, const float *b,
                                const float *weight, const float *bias, int N, int C);

// ---- GELU, exact erf form: out[n] = x Φ(x)
void gelu_forward(float *out, const float *inp, long n);
// The bias add after a bias-free linear and the GELU in one pass:
// pre[M,N] += bias[N]; out[M,N] = GELU(pre)
void bias_gelu_forward(float *out, float *pre, const float *bias, int M, int N);
void gelu_backward(float *dinp, const float *dout, const float *inp, long n);
// d[n] *= GELU'(inp[n]): the backward pass in place, when d(out) is not needed again
void gelu_backward_inplace(float *d, const float *inp, long n);
// Both in one pass (one erf per element): out[n] = GELU(inp[n]) (the forward's
// output, recomputed for the next layer's weight gradient); d[n] *= GELU'(inp[n])
void gelu_backward_recompute(float *out, float *d, const float *inp, long n);

// ---- linear + GELU (the MLP's fc1 and the input gradient into it), with GELU in the product's epilogue:
// pre[M,OUT] = inp[M,IN] @ weight[OUT,IN]^T + bias; out = GELU(pre)
void linear_bias_gelu_forward(float *out, float *pre, const float *inp, const float *weight, const float *bias, int M,
                              int IN, int OUT);
// dhidden[M,IN] = (dout[M,OUT] @ weight[OUT,IN]) * GELU'(pre) (written); gelu_out = GELU(pre), recomputed
// for the weight gradient of the layer that consumed it
void linear_gelu_backward_dinp(float *dhidden, float *gelu_out, const float *dout, const float *weight,
                               const float *pre, int M, int IN, int OUT);

// ---- precision bf16: producers that store their output as bf16 for the products that read it,
// and products that read such an input. The same bits as the fp32 kernels above (the products round
// their operands to bf16 anyway), half the bytes. inp or inp16: one of the two is NULL.
void layernorm_forward_bf16(uint16_t *out16, float *mean, float *rstd, const float *inp, const float *weight,
                            const float *bias, int N, int C);
void residual_layernorm_forward_bf16(float *x, uint16_t *out16, float *mean, float *rstd, const float *a,
                                     const float *b, const float *weight, const float *bias, int N, int C);
// out32[M,OUT] = inp @ weight^T + bias, and out16 = bf16(out32), stored strip by strip while in cache
void linear_forward_to_bf16(uint16_t *out16, float *out32, const float *inp, const uint16_t *inp16,
                            const float *weight, const float *bias, int M, int IN, int OUT);
// out[M,OUT] = inp16[M,IN] @ weight[OUT,IN]^T + bias
void linear_forward_bf16in(float *out, const uint16_t *inp16, const float *weight, const float *bias, int M, int IN,
                           int OUT);
// linear_bias_gelu_forward from a bf16 input, GELU(pre) stored as bf16
void linear_bias_gelu_forward_bf16(uint16_t *out16, float *pre, const uint16_t *inp16, const float *weight,
                                   const float *bias, int M, int IN, int OUT);
// linear_gelu_backward_dinp with the recomputed GELU stored as bf16
void linear_gelu_backward_dinp_bf16(float *dhidden, uint16_t *gelu16, const float *dout, const float *weight,
                                    const float *pre, int M, int IN, int OUT);
// linear_backward_set_dinp with the forward's input in bf16 (dinp may be NULL)
void linear_backward_set_dinp_bf16in(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const uint16_t *inp16, const float *weight, int M, int IN, int OUT);

// ---- residual: out[n] = a[n] + b[n]; backward da += dout, db += dout
void residual_forward(float *out, const float *a, const float *b, long n);
void residual_backward(float *da, float *db, const float *dout, long n);

// ---- layer scale: out[N,C] = inp * gamma[C]
void layerscale_forward(float *out, const float *inp, const float *gamma, int N, int C);
void layerscale_backward(float *dinp, float *dgamma, const float *dout, const float *inp, const float *gamma,
                         int N, int C);

// ---- multi-head self-attention, non-causal.
// qkv [B,T,3D] (q | k | v, each split into H heads of D/H) -> out [B,T,D];
// probs [B,H,T,T] (softmax(q k^T / sqrt(D/H))) is saved for backward.
//
// A RowSet restricts the queries to the token rows a caller will read (every
// key and value still takes part): image b's query rows are
// index[start[b] .. start[b+1]) (token positions, ascending). Then out is
// compact, [total,D] (row r is the r-th kept row), and image b's probs are
// [H, R_b, T] from start[b]*H*T on. rows == NULL: every row, the layout above.
typedef struct {
    const int *start;       // [B+1]
    const int32_t *index;   // [total]
    int total;
} RowSet;
// scratch: attention_scratch_floats(T, D) floats per OpenMP thread.
long attention_scratch_floats(int T, int D);
void attention_forward(float *out, float *probs, float *scratch, const float *qkv, const RowSet *rows, int B, int T,
                       int D, int H);
// dqkv [B,T,3D] is WRITTEN, not accumulated (every element is one head's
// q, k or v gradient; with rows, the q gradient of a row not kept is 0), so the
// caller need not zero it. dout has out's layout.
void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *probs,
                        const RowSet *rows, int B, int T, int D, int H);

// The same with qkv and out kept in bf16 (precision bf16): the same bits as attention_forward on the fp32
// qkv these were rounded from, each head's q, k, v expanded in the thread's scratch.
void attention_forward_bf16(uint16_t *out16, float *probs, float *scratch, const uint16_t *qkv16, const RowSet *rows,
                            int B, int T, int D, int H);
void attention_backward_bf16(float *dqkv, float *scratch, const float *dout, const uint16_t *qkv16, const float *probs,
                             const RowSet *rows, int B, int T, int D, int H);

// ---- patch embedding = patchify then linear with weight [D, C*P*P].
// images [B,C,H,W] -> patches [B, (H/P)*(W/P), C*P*P], each patch in (c,y,x) order.
void patchify(float *patches, const float *images, int B, int C, int H, int W, int P);
void unpatchify(float *images, const float *patches, int B, int C, int H, int W, int P);

// ---- mask-token substitution, in place on the patch embeddings emb [B,N,D]:
// emb[b,n,:] = mask_token where mask[b,n] != 0.
void mask_token_forward(float *emb, const float *mask_token, const uint8_t *mask, int B, int N, int D);
// dmask_token[D] += sum of demb over masked positions; demb there is zeroed.
void mask_token_backward(float *demb, float *dmask_token, const uint8_t *mask, int B, int N, int D);

// ---- cls token and position embedding: x[B,N+1,D]:
// x[b,0] = cls + pos[0]; x[b,1+n] = emb[b,n] + pos[1+n]
void cls_pos_forward(float *x, const float *emb, const float *cls, const float *pos, int B, int N, int D);
void cls_pos_backward(float *demb, float *dcls, float *dpos, const float *dx, int B, int N, int D);
// The same for windows of the position grid (multi-crop's local views): token n of
// image b takes position row pos_rows[b*N + n] (1-based, as pos's rows) instead of 1 + n
// (pos_rows NULL: 1 + n, cls_pos_forward). The backward has its own loop for the whole
// grid, parallel over positions; with windows several tokens share a row.
void cls_pos_window_forward(float *x, const float *emb, const float *cls, const float *pos, const int32_t *pos_rows,
                            int B, int N, int D);
void cls_pos_window_backward(float *demb, float *dcls, float *dpos, const float *dx, const int32_t *pos_rows, int B,
                             int N, int D);

// ---- mean pooling over tokens [start, T): x [B,T,D] -> out [B,D]
void meanpool_forward(float *out, const float *x, int B, int T, int D, int start);
void meanpool_backward(float *dx, const float *dout, int B, int T, int D, int start);

// ---- softmax cross-entropy with label smoothing eps (0: none): logits [N,K],
// labels [N] -> probs [N,K]; returns the mean over rows of -sum_k q_k log p_k
// with q = (1-eps) onehot + eps/K (torch's label_smoothing).
// Backward: dlogits += dloss * (probs - q) / N.
float softmax_xent_forward(float *probs, const float *logits, const int32_t *labels, int N, int K, float smoothing);
void softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels, int N, int K, float smoothing,
                           float dloss);
// The same against soft targets [N,K] (rows summing to 1; mixup / cutmix): probs [N,K];
// returns the mean over rows of -sum_k t_k log p_k. Backward: dlogits += dloss * (probs - t) / N.
float softmax_xent_soft_forward(float *probs, const float *logits, const float *targets, int N, int K);
void softmax_xent_soft_backward(float *dlogits, const float *probs, const float *targets, int N, int K, float dloss);

// ---- scored rows: position m of scored [M] is the flat patch b*N+n, token row b*T+1+n
// gather: rows [M,D] = src [B,T,D] at the scored token rows
// scatter_add: dst [B,T,D] at the scored token rows += rows [M,D] (positions distinct)
void gather_scored_rows(float *rows, const float *src, const int32_t *scored, int M, int N, int T, int D);
void scatter_add_scored_rows(float *dst, const float *rows, const int32_t *scored, int M, int N, int T, int D);

// ---- threads: OpenMP's, or one thread in a NO_OMP=1 build (callers need not include omp.h)
int kernel_max_threads(void);
int kernel_thread_num(void);     // this thread's number inside a parallel region, 0 outside
void kernel_set_threads(int n);  // omp_set_num_threads; nothing without OpenMP
