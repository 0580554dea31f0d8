// classifier_head.h: the classification head for fine-tuning (timm's "head"):
// pooled final tokens (mean of the patch tokens, or CLS) -> Linear(D -> K), softmax
// cross-entropy with label smoothing. It lives in the encoder's table after the
// final norm, so checkpoints and the timm export see it as timm does.
#pragma once
#include <stdint.h>

#include "common.h"
#include "params.h"

typedef struct {
    int D, K, first;                       // first: "head.weight"'s index in the table
    float *w, *b, *gw, *gb;                // [K,D], [K]
    float label_smoothing;
    const float *targets;                  // [B,K] soft targets (mixup / cutmix) instead of the labels; NULL: labels
    float *features, *logits, *probs;      // [B,D], [B,K], [B,K]
    float *dfeatures, *dlogits, *dfinal;   // [B,D], [B,K], [B,T,D]
} ClassifierHead;

// name_weight / name_bias: the tensors' full names (the encoder's prefix applied).
void classifier_head_register(ClassifierHead *h, ParamTable *t, const char *name_weight, const char *name_bias, int D,
                              int K);
void classifier_head_bind(ClassifierHead *h, const ParamTable *t);
void classifier_head_init(ClassifierHead *h, const ParamTable *t, uint64_t seed);
void classifier_head_layout(ClassifierHead *h, Arena *acts, Arena *grads, int B, int T);
// final [B,T,D]; pool 1: mean of tokens 1..T-1, 0: CLS. Returns the mean CE over labels [B]
// (or against h->targets when set).
float classifier_head_forward(ClassifierHead *h, const float *final, const int32_t *labels, int B, int T, int pool);
// Fills h->dfinal [B,T,D] with d (dloss * loss) / d final; parameter gradients accumulate.
void classifier_head_backward(ClassifierHead *h, const int32_t *labels, int B, int T, int pool, float dloss);
