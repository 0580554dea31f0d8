// objective.c: CCViT masked modeling (token CE + pixel MSE) and NT-Xent.
#include "objective.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "distributed.h"
#include "erasing.h"
#include "kernels.h"
#include "masking.h"
#include "model.h"

#define MASK_STREAM_SALT 0x6d61736b696e6700ULL  // "masking": keeps mask draws apart from init draws
#define LOCAL_STREAM_SALT 0x6c6f63616c000000ULL  // "local": multi-crop window draws

int objective_views(const ObjectiveConfig *cfg) { return cfg->w_contrast > 0 && !(cfg->teacher_momentum > 0) ? 2 : 1; }
int objective_loader_views(const ObjectiveConfig *cfg) { return cfg->w_contrast > 0 ? 2 : 1; }

#define TEACHER_PREFIX "pretrain.teacher."

// ---- registration ------------------------------------------------------------------

void objective_register(Objective *o, Vit *vit, Tokenizer *tok, const ObjectiveConfig *cfg) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->vit = vit;
    o->tok = tok;
    o->params = vit->params;
    const VitConfig *vc = &vit->cfg;
    int N = vit->N, D = vit->D;
    o->patch_dim = vit->patch_dim;
    o->depth = vc->depth;
    o->use_token = cfg->w_token > 0;
    o->use_pixel = cfg->w_pixel > 0;
    o->use_contrast = cfg->w_contrast > 0;
    o->views = objective_views(cfg);
    o->corrupt = o->use_token || o->use_pixel;
    if (!o->use_token && !o->use_pixel && !o->use_contrast)
        fatal("config: w_token, w_pixel and w_contrast are all 0; at least one loss must be on");
    o->n_mask = (int)lround(cfg->mask_ratio * N);
    o->n_replace = (int)lround(cfg->replace_ratio * N);
    if (o->corrupt) {
        if (o->n_mask + o->n_replace == 0)
            fatal("config: mask_ratio and replace_ratio select no patch, so the token/pixel losses are empty");
        if (o->n_mask + o->n_replace >= N)  // lround can reach N below a ratio of 1
            fatal("config: mask_ratio %g and replace_ratio %g corrupt %d + %d of the %d patches: the encoder would "
                  "see no clean patch; lower them", cfg->mask_ratio, cfg->replace_ratio, o->n_mask, o->n_replace, N);
        if (!vc->use_mask_token) fatal("objective: the encoder was built without a mask_token");
        if (!tok && (o->use_token || o->n_replace > 0))
            fatal("objective: the token loss and centroid replacement need a tokenizer");
    }
    if (cfg->mask_both_views && !vc->use_mask_token) fatal("objective: mask_both_views needs a mask_token");
    if (cfg->mask_both_views && o->n_mask >= N)
        fatal("config: mask_ratio %g masks all %d patches of view2 (mask_both_views)", cfg->mask_ratio, N);
    if (tok) tokenizer_check(tok, vc->patch_size, vc->in_chans, "the model (patch_size, in_chans)");
    o->K = tok ? tok->k : 0;
    ParamTable *t = o->params;
    if (o->use_token) token_head_register(&o->token, t, o->K, D);
    if (o->use_pixel) pixel_head_register(&o->pixel, t, vit);
    if (o->use_contrast)
        contrastive_head_register(&o->contrast, t, D, cfg->proj_hidden, cfg->proj_dim, cfg->temperature,
                                  cfg->negatives_global ? dist_world() : 1);
    if (cfg->teacher_momentum > 0 && !o->use_contrast)
        fatal("config: teacher_momentum %g needs the contrastive term (w_contrast > 0)", cfg->teacher_momentum);
    o->use_teacher = o->use_contrast && cfg->teacher_momentum > 0;
    if (o->use_teacher) {
        if (!(cfg->teacher_momentum < 1)) fatal("config: teacher_momentum must be below 1 (got %g)", cfg->teacher_momentum);
        if (cfg->mask_both_views)
            fatal("config: mask_both_views masks the student's view2, which teacher_momentum > 0 does not have "
                  "(the teacher sees view2 whole); set one of them");
        o->teacher = xcalloc(1, sizeof(EmaTeacher), "teacher");
        ema_teacher_register(o->teacher, t, vc, cfg->proj_hidden, cfg->proj_dim);
    }
    o->n_local = o->use_contrast ? cfg->local_crops : 0;
    if (cfg->local_crops > 0 && !o->use_contrast)
        fatal("config: local_crops %d needs the contrastive term (w_contrast > 0)", cfg->local_crops);
    if (o->n_local) {
        int S = cfg->local_crop_size, P = vc->patch_size;
        if (S < P || S % P || S >= vc->img_size)
            fatal("config: local_crop_size %d must be a multiple of patch_size %d below img_size %d", S, P, vc->img_size);
    }
}

