// optim.c: AdamW, clipping, schedule.
#include "optim.h"

#include <math.h>
#include <string.h>

#include "common.h"

#define NORM_CHUNK 65536

void adamw_init(AdamW *opt, const ParamTable *t, float beta1, float beta2, float eps, float weight_decay) {
    memset(opt, 0, sizeof *opt);
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    opt->total = t->total;
    opt->m = xcalloc(t->total, sizeof(float), "AdamW m");
    opt->v = xcalloc(t->total, sizeof(float), "AdamW v");
    opt->norm_chunks = (int)((t->total + NORM_CHUNK - 1) / NORM_CHUNK);
    opt->norm_partials = xcalloc(opt->norm_chunks + 1, sizeof(double), "grad norm partials");
}

void adamw_free(AdamW *opt) {
    xfree(opt->m);
    xfree(opt->v);
    xfree(opt->norm_partials);
    memset(opt, 0, sizeof *opt);
}

void adamw_step(AdamW *opt, ParamTable *t, float lr) {
    opt->step++;
    // As torch: p *= 1 - lr*wd; m, v updated; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
    double bc1 = 1.0 - pow(opt->beta1, (double)opt->step);
    double bc2 = 1.0 - pow(opt->beta2, (double)opt->step);
    float bc2_sqrt = (float)sqrt(bc2);
    float b1 = opt->beta1, b2 = opt->beta2, one_b1 = 1.0f - b1, one_b2 = 1.0f - b2, eps = opt->eps;
#pragma omp parallel
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *info = &t->info[i];
        if (info->frozen) continue;
        float lr_t = lr * info->lr_scale;  // a tensor's own lr, as a torch param group with that lr
        float step_size = (float)(lr_t / bc1);
        float decay = info->weight_decay ? 1.0f - lr_t * opt->weight_decay : 1.0f;
        float *p = t->data + info->offset, *g = t->grad + info->offset;
        float *m = opt->m + info->offset, *v = opt->v + info->offset;
#pragma omp for schedule(static) nowait
        for (size_t j = 0; j < info->numel; j++) {
            p[j] *= decay;
            m[j] = m[j] * b1 + one_b1 * g[j];
            v[j] = v[j] * b2 + one_b2 * g[j] * g[j];
            p[j] -= step_size * m[j] / (sqrtf(v[j]) / bc2_sqrt + eps);
        }
    }
}

double grad_global_norm(AdamW *opt, const ParamTable *t) {
    const float *g = t->grad;
    size_t total = t->total;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < opt->norm_chunks; c++) {
        size_t lo = (size_t)c * NORM_CHUNK, hi = lo + NORM_CHUNK < total ? lo + NORM_CHUNK : total;
        double s = 0.0;
        for (size_t j = lo; j < hi; j++) s += (double)g[j] * g[j];
        opt->norm_partials[c] = s;
    }
    double s = 0.0;
    for (int c = 0; c < opt->norm_chunks; c++) s += opt->norm_partials[c];
    return sqrt(s);
}

void grad_scale(ParamTable *t, float s) {
    float *g = t->grad;
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < t->total; j++) g[j] *= s;
}

double clip_grad_norm(AdamW *opt, ParamTable *t, double max_norm) {
    double norm = grad_global_norm(opt, t);
    double coef = max_norm / (norm + 1e-6);
    if (max_norm > 0 && coef < 1.0) grad_scale(t, (float)coef);
    return norm;
}

double ema_momentum_at(long step, double m0, long total, int cosine) {
    if (!cosine || total <= 0) return m0;
    double progress = step >= total ? 1.0 : (double)step / (double)total;
    return 1.0 - (1.0 - m0) * (cos(M_PI * progress) + 1.0) / 2.0;
}

double lr_at_step(long step, double base_lr, double min_lr, long warmup, long total) {
    if (step < warmup) return base_lr * (double)(step + 1) / (double)warmup;
    if (total <= warmup) return base_lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    if (progress > 1.0) progress = 1.0;
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + cos(M_PI * progress));
}
