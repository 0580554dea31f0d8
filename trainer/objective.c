// objective.c: CCViT masked modeling (token CE + pixel MSE) and NT-Xent.
#include "objective.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "masking.h"
#include "model.h"

#define MASK_STREAM_SALT 0x6d61736b696e6700ULL  // "masking": keeps mask draws apart from init draws

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
    if (o->use_token) {
        o->idx_tok_w = params_add(t, "pretrain.token_head.weight", o->K, D, 0, 0);
        params_add(t, "pretrain.token_head.bias", o->K, 0, 0, 0);
    }
    if (o->use_pixel) {
        if (vc->depth < 3) fatal("config: the pixel head reads block depth-3, so depth must be >= 3 (got %d)", vc->depth);
        o->mid_block = vc->depth - 3;
        o->ph_dims = vit->bdims;
        o->ph_first[0] = block_register(t, "pretrain.pixel_head.blocks.0.", &o->ph_dims);
        o->ph_first[1] = block_register(t, "pretrain.pixel_head.blocks.1.", &o->ph_dims);
        o->idx_ph_norm_w = params_add(t, "pretrain.pixel_head.norm.weight", D, 0, 0, 0);
        params_add(t, "pretrain.pixel_head.norm.bias", D, 0, 0, 0);
        o->idx_ph_proj_w = params_add(t, "pretrain.pixel_head.proj.weight", o->patch_dim, D, 0, 0);
        params_add(t, "pretrain.pixel_head.proj.bias", o->patch_dim, 0, 0, 0);
    }
    if (o->use_contrast) {
        o->idx_pj_fc1_w = params_add(t, "pretrain.projector.fc1.weight", cfg->proj_hidden, D, 0, 0);
        params_add(t, "pretrain.projector.fc1.bias", cfg->proj_hidden, 0, 0, 0);
        o->idx_pj_fc2_w = params_add(t, "pretrain.projector.fc2.weight", cfg->proj_dim, cfg->proj_hidden, 0, 0);
        params_add(t, "pretrain.projector.fc2.bias", cfg->proj_dim, 0, 0, 0);
    }
    if (cfg->teacher_momentum > 0 && !o->use_contrast)
        fatal("config: teacher_momentum %g needs the contrastive term (w_contrast > 0)", cfg->teacher_momentum);
    o->use_teacher = o->use_contrast && cfg->teacher_momentum > 0;
    if (o->use_teacher) {
        if (!(cfg->teacher_momentum < 1)) fatal("config: teacher_momentum must be below 1 (got %g)", cfg->teacher_momentum);
        if (cfg->mask_both_views)
            fatal("config: mask_both_views masks the student's view2, which teacher_momentum > 0 does not have "
                  "(the teacher sees view2 whole); set one of them");
        // The same layout as the student's encoder and projector, so each teacher
        // tensor has one student tensor to follow.
        o->teacher = xcalloc(1, sizeof(Vit), "teacher");
        o->teacher_first = t->count;
        vit_register_prefixed(o->teacher, t, vc, TEACHER_PREFIX);
        o->idx_tpj_fc1_w = params_add(t, TEACHER_PREFIX "projector.fc1.weight", cfg->proj_hidden, D, 0, 0);
        params_add(t, TEACHER_PREFIX "projector.fc1.bias", cfg->proj_hidden, 0, 0, 0);
        o->idx_tpj_fc2_w = params_add(t, TEACHER_PREFIX "projector.fc2.weight", cfg->proj_dim, cfg->proj_hidden, 0, 0);
        params_add(t, TEACHER_PREFIX "projector.fc2.bias", cfg->proj_dim, 0, 0, 0);
        o->teacher_last = t->count;
        o->teacher_src = xcalloc(o->teacher_last - o->teacher_first, sizeof(int), "teacher map");
        for (int i = o->teacher_first; i < o->teacher_last; i++) {
            t->info[i].frozen = 1;
            const char *own = t->info[i].name + strlen(TEACHER_PREFIX);
            char student[160];
            snprintf(student, sizeof student, "%s%s", strncmp(own, "projector.", 10) ? "" : "pretrain.", own);
            int src = params_find(t, student);
            if (src < 0) fatal("objective: the teacher's %s has no student tensor %s", t->info[i].name, student);
            o->teacher_src[i - o->teacher_first] = src;
        }
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
    if (o->use_token) {
        o->tok_w = params_data(t, o->idx_tok_w), o->tok_b = params_data(t, o->idx_tok_w + 1);
        o->gtok_w = params_grad(t, o->idx_tok_w), o->gtok_b = params_grad(t, o->idx_tok_w + 1);
    }
    if (o->use_pixel) {
        for (int i = 0; i < 2; i++) block_bind(&o->ph_w[i], &o->ph_g[i], t, o->ph_first[i], &o->ph_dims);
        o->ph_norm_w = params_data(t, o->idx_ph_norm_w), o->ph_norm_b = params_data(t, o->idx_ph_norm_w + 1);
        o->gph_norm_w = params_grad(t, o->idx_ph_norm_w), o->gph_norm_b = params_grad(t, o->idx_ph_norm_w + 1);
        o->ph_proj_w = params_data(t, o->idx_ph_proj_w), o->ph_proj_b = params_data(t, o->idx_ph_proj_w + 1);
        o->gph_proj_w = params_grad(t, o->idx_ph_proj_w), o->gph_proj_b = params_grad(t, o->idx_ph_proj_w + 1);
    }
    if (o->use_contrast) {
        o->pj_fc1_w = params_data(t, o->idx_pj_fc1_w), o->pj_fc1_b = params_data(t, o->idx_pj_fc1_w + 1);
        o->gpj_fc1_w = params_grad(t, o->idx_pj_fc1_w), o->gpj_fc1_b = params_grad(t, o->idx_pj_fc1_w + 1);
        o->pj_fc2_w = params_data(t, o->idx_pj_fc2_w), o->pj_fc2_b = params_data(t, o->idx_pj_fc2_w + 1);
        o->gpj_fc2_w = params_grad(t, o->idx_pj_fc2_w), o->gpj_fc2_b = params_grad(t, o->idx_pj_fc2_w + 1);
    }
    if (o->use_teacher) {
        vit_bind(o->teacher);
        o->tpj_fc1_w = params_data(t, o->idx_tpj_fc1_w), o->tpj_fc1_b = params_data(t, o->idx_tpj_fc1_w + 1);
        o->tpj_fc2_w = params_data(t, o->idx_tpj_fc2_w), o->tpj_fc2_b = params_data(t, o->idx_tpj_fc2_w + 1);
    }
}

