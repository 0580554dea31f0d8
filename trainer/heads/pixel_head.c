// pixel_head.c: the pixel head (pixel_head.h).
#include "pixel_head.h"

#include <string.h>

#include "kernels.h"

void pixel_head_register(PixelHead *h, ParamTable *t, const Vit *vit) {
    memset(h, 0, sizeof *h);
    int depth = vit->cfg.depth, D = vit->D;
    if (depth < 3) fatal("config: the pixel head reads block depth-3, so depth must be >= 3 (got %d)", depth);
    h->D = D, h->patch_dim = vit->patch_dim, h->depth = depth, h->mid_block = depth - 3;
    h->dims = vit->bdims;
    h->block_first[0] = block_register(t, "pretrain.pixel_head.blocks.0.", &h->dims);
    h->block_first[1] = block_register(t, "pretrain.pixel_head.blocks.1.", &h->dims);
    h->norm_first = params_add(t, "pretrain.pixel_head.norm.weight", D, 0, 0, 0);
    params_add(t, "pretrain.pixel_head.norm.bias", D, 0, 0, 0);
    h->proj_first = params_add(t, "pretrain.pixel_head.proj.weight", h->patch_dim, D, 0, 0);
    params_add(t, "pretrain.pixel_head.proj.bias", h->patch_dim, 0, 0, 0);
}

void pixel_head_bind(PixelHead *h, const ParamTable *t) {
    for (int i = 0; i < 2; i++) block_bind(&h->w[i], &h->g[i], t, h->block_first[i], &h->dims);
    h->norm_w = params_data(t, h->norm_first), h->norm_b = params_data(t, h->norm_first + 1);
    h->gnorm_w = params_grad(t, h->norm_first), h->gnorm_b = params_grad(t, h->norm_first + 1);
    h->proj_w = params_data(t, h->proj_first), h->proj_b = params_data(t, h->proj_first + 1);
    h->gproj_w = params_grad(t, h->proj_first), h->gproj_b = params_grad(t, h->proj_first + 1);
}

void pixel_head_init(PixelHead *h, const ParamTable *t, uint64_t seed, float layer_scale_init) {
    for (int i = 0; i < 2; i++) block_init(&h->w[i], t, h->block_first[i], &h->dims, seed, layer_scale_init);
    params_fill_floats(h->norm_w, h->D, 1.0f);
    params_init_trunc_normal(h->proj_w, t, h->proj_first, seed, 0.02);
}

void pixel_head_layout(PixelHead *h, Arena *acts, Arena *grads, int B, int T, long M, int V) {
    int D = h->D, d = h->patch_dim;
    h->x = arena_floats(acts, (long)B * T * D);
    for (int i = 0; i < 2; i++) block_layout(&h->blocks[i], acts, &h->dims, B, T);
    h->sel = arena_floats(acts, M * D);
    h->norm = arena_floats(acts, M * D);
    h->mean = arena_floats(acts, M);
    h->rstd = arena_floats(acts, M);
    h->pred = arena_floats(acts, M * d);
    h->d_x = arena_floats(grads, (long)B * T * D);
    h->d_sel = arena_floats(grads, M * D);
    h->d_norm = arena_floats(grads, M * D);
    h->d_pred = arena_floats(grads, M * d);
    h->d_last = arena_floats(grads, (long)V * B * T * D);
    h->d_mid = arena_floats(grads, (long)V * B * T * D);
}

double pixel_head_forward(PixelHead *h, Vit *vit, const RowSet *rows, const int32_t *scored, const float *target,
                          int M, int B) {
    int N = vit->N, T = vit->T, D = h->D, d = h->patch_dim;
    // CLS from the last block's output, patch tokens from block depth-3.
    const float *last = vit->blocks[h->depth - 1].out, *mid = vit->blocks[h->mid_block].out;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        memcpy(h->x + (long)b * T * D, last + (long)b * T * D, sizeof(float) * D);
        memcpy(h->x + ((long)b * T + 1) * D, mid + ((long)b * T + 1) * D, sizeof(float) * (T - 1) * D);
    }
    block_forward(&h->blocks[0], &h->w[0], &vit->scratch, &h->dims, h->x, NULL, NULL, B, T);
    block_forward(&h->blocks[1], &h->w[1], &vit->scratch, &h->dims, h->blocks[0].out, NULL, rows, B, T);
    gather_scored_rows(h->sel, h->blocks[1].out, scored, M, N, T, D);
    layernorm_forward(h->norm, h->mean, h->rstd, h->sel, h->norm_w, h->norm_b, M, D);
    linear_forward(h->pred, h->norm, h->proj_w, h->proj_b, M, D, d);
    double se = 0;
    for (long i = 0; i < (long)M * d; i++) {
        double e = (double)h->pred[i] - target[i];
        se += e * e;
    }
    return se / ((double)M * d);
}

void pixel_head_backward(PixelHead *h, Vit *vit, const RowSet *rows, const int32_t *scored, const float *target, int M,
                         int B, int V, float dloss, float **dblock) {
    int N = vit->N, T = vit->T, D = h->D, d = h->patch_dim;
    long VBTD = (long)V * B * T * D;
    float scale = 2.0f * dloss / ((float)M * d);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)M * d; i++) h->d_pred[i] = scale * (h->pred[i] - target[i]);
    linear_backward_set_dinp(h->d_norm, h->gproj_w, h->gproj_b, h->d_pred, h->norm, h->proj_w, M, D, d);
    memset(h->d_sel, 0, sizeof(float) * (size_t)M * D);
    layernorm_backward(h->d_sel, h->gnorm_w, h->gnorm_b, h->d_norm, h->sel, h->norm_w, h->mean, h->rstd, M, D);
    memset(h->d_x, 0, sizeof(float) * (size_t)B * T * D);
    scatter_add_scored_rows(h->d_x, h->d_sel, scored, M, N, T, D);
    block_backward(h->d_x, &h->g[1], &vit->scratch, &h->blocks[1], &h->w[1], &h->dims, h->blocks[0].out, NULL, rows, B,
                   T);
    block_backward(h->d_x, &h->g[0], &vit->scratch, &h->blocks[0], &h->w[0], &h->dims, h->x, NULL, NULL, B, T);
    memset(h->d_last, 0, sizeof(float) * VBTD);
    memset(h->d_mid, 0, sizeof(float) * VBTD);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        memcpy(h->d_last + (long)b * T * D, h->d_x + (long)b * T * D, sizeof(float) * D);
        memcpy(h->d_mid + ((long)b * T + 1) * D, h->d_x + ((long)b * T + 1) * D, sizeof(float) * (T - 1) * D);
    }
    dblock[h->depth - 1] = h->d_last;
    dblock[h->mid_block] = h->d_mid;
}

double pixel_head_forward_flops(const PixelHead *h, double B, double T, double S) {
    double D = h->D, Hp = h->dims.hidden;
    return B * (block_forward_flops(T, T, D, Hp) + block_forward_flops(T, S, D, Hp)) + 2 * B * S * D * h->patch_dim;
}