void objective_register_classifier(Objective *o, Vit *vit, uint64_t seed) {
    memset(o, 0, sizeof *o);
    if (vit->cfg.num_classes < 1) fatal("objective: classification needs an encoder with num_classes >= 1");
    o->vit = vit;
    o->params = vit->params;
    o->classify = 1;
    o->views = 1;
    o->depth = vit->cfg.depth;
    o->cfg.seed = seed;
}

void objective_bind(Objective *o) {
    const ParamTable *t = o->params;
    if (o->use_token) token_head_bind(&o->token, t);
    if (o->use_pixel) pixel_head_bind(&o->pixel, t);
    if (o->use_contrast) contrastive_head_bind(&o->contrast, t);
    if (o->use_teacher) ema_teacher_bind(o->teacher);
}

void objective_teacher_update(Objective *o, float momentum) {
    if (o->use_teacher) ema_teacher_update(o->teacher, momentum);
}

void objective_init_weights(Objective *o, uint64_t seed) {
    const ParamTable *t = o->params;
    if (o->use_token) token_head_init(&o->token, t, seed);
    if (o->use_pixel) pixel_head_init(&o->pixel, t, seed, o->vit->cfg.layer_scale_init);
    if (o->use_contrast) contrastive_head_init(&o->contrast, t, seed);
    objective_teacher_update(o, 0.0f);  // the teacher starts as the student (call after vit_init_weights)
}

// ---- memory ---------------------------------------------------------------------------

static void objective_layout(Objective *o, int B) {
    Vit *v = o->vit;
    int N = v->N, T = v->T, D = v->D, d = o->patch_dim, V = o->views;
    long M = o->corrupt ? (long)B * (o->n_mask + o->n_replace) : 0;
    long img = (long)v->cfg.in_chans * v->cfg.img_size * v->cfg.img_size;
    Arena *a = &o->acts, *g = &o->grads;
    o->images = arena_floats(a, V * B * img);
    o->mask = arena_bytes(a, (size_t)V * B * N);
    if (o->corrupt) {
        o->clean_patches = arena_floats(a, (long)B * N * d);
        o->ids = arena_bytes(a, sizeof(int32_t) * B * N);
        o->replaced = arena_bytes(a, (size_t)B * N);
        o->scored = arena_bytes(a, sizeof(int32_t) * B * N);
        o->scored_ids = arena_bytes(a, sizeof(int32_t) * B * N);
        o->pix_target = arena_floats(a, M * d);
    }
    if (o->use_token) token_head_layout(&o->token, a, g, M);
    if (o->use_pixel) pixel_head_layout(&o->pixel, a, g, B, T, M, V);
    if (o->use_contrast) contrastive_head_layout(&o->contrast, a, g, o->use_teacher ? B : 2L * B);
    if (o->use_teacher) ema_teacher_layout(o->teacher, a, B);
    if (o->n_local) {
        long LB = (long)o->n_local * B, S = o->cfg.local_crop_size, Nl = o->local->N;
        contrastive_head_layout_local(&o->contrast, a, g, LB);
        o->local_images = arena_floats(a, LB * v->cfg.in_chans * S * S);
        o->local_pos_rows = arena_bytes(a, sizeof(int32_t) * LB * Nl);
        o->local_pos_col = arena_bytes(a, sizeof(int) * LB);
        o->local_row_start = arena_bytes(a, sizeof(int) * (LB + 1));
        o->local_row_index = arena_bytes(a, sizeof(int32_t) * LB);
        o->d_local_final = arena_floats(g, LB * o->local->T * D);
    }
    o->enc_row_start = arena_bytes(a, sizeof(int) * ((size_t)V * B + 1));
    o->enc_row_index = arena_bytes(a, sizeof(int32_t) * (size_t)V * B * T);
    o->ph_row_start = arena_bytes(a, sizeof(int) * ((size_t)B + 1));
    o->ph_row_index = arena_bytes(a, sizeof(int32_t) * (size_t)B * T);
    o->d_final = arena_floats(g, (long)V * B * T * D);
}