void objective_teacher_update(Objective *o, float momentum) {
    if (!o->use_teacher) return;
    const ParamTable *t = o->params;
    for (int i = o->teacher_first; i < o->teacher_last; i++) {
        float *dst = params_data(t, i);
        const float *src = params_data(t, o->teacher_src[i - o->teacher_first]);
        long n = (long)params_numel(t, i);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (long j = 0; j < n; j++) dst[j] = momentum * dst[j] + (1.0f - momentum) * src[j];
    }
}

void objective_init_weights(Objective *o, uint64_t seed) {
    const ParamTable *t = o->params;
    if (o->use_token) params_init_trunc_normal(o->tok_w, t, o->idx_tok_w, seed, 0.02);
    if (o->use_pixel) {
        for (int i = 0; i < 2; i++)
            block_init(&o->ph_w[i], t, o->ph_first[i], &o->ph_dims, seed, o->vit->cfg.layer_scale_init);
        params_fill_floats(o->ph_norm_w, o->vit->D, 1.0f);
        params_init_trunc_normal(o->ph_proj_w, t, o->idx_ph_proj_w, seed, 0.02);
    }
    if (o->use_contrast) {
        params_init_trunc_normal(o->pj_fc1_w, t, o->idx_pj_fc1_w, seed, 0.02);
        params_init_trunc_normal(o->pj_fc2_w, t, o->idx_pj_fc2_w, seed, 0.02);
    }
    objective_teacher_update(o, 0.0f);  // the teacher starts as the student (call after vit_init_weights)
}

// ---- memory ---------------------------------------------------------------------------

