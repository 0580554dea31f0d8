// step.c: one optimiser update (step.h).
#include "step.h"

#include <math.h>
#include <stdio.h>

#include "common.h"
#include "distributed.h"
#include "optim.h"

// The next batch with at least one image. An empty batch (every image skipped, a shard
// shorter than its manifest) has no loss to average (0/0) and is passed over.
static void next_batch(Stepper *s, Batch *b) {
    for (long empty_run = 0;; empty_run++) {
        if (!loader_next(s->loader, b)) fatal("data: the training loader ended unexpectedly");
        if (b->n > 0) return;
        if (empty_run > 2 * s->steps_per_epoch * s->accum_steps)
            fatal("data: %ld batches in a row had no usable image (two epochs); check data_train '%s' "
                  "and its manifest", empty_run, s->data_train);
        if (s->empty_batches++ == 0)
            warn("data: a batch at epoch %lld, step %lld had no usable image (a shard shorter than its "
                 "manifest, or every image skipped); such batches are passed over and counted",
                 (long long)b->epoch, (long long)b->step);
    }
}

// The name of the first non-finite loss, or NULL.
static const char *non_finite_loss(const Objective *o, const ObjectiveLosses *l, double *value) {
    *value = !isfinite(l->token) ? l->token : !isfinite(l->pixel) ? l->pixel : l->contrast;
    if (!isfinite(l->token)) return o->classify ? "classification cross-entropy" : "token cross-entropy";
    if (!isfinite(l->pixel)) return "pixel MSE";
    if (!isfinite(l->contrast)) return o->use_teacher ? "InfoNCE" : "NT-Xent";
    return NULL;
}

// One micro-batch forward and backward; 0, or -1 with s->err filled.
static int micro_step(Stepper *s, StepStats *st, long step, float w_contrast) {
    Objective *o = &s->model->obj;
    Batch b;
    double tw = now_seconds();
    next_batch(s, &b);
    double tc = now_seconds();
    st->data_wait_s += tc - tw;
    st->epoch = b.epoch;
    // each rank draws its own masks and drop path: the stream is (micro-step, rank)
    int64_t stream = *s->micro_steps * s->world + s->rank;
    ObjectiveLosses l = o->classify ? objective_classify_forward(o, b.view1, b.labels, b.n, stream)
                                    : objective_forward(o, b.view1, b.clean1, b.view2, b.n, stream, w_contrast);
    if (step == s->fault_step) l.token = NAN;
    double value;
    const char *bad = non_finite_loss(o, &l, &value);
    if (bad) {
        snprintf(s->err, sizeof s->err, "step %ld: the %s loss is %g; no update was applied", step, bad, value);
        return -1;
    }
    objective_backward(o, 1.0f / s->accum_steps);
    st->token += l.token / s->accum_steps;
    st->pixel += l.pixel / s->accum_steps;
    st->contrast += l.contrast / s->accum_steps;
    st->total += l.total / s->accum_steps;
    st->images += b.n;
    (*s->micro_steps)++;
    st->compute_s += now_seconds() - tc;
    return 0;
}

// Sum the ranks' gradients and images, average their losses.
static void reduce_ranks(Stepper *s, StepStats *st) {
    ParamTable *t = &s->model->params;
    int world = s->world;
    dist_allreduce_sum_floats(t->grad, s->reduced_floats);
    grad_scale(t, 1.0f / world);
    double agg[5] = {st->token, st->pixel, st->contrast, st->total, (double)st->images};
    dist_allreduce_sum_doubles(agg, 5);
    st->token = agg[0] / world, st->pixel = agg[1] / world, st->contrast = agg[2] / world, st->total = agg[3] / world;
    st->images = (long)agg[4];
}

StepStats train_step(Stepper *s, long step, double lr, float w_contrast, float teacher_momentum) {
    Model *m = s->model;
    StepStats st = {0};
    params_zero_grad(&m->params);
    for (int micro = 0; micro < s->accum_steps; micro++)
        if (micro_step(s, &st, step, w_contrast) != 0) {
            st.failed = 1;
            return st;
        }
    if (s->world > 1) reduce_ranks(s, &st);
    st.grad_norm = clip_grad_norm(&m->opt, &m->params, s->clip_grad);
    if (!isfinite(st.grad_norm)) {
        snprintf(s->err, sizeof s->err, "step %ld: the gradient norm is %g; no update was applied", step, st.grad_norm);
        st.failed = 1;
        return st;
    }
    st.clipped = s->clip_grad > 0 && st.grad_norm > s->clip_grad;
    adamw_step(&m->opt, &m->params, (float)lr);
    objective_teacher_update(&m->obj, teacher_momentum);
    return st;
}
