// vit.c: transformer blocks and the ViT encoder, forward and backward.
#include "vit.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "gemm_tiles.h"
#include "kernels.h"

// ---- blocks -------------------------------------------------------------------------

BlockDims block_dims(int D, int H, float mlp_ratio, int qkv_bias, float layer_scale_init) {
    BlockDims d = {D, H, (int)lroundf(D * mlp_ratio), qkv_bias, layer_scale_init != 0.0f};
    return d;
}

// Tensor order inside a block; block_bind relies on it.
enum { B_N1W, B_N1B, B_QKVW, B_QKVB, B_PROJW, B_PROJB, B_LS1, B_N2W, B_N2B, B_FC1W, B_FC1B, B_FC2W, B_FC2B, B_LS2 };

int block_register(ParamTable *t, const char *prefix, const BlockDims *d) {
    char name[PARAM_NAME_MAX];
    int D = d->D, Hd = d->hidden;
#define ADD(suffix, d0, d1) (snprintf(name, sizeof name, "%s%s", prefix, suffix), params_add(t, name, d0, d1, 0, 0))
    int first = ADD("norm1.weight", D, 0);
    ADD("norm1.bias", D, 0);
    ADD("attn.qkv.weight", 3 * D, D);
    if (d->qkv_bias) ADD("attn.qkv.bias", 3 * D, 0);
    ADD("attn.proj.weight", D, D);
    ADD("attn.proj.bias", D, 0);
    if (d->layer_scale) ADD("ls1.gamma", D, 0);
    ADD("norm2.weight", D, 0);
    ADD("norm2.bias", D, 0);
    ADD("mlp.fc1.weight", Hd, D);
    ADD("mlp.fc1.bias", Hd, 0);
    ADD("mlp.fc2.weight", D, Hd);
    ADD("mlp.fc2.bias", D, 0);
    if (d->layer_scale) ADD("ls2.gamma", D, 0);
#undef ADD
    return first;
}

static void block_bind_one(BlockWeights *w, float *(*get)(const ParamTable *, int), const ParamTable *t, int first,
                           const BlockDims *d) {
    int i = first;
    memset(w, 0, sizeof *w);
    w->norm1_w = get(t, i++);
    w->norm1_b = get(t, i++);
    w->qkv_w = get(t, i++);
    if (d->qkv_bias) w->qkv_b = get(t, i++);
    w->proj_w = get(t, i++);
    w->proj_b = get(t, i++);
    if (d->layer_scale) w->ls1 = get(t, i++);
    w->norm2_w = get(t, i++);
    w->norm2_b = get(t, i++);
    w->fc1_w = get(t, i++);
    w->fc1_b = get(t, i++);
    w->fc2_w = get(t, i++);
    w->fc2_b = get(t, i++);
    if (d->layer_scale) w->ls2 = get(t, i++);
}

void block_bind(BlockWeights *w, BlockWeights *g, const ParamTable *t, int first, const BlockDims *d) {
    block_bind_one(w, params_data, t, first, d);
    block_bind_one(g, params_grad, t, first, d);
}

void block_init(const BlockWeights *w, const ParamTable *t, int first, const BlockDims *d, uint64_t seed,
                float layer_scale_init) {
    int D = d->D, Hd = d->hidden;
    int qkv = first + 2, proj = qkv + 1 + d->qkv_bias;
    int fc1 = proj + 2 + d->layer_scale + 2, fc2 = fc1 + 2;
    params_fill_floats(w->norm1_w, D, 1.0f);
    params_fill_floats(w->norm2_w, D, 1.0f);
    params_init_trunc_normal(w->qkv_w, t, qkv, seed, 0.02);
    params_init_trunc_normal(w->proj_w, t, proj, seed, 0.02);
    params_init_trunc_normal(w->fc1_w, t, fc1, seed, 0.02);
    params_init_trunc_normal(w->fc2_w, t, fc2, seed, 0.02);
    if (d->layer_scale) {
        params_fill_floats(w->ls1, D, layer_scale_init);
        params_fill_floats(w->ls2, D, layer_scale_init);
    }
    (void)Hd;  // biases and norm biases stay zero from params_allocate
}