static void objective_layout(Objective *o, int B) {
    Vit *v = o->vit;
    int N = v->N, T = v->T, D = v->D, d = o->patch_dim, V = o->views;
    long M = o->corrupt ? (long)B * (o->n_mask + o->n_replace) : 0;
    long img = (long)v->cfg.in_chans * v->cfg.img_size * v->cfg.img_size;
    int H = o->cfg.proj_hidden, O = o->cfg.proj_dim;
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
    if (o->use_token) {
        o->tok_in = arena_floats(a, M * D);
        o->tok_logits = arena_floats(a, M * o->K);
        o->tok_probs = arena_floats(a, M * o->K);
        o->d_tok_in = arena_floats(g, M * D);
        o->d_tok_logits = arena_floats(g, M * o->K);
    }
    if (o->use_pixel) {
        o->ph_x = arena_floats(a, (long)B * T * D);
        for (int i = 0; i < 2; i++) block_layout(&o->ph_blocks[i], a, &o->ph_dims, B, T);
        o->ph_sel = arena_floats(a, M * D);
        o->ph_norm = arena_floats(a, M * D);
        o->ph_mean = arena_floats(a, M);
        o->ph_rstd = arena_floats(a, M);
        o->ph_pred = arena_floats(a, M * d);
        o->d_ph_x = arena_floats(g, (long)B * T * D);
        o->d_ph_sel = arena_floats(g, M * D);
        o->d_ph_norm = arena_floats(g, M * D);
        o->d_ph_pred = arena_floats(g, M * d);
        o->d_last = arena_floats(g, (long)V * B * T * D);
        o->d_mid = arena_floats(g, (long)V * B * T * D);
    }
    if (o->use_contrast) {
        long R = o->use_teacher ? B : 2L * B;
        o->pj_in = arena_floats(a, R * D);
        o->pj_h = arena_floats(a, R * H);
        o->pj_g = arena_floats(a, R * H);
        o->pj_u = arena_floats(a, R * O);
        o->pj_z = arena_floats(a, R * O);
        o->pj_norm = arena_floats(a, R);
        o->sim = arena_floats(a, R * R);
        o->d_pj_in = arena_floats(g, R * D);
        o->d_pj_h = arena_floats(g, R * H);
        o->d_pj_u = arena_floats(g, R * O);
        o->d_pj_z = arena_floats(g, R * O);
    }
    if (o->use_teacher) {
        o->tpj_in = arena_floats(a, (long)B * D);
        o->tpj_h = arena_floats(a, (long)B * H);
        o->tpj_g = arena_floats(a, (long)B * H);
        o->tpj_u = arena_floats(a, (long)B * O);
        o->tpj_z = arena_floats(a, (long)B * O);
        o->tpj_norm = arena_floats(a, B);
        o->teacher_row_start = arena_bytes(a, sizeof(int) * ((size_t)B + 1));
        o->teacher_row_index = arena_bytes(a, sizeof(int32_t) * (size_t)B);
    }
    o->row_loss = arena_floats(a, (M > 2L * B ? M : 2L * B) + 1);
    o->enc_row_start = arena_bytes(a, sizeof(int) * ((size_t)V * B + 1));
    o->enc_row_index = arena_bytes(a, sizeof(int32_t) * (size_t)V * B * T);
    o->ph_row_start = arena_bytes(a, sizeof(int) * ((size_t)B + 1));
    o->ph_row_index = arena_bytes(a, sizeof(int32_t) * (size_t)B * T);
    o->d_final = arena_floats(g, (long)V * B * T * D);
}

void objective_allocate(Objective *o, int max_batch) {
    o->max_batch = max_batch;
    if (o->classify) return;  // the encoder holds the head's activations
    if (o->vit->max_batch < o->views * max_batch)
        fatal("objective_allocate: the encoder holds %d images, the objective needs %d x %d", o->vit->max_batch,
              o->views, max_batch);
    o->max_batch = max_batch;
    if (o->use_teacher) vit_allocate_forward_activations(o->teacher, max_batch);
    objective_layout(o, max_batch);
    arena_commit(&o->acts, "objective activations");
    arena_commit(&o->grads, "objective gradients");
    objective_layout(o, max_batch);
    if (o->use_teacher)  // the teacher's last block keeps each image's CLS row; a batch of B reads the first B
        for (int b = 0; b <= max_batch; b++) {
            o->teacher_row_start[b] = b;
            if (b < max_batch) o->teacher_row_index[b] = 0;
        }
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
        rng_seed(&r, o->cfg.seed ^ MASK_STREAM_SALT, (uint64_t)step * 131072 + (uint64_t)b);
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

// rows[m] = src[token row of scored position m]; src is [B,T,D].
static void gather_scored(float *rows, const float *src, const int32_t *scored, int M, int N, int T, int D) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        long b = scored[m] / N, n = scored[m] % N;
        memcpy(rows + (long)m * D, src + (b * T + 1 + n) * D, sizeof(float) * D);
    }
}

