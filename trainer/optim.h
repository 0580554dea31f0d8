// optim.h: AdamW over the flat parameter arena, the lr schedule and global-norm
// gradient clipping. Matches torch.optim.AdamW and clip_grad_norm_.
#pragma once
#include "params.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
    float *m, *v;            // optimizer arenas, laid out like ParamTable.data
    long step;               // updates applied so far
    size_t total;
    double *norm_partials;   // fixed chunking for a thread-count independent norm
    int norm_chunks;
} AdamW;

void adamw_init(AdamW *opt, const ParamTable *t, float beta1, float beta2, float eps, float weight_decay);
void adamw_free(AdamW *opt);
// One update of every non-frozen tensor at lr * its lr_scale; decays only
// tensors with weight_decay set.
void adamw_step(AdamW *opt, ParamTable *t, float lr);

// sqrt(sum of squared gradients), reduced in a fixed order (float64).
double grad_global_norm(AdamW *opt, const ParamTable *t);
// Scale gradients so their global norm is at most max_norm (as clip_grad_norm_:
// coef = max_norm / (norm + 1e-6), applied when < 1). Returns the norm before clipping.
double clip_grad_norm(AdamW *opt, ParamTable *t, double max_norm);
// Multiply every gradient by s (gradient accumulation, loss scaling).
void grad_scale(ParamTable *t, float s);

// Linear warmup from base/warmup to base over `warmup` steps, then cosine to min_lr at `total`.
double lr_at_step(long step, double base_lr, double min_lr, long warmup, long total);
// The EMA teacher's momentum after update `step` of `total`: m0 throughout, or
// (cosine) from m0 up to 1 along a half cosine (BYOL, DINO):
// 1 - (1 - m0) (cos(pi step / total) + 1) / 2.
double ema_momentum_at(long step, double m0, long total, int cosine);