void objective_allocate(Objective *o, int max_batch) {
    o->max_batch = max_batch;
    if (o->classify) {  // the encoder holds the head's activations; erasing and mixing need their inputs and targets
        int mixing = mix_enabled(&o->mix), erasing = o->reprob > 0;
        if (!mixing && !erasing) return;
        const VitConfig *vc = &o->vit->cfg;
        long img = (long)vc->in_chans * vc->img_size * vc->img_size;
        for (int pass = 0; pass < 2; pass++) {
            if (erasing) o->erased = arena_floats(&o->acts, max_batch * img);
            if (mixing) o->mixed = arena_floats(&o->acts, max_batch * img);
            if (mixing) o->mix_targets = arena_floats(&o->acts, (long)max_batch * o->mix.num_classes);
            if (!pass) arena_commit(&o->acts, "batch augmentation");
        }
        return;
    }
    if (o->vit->max_batch < o->views * max_batch)
        fatal("objective_allocate: the encoder holds %d images, the objective needs %d x %d", o->vit->max_batch,
              o->views, max_batch);
    o->max_batch = max_batch;
    if (o->use_teacher) ema_teacher_allocate(o->teacher, max_batch);
    if (o->n_local) {
        o->local = xcalloc(1, sizeof(Vit), "local-view encoder");
        vit_share(o->local, o->vit, o->cfg.local_crop_size);
        vit_allocate_activations(o->local, o->n_local * max_batch);
    }
    objective_layout(o, max_batch);
    arena_commit(&o->acts, "objective activations");
    arena_commit(&o->grads, "objective gradients");
    objective_layout(o, max_batch);
    if (o->use_teacher) ema_teacher_rows_init(o->teacher, max_batch);
}

// ---- pieces -------------------------------------------------------------------------

// Write one patch (values in (c,y,x) order) into image b of imgs [B,C,H,W].
static void put_patch(float *imgs, const float *patch, int b, int n, int C, int S, int P, const float *mean,
                      const float *std) {
    int gw = S / P, py = n / gw, px = n % gw;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < P; y++) {
            float *row = imgs + (((long)b * C + c) * S + py * P + y) * S + px * P;
            for (int x = 0; x < P; x++) row[x] = (patch[(c * P + y) * P + x] - mean[c]) / std[c];
        }
}

// Masks, replacement and targets for view1 (and view2's mask when asked).
// Masks, replacement and targets for view1. Only the scored (masked or
// replaced) patches are tokenised: the others' ids are never used, and at
// ViT-Ti/K=8192 tokenising is the largest cost outside the encoder.
static int prepare_corruption(Objective *o, const float *clean1, int B, int64_t step) {
    Vit *v = o->vit;
    const VitConfig *vc = &v->cfg;
    int N = v->N, d = o->patch_dim, grid = v->grid;
    patchify(o->clean_patches, clean1, B, vc->in_chans, vc->img_size, vc->img_size, vc->patch_size);
    for (int b = 0; b < B; b++) {
        Rng r;
        rng_seed_image(&r, o->cfg.seed ^ MASK_STREAM_SALT, step, o->first_image + b);
        block_mask_generate(o->mask + (long)b * N, grid, grid, o->n_mask, o->cfg.min_mask_patches, &r);
        replacement_generate(o->replaced + (long)b * N, o->mask + (long)b * N, N, o->n_replace, &r);
    }
    int M = 0;
    for (long i = 0; i < (long)B * N; i++) {
        o->ids[i] = -1;  // not tokenised
        if (o->mask[i] || o->replaced[i]) o->scored[M++] = (int32_t)i;
    }
    // The scored clean patches, gathered into pix_target, are tokenised there,
    // then normalised in place into the pixel targets.
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++)
        memcpy(o->pix_target + (long)m * d, o->clean_patches + (long)o->scored[m] * d, sizeof(float) * d);
    if (o->tok) tokenizer_assign(o->tok, o->pix_target, (size_t)M, o->scored_ids, NULL);
    else memset(o->scored_ids, 0, sizeof(int32_t) * M);
    for (int m = 0; m < M; m++) {
        long i = o->scored[m];
        o->ids[i] = o->scored_ids[m];
        if (o->replaced[i])
            put_patch(o->images, o->tok->centroids + (long)o->scored_ids[m] * d, (int)(i / N), (int)(i % N),
                      vc->in_chans, vc->img_size, vc->patch_size, o->cfg.mean, o->cfg.std);
    }
    // Pixel targets: each clean patch normalised by its own mean and unbiased variance.
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        float *y = o->pix_target + (long)m * d;
        double mean = 0, var = 0;
        for (int j = 0; j < d; j++) mean += y[j];
        mean /= d;
        for (int j = 0; j < d; j++) var += (y[j] - mean) * (y[j] - mean);
        var /= (d > 1 ? d - 1 : 1);
        float inv = (float)(1.0 / sqrt(var + 1e-6));
        for (int j = 0; j < d; j++) y[j] = (float)(y[j] - mean) * inv;
    }
    return M;
}