// dst[token row of scored position m] += rows[m]; positions are distinct.
static void scatter_add_scored(float *dst, const float *rows, const int32_t *scored, int M, int N, int T, int D) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        long b = scored[m] / N, n = scored[m] % N;
        float *out = dst + (b * T + 1 + n) * D;
        const float *in = rows + (long)m * D;
        for (int c = 0; c < D; c++) out[c] += in[c];
    }
}

// The projector: z = normalise(fc2(GELU(fc1(in)))) over R rows; h keeps fc1's
// biased pre-activation (the backward recomputes GELU from it), nrm the norms.
static void project(float *h, float *g, float *u, float *z, float *nrm, const float *in, const float *w1,
                    const float *b1, const float *w2, const float *b2, int R, int D, int H, int O) {
    linear_bias_gelu_forward(g, h, in, w1, b1, R, D, H);
    linear_forward(u, g, w2, b2, R, H, O);
    for (int i = 0; i < R; i++) {  // z = u / max(|u|, 1e-12), as F.normalize
        const float *ui = u + (long)i * O;
        double ss = 0;
        for (int j = 0; j < O; j++) ss += (double)ui[j] * ui[j];
        float n = (float)fmax(sqrt(ss), 1e-12);
        nrm[i] = n;
        for (int j = 0; j < O; j++) z[(long)i * O + j] = ui[j] / n;
    }
}

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
        row_loss[i] = (float)(log(sum) + mx - s[pos]);
        for (int j = 0; j < R; j++) s[j] = j == skip ? 0.0f : (float)(exp((double)s[j] - mx) / sum);
    }
    double total = 0;
    for (int i = 0; i < R; i++) total += row_loss[i];
    return total / R;
}

// InfoNCE of queries q [B,O] against keys k [B,O] (rows L2-normalised): row i's
// positive is key i, the other keys its negatives. Leaves the softmax in
// probs [B,B] and returns the mean loss.
static double infonce_forward(float *probs, float *row_loss, const float *q, const float *k, int B, int O, float tau) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, B, O, 1.0f / tau, q, O, k, O, 0.0f, probs, B);
    return contrastive_rows(probs, row_loss, B, 0);
}

// NT-Xent over z [R,O] (rows L2-normalised), positives i <-> i +- R/2.
// Leaves the softmax over j != i in probs [R,R] and returns the mean loss.
static double ntxent_forward(float *probs, float *row_loss, const float *z, int R, int O, float tau) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, R, O, 1.0f / tau, z, O, z, O, 0.0f, probs, R);
    return contrastive_rows(probs, row_loss, R, 1);
}

// ---- forward / backward ---------------------------------------------------------------