void block_layout(BlockActs *a, Arena *acts, const BlockDims *d, int B, int T) {
    long BT = (long)B * T;
    int D = d->D;
    a->ln1_mean = arena_floats(acts, BT);
    a->ln1_rstd = arena_floats(acts, BT);
    int bf16 = gemm_precision() != GEMM_FP32;  // qkv and attn in bf16 (BlockActs)
    a->qkv = bf16 ? NULL : arena_floats(acts, BT * 3 * D);
    a->qkv16 = bf16 ? arena_bytes(acts, BT * 3 * D * sizeof(uint16_t)) : NULL;
    a->probs = arena_floats(acts, (long)B * d->H * T * T);
    a->attn = bf16 ? NULL : arena_floats(acts, BT * D);
    a->attn16 = bf16 ? arena_bytes(acts, BT * D * sizeof(uint16_t)) : NULL;
    a->attn_proj = d->layer_scale ? arena_floats(acts, BT * D) : NULL;
    a->x_mid = arena_floats(acts, BT * D);
    a->ln2_mean = arena_floats(acts, BT);
    a->ln2_rstd = arena_floats(acts, BT);
    a->fc1 = arena_floats(acts, BT * d->hidden);
    a->mlp_out = d->layer_scale ? arena_floats(acts, BT * D) : NULL;
    a->out = arena_floats(acts, BT * D);
}

void block_scratch_layout(BlockScratch *s, Arena *grads, const BlockDims *d, int B, int T) {
    long BT = (long)B * T;
    int bf16 = gemm_precision() != GEMM_FP32;  // read only by products: in bf16 (BlockScratch)
    s->ln = bf16 ? NULL : arena_floats(grads, BT * d->D);
    s->gelu = bf16 ? NULL : arena_floats(grads, BT * d->hidden);
    s->ln16 = bf16 ? arena_bytes(grads, BT * d->D * sizeof(uint16_t)) : NULL;
    s->gelu16 = bf16 ? arena_bytes(grads, BT * d->hidden * sizeof(uint16_t)) : NULL;
    s->d_branch = arena_floats(grads, BT * d->D);
    s->d_norm = arena_floats(grads, BT * d->D);
    s->d_hidden = arena_floats(grads, BT * d->hidden);
    s->d_qkv = arena_floats(grads, BT * 3 * d->D);
    s->kept = arena_floats(grads, BT * d->D);
    s->attn_scratch = arena_floats(grads, (size_t)kernel_max_threads() * attention_scratch_floats(T, d->D));
}

// The image each row of x belongs to: T rows per image, or image b's kept rows.
static inline int row_image(const RowSet *rows, long r, int T, int B) {
    if (!rows) return (int)(r / T);
    int lo = 0, hi = B - 1;  // the last b with start[b] <= r
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (rows->start[mid] <= r) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// x[r,:] *= scale[image of row r]
static void scale_rows(float *x, const float *scale, const RowSet *rows, int B, int T, int D) {
    long n = rows ? rows->total : (long)B * T;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; r++) {
        float f = scale[row_image(rows, r, T, B)];
        for (int c = 0; c < D; c++) x[r * D + c] *= f;
    }
}

// dst[r,:] = src[r,:] * scale[image of row r]
static void scaled_copy_rows(float *dst, const float *src, const float *scale, const RowSet *rows, int B, int T,
                             int D) {
    long n = rows ? rows->total : (long)B * T;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; r++) {
        float f = scale[row_image(rows, r, T, B)];
        for (int c = 0; c < D; c++) dst[r * D + c] = src[r * D + c] * f;
    }
}

// to_full 1: full[b, index[r], :] = kept[r, :]; 0: the reverse gather.
static void copy_kept_rows(float *full, float *kept, const RowSet *rows, int B, int T, int D, int to_full) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        for (int r = rows->start[b]; r < rows->start[b + 1]; r++) {
            float *f = full + ((long)b * T + rows->index[r]) * D, *k = kept + (long)r * D;
            if (to_full) memcpy(f, k, sizeof(float) * D);
            else memcpy(k, f, sizeof(float) * D);
        }
}

// kept[r, :] += full[b, index[r], :]: the residual of the kept rows.
static void add_kept_rows(float *kept, const float *full, const RowSet *rows, int B, int T, int D) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        for (int r = rows->start[b]; r < rows->start[b + 1]; r++) {
            const float *f = full + ((long)b * T + rows->index[r]) * D;
            float *k = kept + (long)r * D;
            for (int c = 0; c < D; c++) k[c] += f[c];
        }
}

// s->ln (or s->ln16) = layernorm(x) with the block's statistics saved in mean, rstd
static void norm_forward(const BlockScratch *s, float *mean, float *rstd, const float *x, const float *w,
                         const float *b, int N, int D) {
    if (s->ln16) layernorm_forward_bf16(s->ln16, mean, rstd, x, w, b, N, D);
    else layernorm_forward(s->ln, mean, rstd, x, w, b, N, D);
}