// The rows the losses read (see objective.h); scored is ascending, so each
// image's rows come out ascending.
static void build_kept_rows(Objective *o, int B, int M) {
    int N = o->vit->N, V = o->views, m = 0, r = 0, p = 0;
    for (int b = 0; b < V * B; b++) {
        o->enc_row_start[b] = r;
        o->enc_row_index[r++] = 0;  // CLS: pixel head input, projector, collapse diagnostic
        if (b < B) {
            if (o->use_pixel) o->ph_row_start[b] = p;
            for (; m < M && o->scored[m] / N == b; m++) {
                int32_t t = 1 + o->scored[m] % N;
                if (o->use_token) o->enc_row_index[r++] = t;
                if (o->use_pixel) o->ph_row_index[p++] = t;
            }
        }
    }
    o->enc_row_start[V * B] = r;
    if (o->use_pixel) o->ph_row_start[B] = p;
    o->enc_rows = (RowSet){o->enc_row_start, o->enc_row_index, r};
    o->ph_rows = (RowSet){o->ph_row_start, o->ph_row_index, p};
}

// ---- forward / backward ---------------------------------------------------------------

// Multi-crop: cut the local views (see objective.h), and for each its pos_embed rows and
// its positive column. Windows are drawn per (step, global image), as masks are.
static void cut_local_views(Objective *o, const float *view1, const float *view2, int B, int64_t step) {
    const Vit *v = o->vit, *lv = o->local;
    int C = v->cfg.in_chans, H = v->cfg.img_size, P = v->cfg.patch_size, S = o->cfg.local_crop_size;
    int grid = v->grid, lg = lv->grid, Nl = lv->N;
    for (int b = 0; b < B; b++) {
        Rng r;
        rng_seed_image(&r, o->cfg.seed ^ LOCAL_STREAM_SALT, step, o->first_image + b);
        for (int k = 0; k < o->n_local; k++) {
            long i = (long)k * B + b;
            int from_view2 = !o->use_teacher && k % 2 == 0;
            int gy = (int)(rng_uniform(&r) * (grid - lg + 1)), gx = (int)(rng_uniform(&r) * (grid - lg + 1));
            gy = gy > grid - lg ? grid - lg : gy, gx = gx > grid - lg ? grid - lg : gx;
            const float *src = (from_view2 ? view2 : view1) + (long)b * C * H * H;
            float *dst = o->local_images + i * C * S * S;
            for (int c = 0; c < C; c++)
                for (int y = 0; y < S; y++)
                    memcpy(dst + ((long)c * S + y) * S, src + ((long)c * H + gy * P + y) * H + gx * P, sizeof(float) * S);
            for (int n = 0; n < Nl; n++) o->local_pos_rows[i * Nl + n] = 1 + (gy + n / lg) * grid + gx + n % lg;
            // the other view's column: view1's row b holds view2 as its positive (and itself as self)
            o->local_pos_col[i] = from_view2 ? o->contrast.self_col[b] : o->contrast.pos_col[b];
            o->local_row_start[i] = (int)i;
            o->local_row_index[i] = 0;
        }
    }
    o->local_row_start[(long)o->n_local * B] = o->n_local * B;
    o->local_rows = (RowSet){o->local_row_start, o->local_row_index, o->n_local * B};
}

