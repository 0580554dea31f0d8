// token_head.h: CCViT's token head. The encoder's final tokens at the scored
// (masked or replaced) positions go through Linear(D -> K); the loss is the
// cross-entropy against the clean patches' centroid ids.
#pragma once
#include <stdint.h>

#include "common.h"
#include "params.h"

typedef struct {
    int K, D, first;                  // first: the weight's index in the table ("pretrain.token_head.weight")
    float *w, *b, *gw, *gb;           // [K,D], [K] and their gradients
    float *in, *logits, *probs;       // [M,D], [M,K], [M,K]
    float *d_in, *d_logits;           // [M,D], [M,K]
} TokenHead;

void token_head_register(TokenHead *h, ParamTable *t, int K, int D);
void token_head_bind(TokenHead *h, const ParamTable *t);
void token_head_init(TokenHead *h, const ParamTable *t, uint64_t seed);
// Activations for up to M scored rows (called in an arena's counting and laying-out passes).
void token_head_layout(TokenHead *h, Arena *acts, Arena *grads, long M);
// final [B,T,D]; scored [M] flat positions b*N+n (ascending); ids [M] targets. Returns the mean CE.
double token_head_forward(TokenHead *h, const float *final, const int32_t *scored, const int32_t *ids, int M, int N,
                          int T);
// d_final [B,T,D] += d loss / d final at the scored rows, the loss scaled by dloss.
void token_head_backward(TokenHead *h, float *d_final, const int32_t *scored, const int32_t *ids, int M, int N, int T,
                         float dloss);
double token_head_forward_flops(const TokenHead *h, double M);