// qkv = norm1 rows (in s->ln) @ qkv_w^T + qkv_b, then attention into attn; in bf16 storage the qkv product
// lands in s->d_qkv (free until the backward) and is kept as bf16 strip by strip.
static void attention_branch_forward(BlockActs *a, const BlockWeights *w, const BlockScratch *s, const BlockDims *d,
                                     const RowSet *rows, int B, int T) {
    int BT = B * T, D = d->D;
    if (!a->qkv16) {
        linear_forward(a->qkv, s->ln, w->qkv_w, w->qkv_b, BT, D, 3 * D);
        attention_forward(a->attn, a->probs, s->attn_scratch, a->qkv, rows, B, T, D, d->H);
        return;
    }
    if (gemm_precision() == GEMM_FP32)
        fatal("block_forward: activations laid out for precision bf16 run in fp32 (set the precision before allocating)");
    linear_forward_to_bf16(a->qkv16, s->d_qkv, s->ln, s->ln16, w->qkv_w, w->qkv_b, BT, D, 3 * D);
    attention_forward_bf16(a->attn16, a->probs, s->attn_scratch, a->qkv16, rows, B, T, D, d->H);
}

// dst = fc2(GELU(fc1(norm2 rows in s->ln))); a->fc1 keeps the pre-activation
static void mlp_forward(float *dst, BlockActs *a, const BlockWeights *w, const BlockScratch *s, int R, int D, int Hd) {
    if (s->ln16) {
        linear_bias_gelu_forward_bf16(s->gelu16, a->fc1, s->ln16, w->fc1_w, w->fc1_b, R, D, Hd);
        linear_forward_bf16in(dst, s->gelu16, w->fc2_w, w->fc2_b, R, Hd, D);
    } else {
        linear_bias_gelu_forward(s->gelu, a->fc1, s->ln, w->fc1_w, w->fc1_b, R, D, Hd);
        linear_forward(dst, s->gelu, w->fc2_w, w->fc2_b, R, Hd, D);
    }
}

static void proj_forward(float *dst, const BlockActs *a, const BlockWeights *w, int R, int D) {
    if (a->attn16) linear_forward_bf16in(dst, a->attn16, w->proj_w, w->proj_b, R, D, D);
    else linear_forward(dst, a->attn, w->proj_w, w->proj_b, R, D, D);
}

void block_forward(BlockActs *a, const BlockWeights *w, const BlockScratch *s, const BlockDims *d, const float *x_in,
                   const float *drop, const RowSet *rows, int B, int T) {
    int BT = B * T, D = d->D, Hd = d->hidden;
    int R = rows ? rows->total : BT;  // rows after attention: every token, or the kept ones (compact)
    // x_mid = x_in + ls1 * proj(attn(qkv(norm1(x_in)))); every token's k and v are needed
    norm_forward(s, a->ln1_mean, a->ln1_rstd, x_in, w->norm1_w, w->norm1_b, BT, D);
    attention_branch_forward(a, w, s, d, rows, B, T);
    if (d->layer_scale) {
        proj_forward(a->attn_proj, a, w, R, D);
        layerscale_forward(a->x_mid, a->attn_proj, w->ls1, R, D);
    } else {
        proj_forward(a->x_mid, a, w, R, D);
    }
    if (drop) scale_rows(a->x_mid, drop, rows, B, T, D);
    // out = x_mid + ls2 * fc2(gelu(fc1(norm2(x_mid))))
    if (rows) {
        add_kept_rows(a->x_mid, x_in, rows, B, T, D);
        norm_forward(s, a->ln2_mean, a->ln2_rstd, a->x_mid, w->norm2_w, w->norm2_b, R, D);
    } else if (s->ln16) {
        residual_layernorm_forward_bf16(a->x_mid, s->ln16, a->ln2_mean, a->ln2_rstd, a->x_mid, x_in, w->norm2_w,
                                        w->norm2_b, BT, D);
    } else {
        residual_layernorm_forward(a->x_mid, s->ln, a->ln2_mean, a->ln2_rstd, a->x_mid, x_in, w->norm2_w,
                                   w->norm2_b, BT, D);
    }
    float *mlp_dst = rows ? s->kept : a->out;  // compact rows are scattered into out at the end
    mlp_forward(d->layer_scale ? a->mlp_out : mlp_dst, a, w, s, R, D, Hd);
    if (d->layer_scale) layerscale_forward(mlp_dst, a->mlp_out, w->ls2, R, D);
    if (drop) scale_rows(mlp_dst, drop + B, rows, B, T, D);
    residual_forward(mlp_dst, mlp_dst, a->x_mid, (long)R * D);
    if (rows) {  // rows not kept pass x_in through: nothing downstream reads them
        memcpy(a->out, x_in, sizeof(float) * (size_t)BT * D);
        copy_kept_rows(a->out, s->kept, rows, B, T, D, 1);
    }
}

// The input gradient into a norm's output and the weight gradient of the layer that read it (s->ln or s->ln16).
static void norm_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const BlockScratch *s,
                                 const float *weight, int M, int IN, int OUT) {
    if (s->ln16) linear_backward_set_dinp_bf16in(dinp, dweight, dbias, dout, s->ln16, weight, M, IN, OUT);
    else linear_backward_set_dinp(dinp, dweight, dbias, dout, s->ln, weight, M, IN, OUT);
}