// The local views through the shared encoder and the projector; returns the contrastive term
// over all anchors, given the global rows' mean.
static double local_views_forward(Objective *o, const float *view1, const float *view2, int B, int64_t step,
                                  double global_mean) {
    Vit *lv = o->local;
    int LB = o->n_local * B, R = o->contrast.R;
    cut_local_views(o, view1, view2, B, step);
    lv->freeze_patch_embed = o->vit->freeze_patch_embed;
    lv->pos_rows = o->local_pos_rows;
    vit_set_last_rows(lv, &o->local_rows);
    vit_forward(lv, o->local_images, NULL, LB);
    vit_set_last_rows(lv, NULL);
    double local_mean =
        contrastive_head_local_forward(&o->contrast, lv->final, o->d_local_final, LB, lv->T, o->local_pos_col);
    return (global_mean * R + local_mean * LB) / (R + LB);
}

ObjectiveLosses objective_forward(Objective *o, const float *view1, const float *clean1, const float *view2,
                                  int B, int64_t step, float w_contrast_now) {
    Vit *v = o->vit;
    const VitConfig *vc = &v->cfg;
    int N = v->N, T = v->T, V = o->views;
    long img = (long)vc->in_chans * vc->img_size * vc->img_size;
    if (B > o->max_batch) fatal("objective_forward: batch %d exceeds the allocated %d", B, o->max_batch);
    if (o->use_contrast && !view2) fatal("objective_forward: the contrastive loss needs a second view");
    ObjectiveLosses L = {0};
    o->last_batch = B;
    o->w_contrast_step = o->use_contrast ? (w_contrast_now >= 0 ? w_contrast_now : o->cfg.w_contrast) : 0;

    memcpy(o->images, view1, sizeof(float) * B * img);
    if (V == 2) memcpy(o->images + B * img, view2, sizeof(float) * B * img);
    memset(o->mask, 0, (size_t)V * B * N);
    int M = o->corrupt ? prepare_corruption(o, clean1, B, step) : 0;
    if (V == 2 && o->cfg.mask_both_views)
        for (int b = 0; b < B; b++) {  // view2: masking only (its clean crop is not tokenised)
            Rng r;
            rng_seed_image(&r, o->cfg.seed ^ MASK_STREAM_SALT, step, 65536 + o->first_image + b);
            block_mask_generate(o->mask + (long)(B + b) * N, v->grid, v->grid, o->n_mask, o->cfg.min_mask_patches, &r);
        }
    L.scored = M;
    int any_mask = o->corrupt || (V == 2 && o->cfg.mask_both_views);
    build_kept_rows(o, B, M);
    vit_set_last_rows(v, &o->enc_rows);
    vit_forward(v, o->images, any_mask ? o->mask : NULL, V * B);
    vit_set_last_rows(v, NULL);

    if (o->use_token) L.token = token_head_forward(&o->token, v->final, o->scored, o->scored_ids, M, N, T);
    if (o->use_pixel) L.pixel = pixel_head_forward(&o->pixel, v, &o->ph_rows, o->scored, o->pix_target, M, B);
    if (o->use_contrast) {
        const float *keys = NULL;
        if (o->use_teacher) {
            ema_teacher_forward(o->teacher, view2, B);
            keys = o->teacher->proj.z;
        }
        L.contrast = contrastive_head_forward(&o->contrast, v->final, V * B, T, keys);
        if (o->n_local) L.contrast = local_views_forward(o, view1, view2, B, step, L.contrast);
    }
    L.total = o->cfg.w_token * L.token + o->cfg.w_pixel * L.pixel + o->w_contrast_step * L.contrast;
    o->last = L;
    return L;
}

