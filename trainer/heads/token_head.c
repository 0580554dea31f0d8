// token_head.c: the token head (token_head.h).
#include "token_head.h"

#include <string.h>

#include "kernels.h"

void token_head_register(TokenHead *h, ParamTable *t, int K, int D) {
    memset(h, 0, sizeof *h);
    h->K = K, h->D = D;
    h->first = params_add(t, "pretrain.token_head.weight", K, D, 0, 0);
    params_add(t, "pretrain.token_head.bias", K, 0, 0, 0);
}

void token_head_bind(TokenHead *h, const ParamTable *t) {
    h->w = params_data(t, h->first), h->b = params_data(t, h->first + 1);
    h->gw = params_grad(t, h->first), h->gb = params_grad(t, h->first + 1);
}

void token_head_init(TokenHead *h, const ParamTable *t, uint64_t seed) {
    params_init_trunc_normal(h->w, t, h->first, seed, 0.02);
}

void token_head_layout(TokenHead *h, Arena *acts, Arena *grads, long M) {
    h->in = arena_floats(acts, M * h->D);
    h->logits = arena_floats(acts, M * h->K);
    h->probs = arena_floats(acts, M * h->K);
    h->d_in = arena_floats(grads, M * h->D);
    h->d_logits = arena_floats(grads, M * h->K);
}

double token_head_forward(TokenHead *h, const float *final, const int32_t *scored, const int32_t *ids, int M, int N,
                          int T) {
    gather_scored_rows(h->in, final, scored, M, N, T, h->D);
    linear_forward(h->logits, h->in, h->w, h->b, M, h->D, h->K);
    return softmax_xent_forward(h->probs, h->logits, ids, M, h->K, 0.0f);
}

void token_head_backward(TokenHead *h, float *d_final, const int32_t *scored, const int32_t *ids, int M, int N, int T,
                         float dloss) {
    memset(h->d_logits, 0, sizeof(float) * (size_t)M * h->K);
    softmax_xent_backward(h->d_logits, h->probs, ids, M, h->K, 0.0f, dloss);
    linear_backward_set_dinp(h->d_in, h->gw, h->gb, h->d_logits, h->in, h->w, M, h->D, h->K);
    scatter_add_scored_rows(d_final, h->d_in, scored, M, N, T, h->D);
}

double token_head_forward_flops(const TokenHead *h, double M) { return 2 * M * h->D * h->K; }