void block_backward(float *dres, const BlockWeights *g, const BlockScratch *s, const BlockActs *a,
                    const BlockWeights *w, const BlockDims *d, const float *x_in, const float *drop, const RowSet *rows,
                    int B, int T) {
    int BT = B * T, D = d->D, Hd = d->hidden;
    int R = rows ? rows->total : BT;
    size_t nD = sizeof(float) * (size_t)R * D;
    // d(out) of the rows the MLP saw: dres itself, or its kept rows gathered (the
    // others pass straight through to d(x_in), which dres already holds).
    float *dmid = dres;
    if (rows) {
        copy_kept_rows(dres, s->kept, rows, B, T, D, 0);
        dmid = s->kept;
    }
    // MLP branch: dmid holds d(out) = d(x_mid) through the residual, plus the branch.
    const float *d_mlp_out = dmid;
    if (drop) {  // d_norm is free until fc1's backward below
        scaled_copy_rows(s->d_norm, dmid, drop + B, rows, B, T, D);
        d_mlp_out = s->d_norm;
    }
    if (d->layer_scale) {
        memset(s->d_branch, 0, nD);
        layerscale_backward(s->d_branch, g->ls2, d_mlp_out, a->mlp_out, w->ls2, R, D);
        d_mlp_out = s->d_branch;
    }
    // d(hidden) first, so that recomputing GELU(fc1) (the forward did not keep it)
    // and the GELU backward share one pass; then fc2's weight gradient from it.
    if (s->gelu16) {
        linear_gelu_backward_dinp_bf16(s->d_hidden, s->gelu16, d_mlp_out, w->fc2_w, a->fc1, R, Hd, D);
        linear_backward_set_dinp_bf16in(NULL, g->fc2_w, g->fc2_b, d_mlp_out, s->gelu16, w->fc2_w, R, Hd, D);
    } else {
        linear_gelu_backward_dinp(s->d_hidden, s->gelu, d_mlp_out, w->fc2_w, a->fc1, R, Hd, D);
        linear_backward(NULL, g->fc2_w, g->fc2_b, d_mlp_out, s->gelu, w->fc2_w, R, Hd, D);
    }
    norm_forward(s, a->ln2_mean, a->ln2_rstd, a->x_mid, w->norm2_w, w->norm2_b, R, D);  // recompute
    norm_linear_backward(s->d_norm, g->fc1_w, g->fc1_b, s->d_hidden, s, w->fc1_w, R, D, Hd);
    layernorm_backward(dmid, g->norm2_w, g->norm2_b, s->d_norm, a->x_mid, w->norm2_w, a->ln2_mean, a->ln2_rstd,
                       R, D);
    // Attention branch: dmid now holds d(x_mid).
    const float *d_proj_out = dmid;
    if (drop) {  // d_qkv is free until the attention backward below
        scaled_copy_rows(s->d_qkv, dmid, drop, rows, B, T, D);
        d_proj_out = s->d_qkv;
    }
    if (d->layer_scale) {
        memset(s->d_branch, 0, nD);
        layerscale_backward(s->d_branch, g->ls1, d_proj_out, a->attn_proj, w->ls1, R, D);
        d_proj_out = s->d_branch;
    }
    if (a->attn16) {
        linear_backward_set_dinp_bf16in(s->d_norm, g->proj_w, g->proj_b, d_proj_out, a->attn16, w->proj_w, R, D, D);
        attention_backward_bf16(s->d_qkv, s->attn_scratch, s->d_norm, a->qkv16, a->probs, rows, B, T, D, d->H);
    } else {
        linear_backward_set_dinp(s->d_norm, g->proj_w, g->proj_b, d_proj_out, a->attn, w->proj_w, R, D, D);
        attention_backward(s->d_qkv, s->attn_scratch, s->d_norm, a->qkv, a->probs, rows, B, T, D, d->H);
    }
    if (rows) copy_kept_rows(dres, dmid, rows, B, T, D, 1);  // d(x_in) through the residual
    norm_forward(s, a->ln1_mean, a->ln1_rstd, x_in, w->norm1_w, w->norm1_b, BT, D);  // recompute
    norm_linear_backward(s->d_norm, g->qkv_w, g->qkv_b, s->d_qkv, s, w->qkv_w, BT, D, 3 * D);
    layernorm_backward(dres, g->norm1_w, g->norm1_b, s->d_norm, x_in, w->norm1_w, a->ln1_mean, a->ln1_rstd, BT, D);
}

// ---- the encoder ---------------------------------------------------------------------

