// contrastive_head.c: the projector and NT-Xent / InfoNCE (contrastive_head.h).
#include "contrastive_head.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "distributed.h"
#include "kernels.h"

void projector_register(Projector *p, ParamTable *t, const char *prefix, int D, int H, int O) {
    memset(p, 0, sizeof *p);
    char name[160];
    p->D = D, p->H = H, p->O = O;
    snprintf(name, sizeof name, "%sfc1.weight", prefix);
    p->first = params_add(t, name, H, D, 0, 0);
    snprintf(name, sizeof name, "%sfc1.bias", prefix);
    params_add(t, name, H, 0, 0, 0);
    snprintf(name, sizeof name, "%sfc2.weight", prefix);
    params_add(t, name, O, H, 0, 0);
    snprintf(name, sizeof name, "%sfc2.bias", prefix);
    params_add(t, name, O, 0, 0, 0);
}

void projector_bind(Projector *p, const ParamTable *t) {
    int i = p->first;
    p->fc1_w = params_data(t, i), p->fc1_b = params_data(t, i + 1);
    p->fc2_w = params_data(t, i + 2), p->fc2_b = params_data(t, i + 3);
    p->gfc1_w = params_grad(t, i), p->gfc1_b = params_grad(t, i + 1);
    p->gfc2_w = params_grad(t, i + 2), p->gfc2_b = params_grad(t, i + 3);
}

void projector_init(Projector *p, const ParamTable *t, uint64_t seed) {
    params_init_trunc_normal(p->fc1_w, t, p->first, seed, 0.02);
    params_init_trunc_normal(p->fc2_w, t, p->first + 2, seed, 0.02);
}

void projector_layout(Projector *p, Arena *acts, Arena *grads, long R) {
    p->in = arena_floats(acts, R * p->D);
    p->h = arena_floats(acts, R * p->H);
    p->g = arena_floats(acts, R * p->H);
    p->u = arena_floats(acts, R * p->O);
    p->z = arena_floats(acts, R * p->O);
    p->norm = arena_floats(acts, R);
    if (!grads) return;
    p->d_in = arena_floats(grads, R * p->D);
    p->d_h = arena_floats(grads, R * p->H);
    p->d_u = arena_floats(grads, R * p->O);
    p->d_z = arena_floats(grads, R * p->O);
}

void projector_forward(Projector *p, const float *tokens, int R, int T) {
    int D = p->D, H = p->H, O = p->O;
    for (int i = 0; i < R; i++) memcpy(p->in + (long)i * D, tokens + (long)i * T * D, sizeof(float) * D);
    linear_bias_gelu_forward(p->g, p->h, p->in, p->fc1_w, p->fc1_b, R, D, H);  // h keeps the pre-activation
    linear_forward(p->u, p->g, p->fc2_w, p->fc2_b, R, H, O);
    for (int i = 0; i < R; i++) {  // z = u / max(|u|, 1e-12), as F.normalize
        const float *ui = p->u + (long)i * O;
        double ss = 0;
        for (int j = 0; j < O; j++) ss += (double)ui[j] * ui[j];
        float n = (float)fmax(sqrt(ss), 1e-12);
        p->norm[i] = n;
        for (int j = 0; j < O; j++) p->z[(long)i * O + j] = ui[j] / n;
    }
}

void projector_backward(Projector *p, float *d_tokens, int R, int T) {
    int D = p->D, H = p->H, O = p->O;
    for (int i = 0; i < R; i++) {  // through the L2 normalisation
        const float *z = p->z + (long)i * O, *dz = p->d_z + (long)i * O;
        float *du = p->d_u + (long)i * O;
        double dot = 0;
        for (int j = 0; j < O; j++) dot += (double)z[j] * dz[j];
        for (int j = 0; j < O; j++) du[j] = (dz[j] - z[j] * (float)dot) / p->norm[i];
    }
    linear_backward_set_dinp(p->d_h, p->gfc2_w, p->gfc2_b, p->d_u, p->g, p->fc2_w, R, H, O);
    gelu_backward_inplace(p->d_h, p->h, (long)R * H);
    linear_backward_set_dinp(p->d_in, p->gfc1_w, p->gfc1_b, p->d_h, p->in, p->fc1_w, R, D, H);
    for (int i = 0; i < R; i++) {
        float *out = d_tokens + (long)i * T * D;
        const float *in = p->d_in + (long)i * D;
        for (int c = 0; c < D; c++) out[c] += in[c];
    }
}

double projector_forward_flops(const Projector *p, double R) { return 2 * R * ((double)p->D * p->H + (double)p->H * p->O); }

