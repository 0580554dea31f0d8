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
    // masks and drop path are drawn per (micro-step, global image): ranks draw one process's
    int64_t stream = *s->micro_steps;
    o->first_image = (int64_t)s->rank * s->batch_size;
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

// The floats of a part of the table (vit.h's VIT_GRADS_*), whose gradients are final.
static void part_range(const Stepper *s, int part, size_t *from, size_t *to) {
    const ParamTable *t = &s->model->params;
    const Vit *v = &s->model->vit;
    int L = v->cfg.depth, norm = params_find(t, "norm.weight");
    size_t tail = t->info[norm].offset;
    if (part == VIT_GRADS_TAIL) *from = tail, *to = s->reduced_floats;
    else if (part == VIT_GRADS_HEAD) *from = 0, *to = t->info[v->block_first[0]].offset;
    else *from = t->info[v->block_first[part]].offset, *to = part + 1 < L ? t->info[v->block_first[part + 1]].offset : tail;
}

// vit_backward's grads_ready: start this part's reduction, move the others on.
static void reduce_part(void *ctx, int part) {
    Stepper *s = ctx;
    size_t from, to;
    part_range(s, part, &from, &to);
    dist_sum_start(s->sum, s->model->params.grad + from, to - from);
    dist_sum_poll(s->sum);
}

// Sum the ranks' gradients (started during the backward pass when overlapping) and
// images, average their losses.
static void reduce_ranks(Stepper *s, StepStats *st) {
    ParamTable *t = &s->model->params;
    int world = s->world;
    if (!s->overlap) dist_sum_start(s->sum, t->grad, s->reduced_floats);
    dist_sum_wait(s->sum, "the gradient reduction");
    grad_scale(t, 1.0f / world);
    double agg[5 + SKIP_NUM_REASONS] = {st->token, st->pixel, st->contrast, st->total, (double)st->images};
    for (int k = 0; k < SKIP_NUM_REASONS; k++) agg[5 + k] = (double)st->skipped[k];
    dist_allreduce_sum_doubles(agg, 5 + SKIP_NUM_REASONS);
    st->token = agg[0] / world, st->pixel = agg[1] / world, st->contrast = agg[2] / world, st->total = agg[3] / world;
    st->images = (long)agg[4];
    for (int k = 0; k < SKIP_NUM_REASONS; k++) st->skipped[k] = (long)agg[5 + k];
}

void stepper_release(Stepper *s) {
    dist_sum_free(s->sum);
    s->sum = NULL;
}

StepStats train_step(Stepper *s, long step, double lr, float w_contrast, float teacher_momentum) {
    Model *m = s->model;
    StepStats st = {0};
    params_zero_grad(&m->params);
    if (s->world > 1 && !s->sum) s->sum = dist_sum_create(s->reduced_floats);
    double comm0 = dist_comm_seconds();
    Vit *v = &m->vit;
    for (int micro = 0; micro < s->accum_steps; micro++) {
        int last = micro == s->accum_steps - 1;
        if (last && s->overlap && s->world > 1) v->grads_ready = reduce_part, v->grads_ready_ctx = s;
        int rc = micro_step(s, &st, step, w_contrast);
        v->grads_ready = NULL;
        if (rc != 0) {  // before any backward: no reduction of this rank's is in flight
            st.failed = 1;
            return st;
        }
    }
    for (int k = 0; k < SKIP_NUM_REASONS; k++) st.skipped[k] = (long)loader_skipped(s->loader, (SkipReason)k);
    if (s->world > 1) reduce_ranks(s, &st);
    st.comm_s = dist_comm_seconds() - comm0;
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