const char *vit_config_error(const VitConfig *c) {
    static char msg[256];
    if (c->img_size <= 0 || c->patch_size <= 0 || c->img_size % c->patch_size != 0)
        snprintf(msg, sizeof msg, "img_size (%d) must be a positive multiple of patch_size (%d)", c->img_size,
                 c->patch_size);
    else if (c->in_chans != 1 && c->in_chans != 3)
        snprintf(msg, sizeof msg, "in_chans must be 1 or 3, got %d", c->in_chans);
    else if (c->embed_dim <= 0 || c->num_heads <= 0 || c->embed_dim % c->num_heads != 0)
        snprintf(msg, sizeof msg, "embed_dim (%d) must be a positive multiple of num_heads (%d)", c->embed_dim,
                 c->num_heads);
    else if (c->depth <= 0)
        snprintf(msg, sizeof msg, "depth must be positive, got %d", c->depth);
    else if (!(c->mlp_ratio > 0))
        snprintf(msg, sizeof msg, "mlp_ratio must be positive, got %g", c->mlp_ratio);
    else if (c->num_classes < 0)
        snprintf(msg, sizeof msg, "num_classes must be >= 0, got %d", c->num_classes);
    else
        return NULL;
    return msg;
}

// The table index of "<prefix><name>" (-1 if absent).
static int vit_find(const Vit *vit, const char *name) {
    char full[160];
    snprintf(full, sizeof full, "%s%s", vit->prefix, name);
    return params_find(vit->params, full);
}

static int vit_add(Vit *vit, const char *name, int d0, int d1, int d2, int d3) {
    char full[160];
    snprintf(full, sizeof full, "%s%s", vit->prefix, name);
    return params_add(vit->params, full, d0, d1, d2, d3);
}

void vit_register(Vit *vit, ParamTable *t, const VitConfig *cfg) { vit_register_prefixed(vit, t, cfg, ""); }

void vit_register_prefixed(Vit *vit, ParamTable *t, const VitConfig *cfg, const char *prefix) {
    const char *err = vit_config_error(cfg);
    if (err) fatal("model config: %s", err);
    memset(vit, 0, sizeof *vit);
    vit->cfg = *cfg;
    vit->params = t;
    if (strlen(prefix) >= sizeof vit->prefix) fatal("vit_register: prefix '%s' is too long", prefix);
    strcpy(vit->prefix, prefix);
    vit->grid = cfg->img_size / cfg->patch_size;
    vit->N = vit->grid * vit->grid;
    vit->T = vit->N + 1;
    vit->D = cfg->embed_dim;
    vit->patch_dim = cfg->in_chans * cfg->patch_size * cfg->patch_size;
    vit->bdims = block_dims(cfg->embed_dim, cfg->num_heads, cfg->mlp_ratio, cfg->qkv_bias, cfg->layer_scale_init);
    int D = vit->D, P = cfg->patch_size;
    vit->first_index = vit_add(vit, "cls_token", 1, 1, D, 0);
    vit_add(vit, "pos_embed", 1, vit->T, D, 0);
    vit_add(vit, "patch_embed.proj.weight", D, cfg->in_chans, P, P);
    vit_add(vit, "patch_embed.proj.bias", D, 0, 0, 0);
    if (cfg->use_mask_token) vit_add(vit, "mask_token", 1, 1, D, 0);
    vit->block_first = xcalloc(cfg->depth, sizeof(int), "block index");
    char block_prefix[160];
    for (int l = 0; l < cfg->depth; l++) {
        snprintf(block_prefix, sizeof block_prefix, "%sblocks.%d.", vit->prefix, l);
        vit->block_first[l] = block_register(t, block_prefix, &vit->bdims);
    }
    vit_add(vit, "norm.weight", D, 0, 0, 0);
    vit_add(vit, "norm.bias", D, 0, 0, 0);
    if (cfg->num_classes > 0) {
        char w[160], b[160];
        snprintf(w, sizeof w, "%shead.weight", vit->prefix);
        snprintf(b, sizeof b, "%shead.bias", vit->prefix);
        classifier_head_register(&vit->head, t, w, b, D, cfg->num_classes);
    }
    vit->last_index = t->count;
}

static void vit_bind_one(VitWeights *w, float *(*get)(const ParamTable *, int), const Vit *vit) {
    const ParamTable *t = vit->params;
    w->cls_token = get(t, vit_find(vit, "cls_token"));
    w->pos_embed = get(t, vit_find(vit, "pos_embed"));
    w->patch_w = get(t, vit_find(vit, "patch_embed.proj.weight"));
    w->patch_b = get(t, vit_find(vit, "patch_embed.proj.bias"));
    w->mask_token = vit->cfg.use_mask_token ? get(t, vit_find(vit, "mask_token")) : NULL;
    w->norm_w = get(t, vit_find(vit, "norm.weight"));
    w->norm_b = get(t, vit_find(vit, "norm.bias"));
}