ObjectiveLosses objective_classify_forward(Objective *o, const float *images, const int32_t *labels, int B,
                                           int64_t stream) {
    Vit *v = o->vit;
    int K = v->cfg.num_classes;
    if (B > o->max_batch) fatal("objective_classify_forward: batch %d exceeds the allocated %d", B, o->max_batch);
    for (int i = 0; i < B; i++)
        if (labels[i] < 0 || labels[i] >= K)
            fatal("finetune: label %d of a training image is outside [0, num_classes = %d)", labels[i], K);
    vit_sample_drop_path(v, B, o->cfg.seed, stream, o->first_image);
    v->head.targets = NULL;
    if (o->reprob > 0) {
        const int S = v->cfg.img_size;
        memcpy(o->erased, images, sizeof(float) * (size_t)B * v->cfg.in_chans * S * S);
        erase_batch(o->erased, NULL, B, v->cfg.in_chans, S, S, o->reprob, o->cfg.seed, stream, o->first_image);
        images = o->erased;
    }
    if (mix_enabled(&o->mix)) {
        mix_batch(o->mixed, o->mix_targets, NULL, NULL, images, labels, B, v->cfg.in_chans, v->cfg.img_size,
                  v->cfg.img_size, &o->mix, stream, o->first_image);
        images = o->mixed;
        v->head.targets = o->mix_targets;
    }
    vit_forward(v, images, NULL, B);
    ObjectiveLosses L = {0};
    L.token = L.total = vit_head_forward(v, labels, B, 1);
    o->labels = labels;
    o->last_batch = B;
    o->last = L;
    return L;
}

static void classify_backward(Objective *o, float dloss) {
    vit_head_backward(o->vit, o->labels, o->last_batch, 1, dloss);
    vit_backward(o->vit, vit_head_dfinal(o->vit), NULL, o->last_batch);
}

void objective_backward(Objective *o, float dloss) {
    if (o->classify) {
        classify_backward(o, dloss);
        return;
    }
    Vit *v = o->vit;
    int B = o->last_batch, N = v->N, T = v->T, D = v->D, V = o->views, M = o->last.scored;
    memset(o->d_final, 0, sizeof(float) * (size_t)V * B * T * D);
    float *dblock[64] = {0};
    if (o->depth > 64) fatal("objective_backward: depth %d > 64", o->depth);
    if (o->use_token)
        token_head_backward(&o->token, o->d_final, o->scored, o->scored_ids, M, N, T, dloss * o->cfg.w_token);
    if (o->use_pixel)
        pixel_head_backward(&o->pixel, v, &o->ph_rows, o->scored, o->pix_target, M, B, V, dloss * o->cfg.w_pixel, dblock);
    int local = o->n_local && o->w_contrast_step > 0;  // n_local > 0 only with the contrastive term
    if (local) memset(o->d_local_final, 0, sizeof(float) * (size_t)o->n_local * B * o->local->T * D);
    if (o->use_contrast && o->w_contrast_step > 0)
        contrastive_head_backward(&o->contrast, o->d_final, T, dloss * o->w_contrast_step);
    if (local) {  // before the encoder's own backward, which tells listeners when gradients are final
        vit_set_last_rows(o->local, &o->local_rows);
        vit_backward(o->local, o->d_local_final, NULL, o->n_local * B);
        vit_set_last_rows(o->local, NULL);
    }
    vit_set_last_rows(v, &o->enc_rows);  // the forward's kept rows
    vit_backward(v, o->d_final, dblock, V * B);
    vit_set_last_rows(v, NULL);
}

static double objective_local_forward_flops(const Objective *o, int B);

double objective_forward_flops(const Objective *o, int B) {
    const Vit *v = o->vit;
    double D = v->D, T = v->T, S = o->corrupt ? (double)(o->n_mask + o->n_replace) : 0, M = B * S;
    double Hd = v->bdims.hidden, full = block_forward_flops(T, T, D, Hd);
    // the encoder's last block computes only the kept rows (build_kept_rows)
    double last_view1 = block_forward_flops(T, 1 + (o->use_token ? S : 0), D, Hd), last_view2 = block_forward_flops(T, 1, D, Hd);
    double f = o->views * B * vit_forward_flops_per_image(&v->cfg) - o->views * B * full + B * last_view1;
    if (o->views == 2) f += B * last_view2;
    if (o->use_token) f += token_head_forward_flops(&o->token, M);
    if (o->use_pixel) f += pixel_head_forward_flops(&o->pixel, B, T, S);
    if (o->use_contrast) f += contrastive_head_forward_flops(&o->contrast, (double)o->views * B);
    if (o->n_local) f += objective_local_forward_flops(o, B);
    return f;
}