// Row-wise softmax cross-entropy over the logits in probs [R,C], in place: row i's
// target is column pos_col[i]; column self_col[i] (NT-Xent: the row itself) takes no
// part, -1 for none (InfoNCE). Returns the mean loss over the R rows.
static double contrastive_rows(float *probs, float *row_loss, int R, int C, const int *self_col, const int *pos_col) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < R; i++) {
        float *s = probs + (long)i * C;
        int skip = self_col[i], pos = pos_col[i];
        float mx = -INFINITY;
        for (int j = 0; j < C; j++)
            if (j != skip && s[j] > mx) mx = s[j];
        double sum = 0;
        for (int j = 0; j < C; j++) sum += j == skip ? 0.0 : exp((double)s[j] - mx);
        // cppcheck-suppress invalidFunctionArg ; sum >= 1: the row's maximum adds exp(0)
        row_loss[i] = (float)(log(sum) + mx - s[pos]);
        for (int j = 0; j < C; j++) s[j] = j == skip ? 0.0f : (float)(exp((double)s[j] - mx) / sum);
    }
    double total = 0;
    for (int i = 0; i < R; i++) total += row_loss[i];
    return total / R;
}

void contrastive_head_register(ContrastiveHead *c, ParamTable *t, int D, int H, int O, float tau, int world) {
    memset(c, 0, sizeof *c);
    projector_register(&c->proj, t, "pretrain.projector.", D, H, O);
    c->tau = tau;
    c->world = world > 1 ? world : 1;
    c->rank = c->world > 1 ? dist_rank() : 0;
}

void contrastive_head_bind(ContrastiveHead *c, const ParamTable *t) { projector_bind(&c->proj, t); }

void contrastive_head_init(ContrastiveHead *c, const ParamTable *t, uint64_t seed) { projector_init(&c->proj, t, seed); }

void contrastive_head_layout(ContrastiveHead *c, Arena *acts, Arena *grads, long R) {
    long C = c->world * R, O = c->proj.O;
    projector_layout(&c->proj, acts, grads, R);
    c->sim = arena_floats(acts, R * C);
    c->R_max = R;
    c->row_loss = arena_floats(acts, R + 1);
    c->self_col = arena_bytes(acts, sizeof(int) * 2 * (size_t)R);
    c->pos_col = c->self_col + R;
    if (c->world == 1) return;
    c->others = arena_floats(acts, C * O);
    c->gathered = arena_floats(acts, C * O);
    c->d_gathered = arena_floats(grads, C * O + R * O);
}

// Row j of rank q's R rows (views groups of R / views) in the one-process order of all
// world * R rows: view v's rows of every rank, rank by rank.
static long global_row(const ContrastiveHead *c, int q, int j, int R, int views) {
    int g = R / views;
    if (g < 1) return j;  // no rows
    int v = j / g, i = j % g;
    return (long)v * c->world * g + (long)q * g + i;
}

// src [rows, O] in rank order -> dst in one-process order (to_global), or back.
static void reorder_rows(const ContrastiveHead *c, float *dst, const float *src, int R, int views, int to_global) {
    int O = c->proj.O;
    for (int q = 0; q < c->world; q++)
        for (int j = 0; j < R; j++) {
            long from = (long)q * R + j, to = global_row(c, q, j, R, views);
            if (!to_global) from = to, to = (long)q * R + j;
            memcpy(dst + to * O, src + from * O, sizeof(float) * O);
        }
}

double contrastive_head_forward(ContrastiveHead *c, const float *tokens, int R, int T, const float *keys) {
    Projector *p = &c->proj;
    int O = p->O, views = keys ? 1 : 2;
    c->R = R, c->C = c->world * R, c->with_keys = keys != NULL;
    projector_forward(p, tokens, R, T);
    const float *other = keys ? keys : p->z;  // InfoNCE: q k^T / tau; NT-Xent: z z^T / tau
    if (c->world > 1) {
        dist_allgather_floats(other, (size_t)R * O, c->gathered);
        reorder_rows(c, c->others, c->gathered, R, views, 1);
        other = c->others;
    }
    c->keys = keys ? other : NULL;
    c->RL = 0;
    for (int j = 0; j < R; j++) {
        long me = global_row(c, c->rank, j, R, views), g = (long)c->world * (R / views);
        c->self_col[j] = keys ? -1 : (int)me;
        c->pos_col[j] = keys ? (int)me : (int)(me < g ? me + g : me - g);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, c->C, O, 1.0f / c->tau, p->z, O, other, O, 0.0f, c->sim,
                c->C);
    return contrastive_rows(c->sim, c->row_loss, R, c->C, c->self_col, c->pos_col);
}