void vit_bind(Vit *vit) {
    if (!vit->params->data) fatal("vit_bind: call params_allocate first");
    vit_bind_one(&vit->w, params_data, vit);
    vit_bind_one(&vit->g, params_grad, vit);
    vit->w.blocks = xcalloc(vit->cfg.depth, sizeof(BlockWeights), "block weights");
    vit->g.blocks = xcalloc(vit->cfg.depth, sizeof(BlockWeights), "block grads");
    for (int l = 0; l < vit->cfg.depth; l++)
        block_bind(&vit->w.blocks[l], &vit->g.blocks[l], vit->params, vit->block_first[l], &vit->bdims);
    if (vit->cfg.num_classes) classifier_head_bind(&vit->head, vit->params);
}

void vit_init_weights(Vit *vit, uint64_t seed) {
    const ParamTable *t = vit->params;
    int D = vit->D;
    Rng r;
    rng_seed(&r, seed, params_name_hash("cls_token"));
    for (int c = 0; c < D; c++) vit->w.cls_token[c] = (float)(1e-6 * rng_normal(&r));
    params_init_trunc_normal(vit->w.pos_embed, t, vit_find(vit, "pos_embed"), seed, 0.02);
    params_init_trunc_normal(vit->w.patch_w, t, vit_find(vit, "patch_embed.proj.weight"), seed, 0.02);
    params_fill_floats(vit->w.patch_b, D, 0.0f);
    if (vit->w.mask_token) params_init_trunc_normal(vit->w.mask_token, t, vit_find(vit, "mask_token"), seed, 0.02);
    for (int l = 0; l < vit->cfg.depth; l++)
        block_init(&vit->w.blocks[l], t, vit->block_first[l], &vit->bdims, seed, vit->cfg.layer_scale_init);
    params_fill_floats(vit->w.norm_w, D, 1.0f);
    params_fill_floats(vit->w.norm_b, D, 0.0f);
    if (vit->cfg.num_classes) classifier_head_init(&vit->head, t, seed);
}

static void vit_layout(Vit *vit, int B) {
    long BT = (long)B * vit->T;
    int D = vit->D, K = vit->cfg.num_classes;
    Arena *a = &vit->acts, *g = &vit->grads;
    vit->patches = arena_floats(a, (long)B * vit->N * vit->patch_dim);
    vit->emb = arena_floats(a, (long)B * vit->N * D);
    vit->mask = arena_bytes(a, (size_t)B * vit->N);
    vit->x0 = arena_floats(a, BT * D);
    for (int l = 0; l < vit->cfg.depth; l++) {
        // forward only: block l reads block l-1's output (the other set) and writes its own set
        if (vit->forward_only && l >= 2) vit->blocks[l] = vit->blocks[l % 2];
        else block_layout(&vit->blocks[l], a, &vit->bdims, B, vit->T);
    }
    vit->final = arena_floats(a, BT * D);
    vit->final_mean = arena_floats(a, BT);
    vit->final_rstd = arena_floats(a, BT);
    vit->drop_scale = arena_floats(a, (long)vit->cfg.depth * 2 * B);

    vit->dres = arena_floats(g, BT * D);
    vit->demb = arena_floats(g, (long)B * vit->N * D);
    if (K) classifier_head_layout(&vit->head, a, g, B, vit->T);
    block_scratch_layout(&vit->scratch, g, &vit->bdims, B, vit->T);
}

void vit_allocate_activations(Vit *vit, int max_batch) {
    vit->max_batch = max_batch;
    vit->blocks = xcalloc(vit->cfg.depth, sizeof(BlockActs), "block activations");
    vit_layout(vit, max_batch);  // counting pass
    arena_commit(&vit->acts, "activations");
    arena_commit(&vit->grads, "activation gradients");
    vit_layout(vit, max_batch);  // hand out the memory
}

void vit_allocate_forward_activations(Vit *vit, int max_batch) {
    vit->forward_only = 1;
    vit_allocate_activations(vit, max_batch);
}

size_t vit_activation_bytes(const Vit *vit) { return vit->acts.capacity + vit->grads.capacity; }

