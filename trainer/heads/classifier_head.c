// classifier_head.c: the classification head (classifier_head.h).
#include "classifier_head.h"

#include <string.h>

#include "kernels.h"

void classifier_head_register(ClassifierHead *h, ParamTable *t, const char *name_weight, const char *name_bias, int D,
                              int K) {
    memset(h, 0, sizeof *h);
    h->D = D, h->K = K;
    h->first = params_add(t, name_weight, K, D, 0, 0);
    params_add(t, name_bias, K, 0, 0, 0);
}

void classifier_head_bind(ClassifierHead *h, const ParamTable *t) {
    h->w = params_data(t, h->first), h->b = params_data(t, h->first + 1);
    h->gw = params_grad(t, h->first), h->gb = params_grad(t, h->first + 1);
}

void classifier_head_init(ClassifierHead *h, const ParamTable *t, uint64_t seed) {
    params_init_trunc_normal(h->w, t, h->first, seed, 0.02);
    params_fill_floats(h->b, h->K, 0.0f);
}

void classifier_head_layout(ClassifierHead *h, Arena *acts, Arena *grads, int B, int T) {
    h->features = arena_floats(acts, (long)B * h->D);
    h->logits = arena_floats(acts, (long)B * h->K);
    h->probs = arena_floats(acts, (long)B * h->K);
    h->dfinal = arena_floats(grads, (long)B * T * h->D);
    h->dfeatures = arena_floats(grads, (long)B * h->D);
    h->dlogits = arena_floats(grads, (long)B * h->K);
}

float classifier_head_forward(ClassifierHead *h, const float *final, const int32_t *labels, int B, int T, int pool) {
    int D = h->D, K = h->K;
    if (pool)
        meanpool_forward(h->features, final, B, T, D, 1);
    else
        for (int b = 0; b < B; b++) memcpy(h->features + (long)b * D, final + (long)b * T * D, sizeof(float) * D);
    linear_forward(h->logits, h->features, h->w, h->b, B, D, K);
    if (h->targets) return softmax_xent_soft_forward(h->probs, h->logits, h->targets, B, K);
    return softmax_xent_forward(h->probs, h->logits, labels, B, K, h->label_smoothing);
}

void classifier_head_backward(ClassifierHead *h, const int32_t *labels, int B, int T, int pool, float dloss) {
    int D = h->D, K = h->K;
    memset(h->dlogits, 0, sizeof(float) * (size_t)B * K);
    if (h->targets) softmax_xent_soft_backward(h->dlogits, h->probs, h->targets, B, K, dloss);
    else softmax_xent_backward(h->dlogits, h->probs, labels, B, K, h->label_smoothing, dloss);
    memset(h->dfeatures, 0, sizeof(float) * (size_t)B * D);
    linear_backward(h->dfeatures, h->gw, h->gb, h->dlogits, h->features, h->w, B, D, K);
    memset(h->dfinal, 0, sizeof(float) * (size_t)B * T * D);
    if (pool)
        meanpool_backward(h->dfinal, h->dfeatures, B, T, D, 1);
    else
        for (int b = 0; b < B; b++) memcpy(h->dfinal + (long)b * T * D, h->dfeatures + (long)b * D, sizeof(float) * D);
}