ObjectiveLosses objective_forward(Objective *o, const float *view1, const float *clean1, const float *view2,
                                  int B, int64_t step, float w_contrast_now) {
    Vit *v = o->vit;
    const VitConfig *vc = &v->cfg;
    int N = v->N, T = v->T, D = v->D, d = o->patch_dim, V = o->views;
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
            rng_seed(&r, o->cfg.seed ^ MASK_STREAM_SALT, (uint64_t)step * 131072 + 65536 + (uint64_t)b);
            block_mask_generate(o->mask + (long)(B + b) * N, v->grid, v->grid, o->n_mask, o->cfg.min_mask_patches, &r);
        }
    L.scored = M;
    int any_mask = o->corrupt || (V == 2 && o->cfg.mask_both_views);
    build_kept_rows(o, B, M);
    vit_set_last_rows(v, &o->enc_rows);
    vit_forward(v, o->images, any_mask ? o->mask : NULL, V * B);
    vit_set_last_rows(v, NULL);

    if (o->use_token) {
        gather_scored(o->tok_in, v->final, o->scored, M, N, T, D);
        linear_forward(o->tok_logits, o->tok_in, o->tok_w, o->tok_b, M, D, o->K);
        L.token = softmax_xent_forward(o->tok_probs, o->tok_logits, o->scored_ids, M, o->K, 0.0f);
    }
    if (o->use_pixel) {
        // CLS from the last block's output, patch tokens from block depth-3.
        const float *last = v->blocks[o->depth - 1].out, *mid = v->blocks[o->mid_block].out;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++) {
            memcpy(o->ph_x + (long)b * T * D, last + (long)b * T * D, sizeof(float) * D);
            memcpy(o->ph_x + ((long)b * T + 1) * D, mid + ((long)b * T + 1) * D, sizeof(float) * (T - 1) * D);
        }
        block_forward(&o->ph_blocks[0], &o->ph_w[0], &v->scratch, &o->ph_dims, o->ph_x, NULL, NULL, B, T);
        block_forward(&o->ph_blocks[1], &o->ph_w[1], &v->scratch, &o->ph_dims, o->ph_blocks[0].out, NULL,
                      &o->ph_rows, B, T);
        gather_scored(o->ph_sel, o->ph_blocks[1].out, o->scored, M, N, T, D);
        layernorm_forward(o->ph_norm, o->ph_mean, o->ph_rstd, o->ph_sel, o->ph_norm_w, o->ph_norm_b, M, D);
        linear_forward(o->ph_pred, o->ph_norm, o->ph_proj_w, o->ph_proj_b, M, D, d);
        double se = 0;
        for (long i = 0; i < (long)M * d; i++) {
            double e = (double)o->ph_pred[i] - o->pix_target[i];
            se += e * e;
        }
        L.pixel = se / ((double)M * d);
    }
    if (o->use_contrast) {
        int R = V * B, H = o->cfg.proj_hidden, O = o->cfg.proj_dim;
        for (int i = 0; i < R; i++) memcpy(o->pj_in + (long)i * D, v->final + (long)i * T * D, sizeof(float) * D);
        project(o->pj_h, o->pj_g, o->pj_u, o->pj_z, o->pj_norm, o->pj_in, o->pj_fc1_w, o->pj_fc1_b, o->pj_fc2_w,
                o->pj_fc2_b, R, D, H, O);
        if (o->use_teacher) {
            Vit *tv = o->teacher;
            o->teacher_rows = (RowSet){o->teacher_row_start, o->teacher_row_index, B};  // CLS rows of B images
            vit_set_last_rows(tv, &o->teacher_rows);
            vit_forward(tv, view2, NULL, B);
            vit_set_last_rows(tv, NULL);
            for (int b = 0; b < B; b++) memcpy(o->tpj_in + (long)b * D, tv->final + (long)b * T * D, sizeof(float) * D);
            project(o->tpj_h, o->tpj_g, o->tpj_u, o->tpj_z, o->tpj_norm, o->tpj_in, o->tpj_fc1_w, o->tpj_fc1_b,
                    o->tpj_fc2_w, o->tpj_fc2_b, B, D, H, O);
            L.contrast = infonce_forward(o->sim, o->row_loss, o->pj_z, o->tpj_z, B, O, o->cfg.temperature);
        } else {
            L.contrast = ntxent_forward(o->sim, o->row_loss, o->pj_z, R, O, o->cfg.temperature);
        }
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
    vit_sample_drop_path(v, B, o->cfg.seed, stream);
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
    int B = o->last_batch, N = v->N, T = v->T, D = v->D, d = o->patch_dim, V = o->views, M = o->last.scored;
    long VBTD = (long)V * B * T * D;
    memset(o->d_final, 0, sizeof(float) * VBTD);
    float *dblock[64] = {0};
    if (o->depth > 64) fatal("objective_backward: depth %d > 64", o->depth);

    if (o->use_token) {
        memset(o->d_tok_logits, 0, sizeof(float) * (size_t)M * o->K);
        softmax_xent_backward(o->d_tok_logits, o->tok_probs, o->scored_ids, M, o->K, 0.0f, dloss * o->cfg.w_token);
        linear_backward_set_dinp(o->d_tok_in, o->gtok_w, o->gtok_b, o->d_tok_logits, o->tok_in, o->tok_w, M, D, o->K);
        scatter_add_scored(o->d_final, o->d_tok_in, o->scored, M, N, T, D);
    }
    if (o->use_pixel) {
        float scale = 2.0f * dloss * o->cfg.w_pixel / ((float)M * d);
#pragma omp parallel for schedule(static)
        for (long i = 0; i < (long)M * d; i++) o->d_ph_pred[i] = scale * (o->ph_pred[i] - o->pix_target[i]);
        linear_backward_set_dinp(o->d_ph_norm, o->gph_proj_w, o->gph_proj_b, o->d_ph_pred, o->ph_norm, o->ph_proj_w, M, D, d);
        memset(o->d_ph_sel, 0, sizeof(float) * (size_t)M * D);
        layernorm_backward(o->d_ph_sel, o->gph_norm_w, o->gph_norm_b, o->d_ph_norm, o->ph_sel, o->ph_norm_w,
                           o->ph_mean, o->ph_rstd, M, D);
        memset(o->d_ph_x, 0, sizeof(float) * (size_t)B * T * D);
        scatter_add_scored(o->d_ph_x, o->d_ph_sel, o->scored, M, N, T, D);
        block_backward(o->d_ph_x, &o->ph_g[1], &v->scratch, &o->ph_blocks[1], &o->ph_w[1], &o->ph_dims,
                       o->ph_blocks[0].out, NULL, &o->ph_rows, B, T);
        block_backward(o->d_ph_x, &o->ph_g[0], &v->scratch, &o->ph_blocks[0], &o->ph_w[0], &o->ph_dims, o->ph_x, NULL,
                       NULL, B, T);
        memset(o->d_last, 0, sizeof(float) * VBTD);
        memset(o->d_mid, 0, sizeof(float) * VBTD);
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++) {
            memcpy(o->d_last + (long)b * T * D, o->d_ph_x + (long)b * T * D, sizeof(float) * D);
            memcpy(o->d_mid + ((long)b * T + 1) * D, o->d_ph_x + ((long)b * T + 1) * D, sizeof(float) * (T - 1) * D);
        }
        dblock[o->depth - 1] = o->d_last;
        dblock[o->mid_block] = o->d_mid;
    }
    if (o->use_contrast && o->w_contrast_step > 0) {
        int R = V * B, H = o->cfg.proj_hidden, O = o->cfg.proj_dim, half = B;
        float tau = o->cfg.temperature, scale = dloss * o->w_contrast_step / (float)R;
        // d sim[i,j] = (p_ij - [j = pos(i)]) / R, in place over the probabilities.
        for (int i = 0; i < R; i++) {
            float *s = o->sim + (long)i * R;
            for (int j = 0; j < R; j++) s[j] *= scale;
            s[o->use_teacher ? i : i < half ? i + half : i - half] -= scale;
        }
        if (o->use_teacher) {  // sim = q k^T / tau with k constant: dq = dS k / tau
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, O, R, 1.0f / tau, o->sim, R, o->tpj_z, O, 0.0f,
                        o->d_pj_z, O);
        } else {  // sim = z z^T / tau, so dz = (dS + dS^T) z / tau
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, O, R, 1.0f / tau, o->sim, R, o->pj_z, O, 0.0f,
                        o->d_pj_z, O);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, O, R, 1.0f / tau, o->sim, R, o->pj_z, O, 1.0f,
                        o->d_pj_z, O);
        }
        for (int i = 0; i < R; i++) {  // through the L2 normalisation
            const float *z = o->pj_z + (long)i * O, *dz = o->d_pj_z + (long)i * O;
            float *du = o->d_pj_u + (long)i * O;
            double dot = 0;
            for (int j = 0; j < O; j++) dot += (double)z[j] * dz[j];
            for (int j = 0; j < O; j++) du[j] = (dz[j] - z[j] * (float)dot) / o->pj_norm[i];
        }
        linear_backward_set_dinp(o->d_pj_h, o->gpj_fc2_w, o->gpj_fc2_b, o->d_pj_u, o->pj_g, o->pj_fc2_w, R, H, O);
        gelu_backward_inplace(o->d_pj_h, o->pj_h, (long)R * H);
        linear_backward_set_dinp(o->d_pj_in, o->gpj_fc1_w, o->gpj_fc1_b, o->d_pj_h, o->pj_in, o->pj_fc1_w, R, D, H);
        for (int i = 0; i < R; i++) {
            float *out = o->d_final + (long)i * T * D;
            const float *in = o->d_pj_in + (long)i * D;
            for (int c = 0; c < D; c++) out[c] += in[c];
        }
    }
    vit_set_last_rows(v, &o->enc_rows);  // the forward's kept rows
    vit_backward(v, o->d_final, dblock, V * B);
    vit_set_last_rows(v, NULL);
}