void vit_forward(Vit *vit, const float *images, const uint8_t *mask, int B) {
    if (B > vit->max_batch) fatal("vit_forward: batch %d exceeds the allocated %d", B, vit->max_batch);
    const VitConfig *c = &vit->cfg;
    int N = vit->N, T = vit->T, D = vit->D;
    patchify(vit->patches, images, B, c->in_chans, c->img_size, c->img_size, c->patch_size);
    linear_forward(vit->emb, vit->patches, vit->w.patch_w, vit->w.patch_b, B * N, vit->patch_dim, D);
    vit->has_mask = mask != NULL;
    if (mask) {
        if (!vit->w.mask_token) fatal("vit_forward: a mask was given but the model has no mask_token");
        memcpy(vit->mask, mask, (size_t)B * N);
        mask_token_forward(vit->emb, vit->w.mask_token, vit->mask, B, N, D);
    }
    cls_pos_window_forward(vit->x0, vit->emb, vit->w.cls_token, vit->w.pos_embed, vit->pos_rows, B, N, D);
    const float *x = vit->x0;
    for (int l = 0; l < c->depth; l++) {
        const float *drop = vit->drop_active ? vit->drop_scale + (long)l * 2 * vit->max_batch : NULL;
        const RowSet *rows = l == c->depth - 1 ? vit->last_rows : NULL;
        block_forward(&vit->blocks[l], &vit->w.blocks[l], &vit->scratch, &vit->bdims, x, drop, rows, B, T);
        x = vit->blocks[l].out;
    }
    layernorm_forward(vit->final, vit->final_mean, vit->final_rstd, x, vit->w.norm_w, vit->w.norm_b, B * T, D);
}

void vit_backward(Vit *vit, const float *dfinal, float *const *dblock, int B) {
    if (vit->forward_only) fatal("vit_backward: this model was allocated for forward passes only");
    const VitConfig *c = &vit->cfg;
    int N = vit->N, T = vit->T, D = vit->D, L = c->depth;
    long BTD = (long)B * T * D;
    memset(vit->dres, 0, sizeof(float) * BTD);
    if (dfinal)
        layernorm_backward(vit->dres, vit->g.norm_w, vit->g.norm_b, dfinal, vit->blocks[L - 1].out, vit->w.norm_w,
                           vit->final_mean, vit->final_rstd, B * T, D);
    if (vit->grads_ready) vit->grads_ready(vit->grads_ready_ctx, VIT_GRADS_TAIL);
    for (int l = L - 1; l >= 0; l--) {
        if (dblock && dblock[l]) residual_backward(vit->dres, NULL, dblock[l], BTD);
        const float *x_in = l > 0 ? vit->blocks[l - 1].out : vit->x0;
        const float *drop = vit->drop_active ? vit->drop_scale + (long)l * 2 * vit->max_batch : NULL;
        const RowSet *rows = l == L - 1 ? vit->last_rows : NULL;
        block_backward(vit->dres, &vit->g.blocks[l], &vit->scratch, &vit->blocks[l], &vit->w.blocks[l], &vit->bdims,
                       x_in, drop, rows, B, T);
        if (vit->grads_ready) vit->grads_ready(vit->grads_ready_ctx, l);
    }
    memset(vit->demb, 0, sizeof(float) * (size_t)B * N * D);
    if (vit->pos_rows)
        cls_pos_window_backward(vit->demb, vit->g.cls_token, vit->g.pos_embed, vit->dres, vit->pos_rows, B, N, D);
    else cls_pos_backward(vit->demb, vit->g.cls_token, vit->g.pos_embed, vit->dres, B, N, D);
    if (vit->has_mask) mask_token_backward(vit->demb, vit->g.mask_token, vit->mask, B, N, D);
    if (!vit->freeze_patch_embed)
        linear_backward(NULL, vit->g.patch_w, vit->g.patch_b, vit->demb, vit->patches, vit->w.patch_w, B * N,
                        vit->patch_dim, D);
    if (vit->grads_ready) vit->grads_ready(vit->grads_ready_ctx, VIT_GRADS_HEAD);
}

float vit_head_forward(Vit *vit, const int32_t *labels, int B, int pool) {
    if (!vit->cfg.num_classes) fatal("vit_head_forward: the model has no classification head (num_classes = 0)");
    return classifier_head_forward(&vit->head, vit->final, labels, B, vit->T, pool);
}

void vit_head_backward(Vit *vit, const int32_t *labels, int B, int pool, float dloss) {
    classifier_head_backward(&vit->head, labels, B, vit->T, pool, dloss);
}

void vit_sample_drop_path(Vit *vit, int B, uint64_t seed, int64_t step, int64_t first_image) {
    int L = vit->cfg.depth;
    vit->drop_active = vit->drop_path_rate > 0;
    if (!vit->drop_active) return;
    for (int b = 0; b < B; b++) {
        Rng r;  // drop-path draws have their own stream per (step, image)
        rng_seed_image(&r, seed ^ 0x64726f7070617468ULL, step, first_image + b);
        for (int l = 0; l < L; l++) {
            float rate = L > 1 ? vit->drop_path_rate * l / (L - 1) : vit->drop_path_rate;  // timm's linspace
            float keep = 1.0f - rate;
            float *s = vit->drop_scale + (long)l * 2 * vit->max_batch;
            for (int branch = 0; branch < 2; branch++) s[branch * B + b] = rng_uniform(&r) < keep ? 1.0f / keep : 0.0f;
        }
    }
}