// Multi-crop's local views: the encoder at their size (CLS alone in the last block),
// the projector and their similarity rows.
static double objective_local_forward_flops(const Objective *o, int B) {
    const Vit *lv = o->local;
    double LB = (double)o->n_local * B, D = lv->D, Tl = lv->T, Hd = lv->bdims.hidden;
    double enc = vit_forward_flops_per_image(&lv->cfg) - block_forward_flops(Tl, Tl, D, Hd) +
                 block_forward_flops(Tl, 1, D, Hd);
    double cols = (double)o->contrast.world * (o->use_teacher ? B : 2.0 * B);
    return LB * enc + projector_forward_flops(&o->contrast.proj, LB) + 2 * LB * cols * o->cfg.proj_dim;
}

double objective_teacher_flops(const Objective *o, int B) { return o->use_teacher ? ema_teacher_forward_flops(o->teacher, B) : 0; }

double objective_step_flops(const Objective *o, int B) {
    const Vit *v = o->vit;
    double patch = vit_patch_embed_flops_per_image(&v->cfg);  // per image and pass
    double f = 3 * objective_forward_flops(o, B) - o->views * B * patch * (v->freeze_patch_embed ? 2 : 1);
    if (o->n_local)
        f -= (double)o->n_local * B * vit_patch_embed_flops_per_image(&o->local->cfg) * (v->freeze_patch_embed ? 2 : 1);
    if (o->corrupt && o->tok) f += 2.0 * B * (o->n_mask + o->n_replace) * o->K * o->patch_dim;
    // InfoNCE against constant keys: its backward is one product (dq), not NT-Xent's two
    if (o->use_teacher) f -= 2.0 * B * B * o->cfg.proj_dim * (1 + o->n_local);
    return f + objective_teacher_flops(o, B);
}

Objective *objective_create(const VitConfig *vcfg, const ObjectiveConfig *ocfg, Tokenizer *tok, int max_batch,
                            uint64_t seed) {
    Model *m = xcalloc(1, sizeof(Model), "model");
    ModelSpec spec = {.kind = MODEL_PRETRAIN, .vit = *vcfg, .objective = *ocfg, .max_batch = max_batch, .seed = seed};
    model_build(m, &spec, tok);
    m->obj.owner = m;
    return &m->obj;
}

void objective_release(Objective *o) {
    arena_free(&o->acts);
    arena_free(&o->grads);
    if (o->teacher) {
        ema_teacher_release(o->teacher);
        xfree(o->teacher);
    }
    if (o->local) {
        vit_release(o->local);
        xfree(o->local);
    }
}

void objective_destroy(Objective *o) {
    if (!o) return;
    Model *m = o->owner;
    model_free(m);
    xfree(m);
}

int objective_cls_rows(const Objective *o, float *dst) {
    const Vit *v = o->vit;
    int B = o->last_batch, T = v->T, D = v->D, n = 0;
    for (int i = 0; i < o->views * B; i++, n++) memcpy(dst + (long)n * D, v->final + (long)i * T * D, sizeof(float) * D);
    if (o->use_teacher)
        for (int i = 0; i < B; i++, n++)
            memcpy(dst + (long)n * D, o->teacher->vit.final + (long)i * T * D, sizeof(float) * D);
    return n;
}

int objective_cls_rows_max(const Objective *o) { return (o->views + o->use_teacher) * o->max_batch; }

size_t objective_trained_floats(const Objective *o) {
    const ParamTable *t = o->params;
    return o->use_teacher ? t->info[o->teacher->first].offset : t->total;
}

ParamTable *objective_params(Objective *o) { return o->params; }
Vit *objective_vit(Objective *o) { return o->vit; }
uint8_t *objective_mask(Objective *o) { return o->mask; }
uint8_t *objective_replaced(Objective *o) { return o->replaced; }
int32_t *objective_ids(Objective *o) { return o->ids; }
float *objective_images(Objective *o) { return o->images; }
float *objective_local_images(Objective *o) { return o->local_images; }
int32_t *objective_local_pos_rows(Objective *o) { return o->local_pos_rows; }