double objective_forward_flops(const Objective *o, int B) {
    const Vit *v = o->vit;
    double D = v->D, T = v->T, S = o->corrupt ? (double)(o->n_mask + o->n_replace) : 0, M = B * S;
    double Hd = v->bdims.hidden, full = block_forward_flops(T, T, D, Hd);
    // the encoder's last block computes only the kept rows (build_kept_rows)
    double last_view1 = block_forward_flops(T, 1 + (o->use_token ? S : 0), D, Hd), last_view2 = block_forward_flops(T, 1, D, Hd);
    double f = o->views * B * vit_forward_flops_per_image(&v->cfg) - o->views * B * full + B * last_view1;
    if (o->views == 2) f += B * last_view2;
    if (o->use_token) f += 2 * M * D * o->K;
    if (o->use_pixel) {
        double Hp = o->ph_dims.hidden;
        f += B * (block_forward_flops(T, T, D, Hp) + block_forward_flops(T, S, D, Hp)) + 2 * M * D * o->patch_dim;
    }
    if (o->use_contrast) {
        double R = (double)o->views * B, H = o->cfg.proj_hidden, O = o->cfg.proj_dim;
        f += 2 * R * (D * H + H * O) + 2 * R * R * O;
    }
    return f;
}

double objective_teacher_flops(const Objective *o, int B) {
    if (!o->use_teacher) return 0;
    const Vit *v = o->vit;
    double D = v->D, T = v->T, Hd = v->bdims.hidden, H = o->cfg.proj_hidden, O = o->cfg.proj_dim;
    return B * (vit_forward_flops_per_image(&v->cfg) - block_forward_flops(T, T, D, Hd) + block_forward_flops(T, 1, D, Hd)) +
           2.0 * B * (D * H + H * O);
}