void contrastive_head_layout_local(ContrastiveHead *c, Arena *acts, Arena *grads, long RL) {
    long C = c->world * c->R_max;
    c->local = c->proj;  // the projector's dimensions and bound weights, with activations of its own below
    projector_layout(&c->local, acts, grads, RL);
    c->sim_local = arena_floats(acts, RL * C);
    c->row_loss_local = arena_floats(acts, RL + 1);
    c->local_self = arena_bytes(acts, sizeof(int) * 2 * (size_t)RL);
    c->local_pos = c->local_self + RL;
}

// The columns the rows were scored against: the teacher's keys, the gathered rows, or the rows.
static const float *columns(const ContrastiveHead *c) {
    return c->with_keys ? c->keys : c->world > 1 ? c->others : c->proj.z;
}

double contrastive_head_local_forward(ContrastiveHead *c, const float *tokens, float *d_tokens, int RL, int T,
                                      const int *pos_col) {
    Projector *l = &c->local, *p = &c->proj;
    c->RL = RL, c->T_local = T, c->d_local_tokens = d_tokens;
    projector_forward(l, tokens, RL, T);
    for (int i = 0; i < RL; i++) c->local_self[i] = -1, c->local_pos[i] = pos_col[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, RL, c->C, p->O, 1.0f / c->tau, l->z, p->O, columns(c), p->O,
                0.0f, c->sim_local, c->C);
    return contrastive_rows(c->sim_local, c->row_loss_local, RL, c->C, c->local_self, c->local_pos);
}

// d sim[i,j] = (p_ij - [j = pos(i)]) * s, in place over the probabilities.
static void softmax_rows_backward(float *sim, const int *pos_col, int R, int C, float s) {
    for (int i = 0; i < R; i++) {
        float *row = sim + (long)i * C;
        for (int j = 0; j < C; j++) row[j] *= s;
        row[pos_col[i]] -= s;
    }
}

// NT-Xent over gathered rows: d z_mine += the sum over ranks of d loss_r / d (my rows as negatives).
static void gathered_rows_backward(ContrastiveHead *c) {
    Projector *p = &c->proj;
    int R = c->R, C = c->C, O = p->O;
    float *d_others = c->d_gathered, *d_mine = c->d_gathered + (long)C * O;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, O, R, 1.0f / c->tau, c->sim, C, p->z, O, 0.0f, d_others, O);
    if (c->RL)  // the local rows' anchors pull on the columns too
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, O, c->RL, 1.0f / c->tau, c->sim_local, C, c->local.z, O,
                    1.0f, d_others, O);
    reorder_rows(c, c->gathered, d_others, R, 2, 0);
    dist_reduce_scatter_sum_floats(c->gathered, (size_t)R * O, d_mine);
    for (long i = 0; i < (long)R * O; i++) p->d_z[i] += d_mine[i];
}

void contrastive_head_backward(ContrastiveHead *c, float *d_tokens, int T, float scale) {
    Projector *p = &c->proj;
    int R = c->R, C = c->C, O = p->O;
    int RL = c->RL;
    float s = scale / (float)(R + RL);  // the loss is the mean over every anchor row
    softmax_rows_backward(c->sim, c->pos_col, R, C, s);
    if (RL) softmax_rows_backward(c->sim_local, c->local_pos, RL, C, s);
    const float *other = columns(c);
    // as anchors: dz = dS others / tau (InfoNCE's keys are constant: that is all)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, O, C, 1.0f / c->tau, c->sim, C, other, O, 0.0f, p->d_z, O);
    if (RL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, RL, O, C, 1.0f / c->tau, c->sim_local, C, other, O, 0.0f,
                    c->local.d_z, O);
    if (!c->with_keys && c->world == 1) {  // as negatives and positives: dz += dS^T z / tau
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, O, R, 1.0f / c->tau, c->sim, R, p->z, O, 1.0f, p->d_z,
                    O);
        if (RL)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, O, RL, 1.0f / c->tau, c->sim_local, R, c->local.z, O,
                        1.0f, p->d_z, O);
    }
    if (!c->with_keys && c->world > 1) gathered_rows_backward(c);
    projector_backward(p, d_tokens, R, T);
    if (RL) projector_backward(&c->local, c->d_local_tokens, RL, c->T_local);
}

double contrastive_head_forward_flops(const ContrastiveHead *c, double R) {
    return projector_forward_flops(&c->proj, R) + 2 * R * (R * c->world) * c->proj.O;
}
