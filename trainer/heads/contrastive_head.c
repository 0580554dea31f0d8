// contrastive_head.c: the projector and NT-Xent / InfoNCE (contrastive_head.h).
#include "contrastive_head.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

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

// Row-wise softmax cross-entropy over the logits in probs [R,R], in place: row
// i's target is its positive, column i + R/2 (mod R) with self_excluded (NT-Xent,
// where column i takes no part), else column i (InfoNCE). Returns the mean loss.
static double contrastive_rows(float *probs, float *row_loss, int R, int self_excluded) {
    int half = R / 2;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < R; i++) {
        float *s = probs + (long)i * R;
        int skip = self_excluded ? i : -1, pos = self_excluded ? (i < half ? i + half : i - half) : i;
        float mx = -INFINITY;
        for (int j = 0; j < R; j++)
            if (j != skip && s[j] > mx) mx = s[j];
        double sum = 0;
        for (int j = 0; j < R; j++) sum += j == skip ? 0.0 : exp((double)s[j] - mx);
        // cppcheck-suppress invalidFunctionArg ; sum >= 1: the row's maximum adds exp(0)
        row_loss[i] = (float)(log(sum) + mx - s[pos]);
        for (int j = 0; j < R; j++) s[j] = j == skip ? 0.0f : (float)(exp((double)s[j] - mx) / sum);
    }
    double total = 0;
    for (int i = 0; i < R; i++) total += row_loss[i];
    return total / R;
}

void contrastive_head_register(ContrastiveHead *c, ParamTable *t, int D, int H, int O, float tau) {
    memset(c, 0, sizeof *c);
    projector_register(&c->proj, t, "pretrain.projector.", D, H, O);
    c->tau = tau;
}

void contrastive_head_bind(ContrastiveHead *c, const ParamTable *t) { projector_bind(&c->proj, t); }

void contrastive_head_init(ContrastiveHead *c, const ParamTable *t, uint64_t seed) { projector_init(&c->proj, t, seed); }

void contrastive_head_layout(ContrastiveHead *c, Arena *acts, Arena *grads, long R) {
    projector_layout(&c->proj, acts, grads, R);
    c->sim = arena_floats(acts, R * R);
    c->row_loss = arena_floats(acts, R + 1);
}

double contrastive_head_forward(ContrastiveHead *c, const float *tokens, int R, int T, const float *keys) {
    Projector *p = &c->proj;
    int O = p->O;
    c->R = R, c->keys = keys, c->with_keys = keys != NULL;
    projector_forward(p, tokens, R, T);
    const float *other = keys ? keys : p->z;  // InfoNCE: q k^T / tau; NT-Xent: z z^T / tau
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, R, O, 1.0f / c->tau, p->z, O, other, O, 0.0f, c->sim, R);
    return contrastive_rows(c->sim, c->row_loss, R, !keys);
}

void contrastive_head_backward(ContrastiveHead *c, float *d_tokens, int T, float scale) {
    Projector *p = &c->proj;
    int R = c->R, O = p->O, half = R / 2;
    float s = scale / (float)R;
    // d sim[i,j] = (p_ij - [j = pos(i)]) / R, in place over the probabilities.
    for (int i = 0; i < R; i++) {
        float *row = c->sim + (long)i * R;
        for (int j = 0; j < R; j++) row[j] *= s;
        row[c->with_keys ? i : i < half ? i + half : i - half] -= s;
    }
    if (c->with_keys) {  // sim = q k^T / tau with k constant: dq = dS k / tau
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, O, R, 1.0f / c->tau, c->sim, R, c->keys, O, 0.0f,
                    p->d_z, O);
    } else {  // sim = z z^T / tau, so dz = (dS + dS^T) z / tau
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, O, R, 1.0f / c->tau, c->sim, R, p->z, O, 0.0f,
                    p->d_z, O);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, O, R, 1.0f / c->tau, c->sim, R, p->z, O, 1.0f, p->d_z,
                    O);
    }
    projector_backward(p, d_tokens, R, T);
}

double contrastive_head_forward_flops(const ContrastiveHead *c, double R) {
    return projector_forward_flops(&c->proj, R) + 2 * R * R * c->proj.O;
}