double objective_step_flops(const Objective *o, int B) {
    const Vit *v = o->vit;
    double patch = vit_patch_embed_flops_per_image(&v->cfg);  // per image and pass
    double f = 3 * objective_forward_flops(o, B) - o->views * B * patch * (v->freeze_patch_embed ? 2 : 1);
    if (o->corrupt && o->tok) f += 2.0 * B * (o->n_mask + o->n_replace) * o->K * o->patch_dim;
    // InfoNCE against constant keys: its backward is one product (dq), not NT-Xent's two
    if (o->use_teacher) f -= 2.0 * B * B * o->cfg.proj_dim;
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
        vit_release(o->teacher);  // its tensors live in the student's table
        xfree(o->teacher);
        xfree(o->teacher_src);
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
            memcpy(dst + (long)n * D, o->teacher->final + (long)i * T * D, sizeof(float) * D);
    return n;
}

int objective_cls_rows_max(const Objective *o) { return (o->views + o->use_teacher) * o->max_batch; }

size_t objective_trained_floats(const Objective *o) {
    const ParamTable *t = o->params;
    return o->use_teacher ? t->info[o->teacher_first].offset : t->total;
}

ParamTable *objective_params(Objective *o) { return o->params; }
Vit *objective_vit(Objective *o) { return o->vit; }
uint8_t *objective_mask(Objective *o) { return o->mask; }
uint8_t *objective_replaced(Objective *o) { return o->replaced; }
int32_t *objective_ids(Objective *o) { return o->ids; }
float *objective_images(Objective *o) { return o->images; }