double vit_patch_embed_flops_per_image(const VitConfig *c) {
    double P = c->patch_size, N = (double)(c->img_size / c->patch_size) * (c->img_size / c->patch_size);  // NOLINT(bugprone-integer-division): the patch grid is floor(img / patch), as the model builds it
    return 2 * N * c->embed_dim * c->in_chans * P * P;
}

double vit_forward_flops_per_image(const VitConfig *c) {
    double N = (double)(c->img_size / c->patch_size) * (c->img_size / c->patch_size);  // NOLINT(bugprone-integer-division): the patch grid is floor(img / patch), as the model builds it
    double T = N + 1, D = c->embed_dim, Hd = lround(D * c->mlp_ratio);
    double head = c->num_classes ? 2 * D * c->num_classes : 0;
    return vit_patch_embed_flops_per_image(c) + c->depth * block_forward_flops(T, T, D, Hd) + head;
}

double block_forward_flops(double T, double R, double D, double Hd) {
    return 2 * T * D * 3 * D      // qkv (every row: keys and values)
           + 2 * 2 * R * T * D     // scores and weighted sum of the kept queries
           + 2 * R * D * D         // proj
           + 2 * 2 * R * D * Hd;   // fc1, fc2
}

void vit_share(Vit *dst, const Vit *src, int img_size) {
    int P = src->cfg.patch_size;
    if (img_size < P || img_size > src->cfg.img_size || img_size % P)
        fatal("vit_share: a %d-pixel view must be a whole number of %d-pixel patches, at most the encoder's %d",
              img_size, P, src->cfg.img_size);
    memset(dst, 0, sizeof *dst);
    dst->cfg = src->cfg;
    dst->cfg.img_size = img_size;
    dst->cfg.num_classes = 0;
    dst->grid = img_size / P;
    dst->N = dst->grid * dst->grid;
    dst->T = dst->N + 1;
    dst->D = src->D, dst->patch_dim = src->patch_dim, dst->bdims = src->bdims;
    dst->params = src->params;
    dst->first_index = src->first_index, dst->last_index = src->last_index;
    memcpy(dst->prefix, src->prefix, sizeof dst->prefix);
    dst->block_first = src->block_first;
    dst->w = src->w, dst->g = src->g;
    dst->freeze_patch_embed = src->freeze_patch_embed;
    dst->drop_path_rate = src->drop_path_rate;
    dst->shares_weights = 1;
}

void vit_release(Vit *vit) {
    arena_free(&vit->acts);
    arena_free(&vit->grads);
    xfree(vit->blocks);
    vit->blocks = NULL;
    if (vit->shares_weights) return;
    xfree(vit->w.blocks);
    xfree(vit->g.blocks);
    xfree(vit->block_first);
}

ParamTable *vit_params(Vit *vit) { return vit->params; }

float *vit_final_tokens(Vit *vit) { return vit->final; }
float *vit_block_output(Vit *vit, int l) { return vit->blocks[l].out; }
float *vit_logits(Vit *vit) { return vit->head.logits; }
float *vit_head_dfinal(Vit *vit) { return vit->head.dfinal; }

// Layer index for layer-wise lr decay (BEiT): embeddings 0, blocks.i -> i+1,
// the final norm and the head depth+1.
static int layer_id(const char *name, int depth) {
    if (!strncmp(name, "blocks.", 7)) return atoi(name + 7) + 1;  // NOLINT(cert-err34-c): parameter names built by vit_register ("blocks.<l>.")
    if (!strcmp(name, "cls_token") || !strcmp(name, "pos_embed") || !strcmp(name, "mask_token") ||
        !strncmp(name, "patch_embed", 11))
        return 0;
    return depth + 1;
}

void vit_set_layer_decay(Vit *vit, double decay) {
    ParamTable *t = vit->params;
    int depth = vit->cfg.depth;
    for (int i = 0; i < t->count; i++)
        params_set_lr_scale(t, i, (float)pow(decay, depth + 1 - layer_id(t->info[i].name, depth)));
}

void vit_freeze_patch_embed(Vit *vit) {
    ParamTable *t = vit->params;
    t->info[vit_find(vit, "patch_embed.proj.weight")].frozen = 1;
    t->info[vit_find(vit, "patch_embed.proj.bias")].frozen = 1;
    vit->freeze_patch_embed = 1;
}

void vit_set_regularisation(Vit *vit, float drop_path_rate, float label_smoothing) {
    vit->drop_path_rate = drop_path_rate;
    vit->head.label_smoothing = label_smoothing;
}

float *vit_drop_scales(Vit *vit) { return vit->drop_scale; }

void vit_set_last_rows(Vit *vit, const RowSet *rows) { vit->last_rows = rows; }
