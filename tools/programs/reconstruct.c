// reconstruct: what a pretraining checkpoint does with a few test images. Runs
// the CCViT corruption and both heads once (objective_forward at step 0) on the
// first N images of a split, and writes the panels of the reconstruction grid
// (tools/scripts/plot_reconstruction.py) to one HDF5 file.
//
//   reconstruct CHECKPOINT.h5 [--out F.h5] [--n 8] [--test SRC] [--tokenizer FILE] [--key=value ...]
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "h5io.h"
#include "kernels.h"
#include "loader.h"
#include "model.h"
#include "objective.h"
#include "setup.h"
#include "tokenizer.h"
#include "vit.h"

#define GREY 0.5f         // masked patches in the corrupted panel
#define EXIT_NOTHING 3    // the checkpoint has neither head: nothing to reconstruct

static void usage(void) {
    printf(
        "usage: reconstruct CHECKPOINT.h5 [options] [--key=value ...]\n"
        "\n"
        "Takes the first N images of a test split (eval mode: resize to img_size, no augmentation),\n"
        "corrupts them as pretraining does (blockwise mask + centroid replacement, the draws of step 0),\n"
        "runs the encoder and the heads once, and writes to an HDF5 file, images [N,C,H,W] in [0,1]:\n"
        "  clean          the crops\n"
        "  corrupted      the encoder input de-normalised; masked patches set to grey (attribute grey)\n"
        "  mask, replaced [N,gh,gw] 1 where the patch was masked / replaced by its centroid\n"
        "  ids            [N,gh,gw] each scored clean patch's centroid id (-1: not scored, not tokenised)\n"
        "  recon_pixel    pixel head: every scored (masked or replaced) patch's prediction de-normalised\n"
        "                 with the clean patch's own mean and unbiased std (x = pred*sqrt(var+1e-6)+mean),\n"
        "                 clipped to [0,1], pasted into the clean image\n"
        "  pixel_pred     [M,d] the pixel head's raw (normalised) predictions, rows in `scored` order\n"
        "  scored         [M] flat image*N+patch of the scored patches, ascending\n"
        "  recon_token    token head: each scored patch drawn as its argmax centroid, pasted likewise\n"
        "  token_pred     [N,gh,gw] argmax centroid id of scored patches, -1 elsewhere\n"
        "A head the checkpoint lacks (w_pixel or w_token = 0) leaves its datasets out\n"
        "(attributes has_pixel_head / has_token_head say which).\n"
        "Exit status 3: the checkpoint has neither head (contrastive only), nothing to reconstruct.\n"
        "\n"
        "options:\n"
        "  --out F.h5         output (default: beside the checkpoint, <name>.recon.h5)\n"
        "  --n N              images (default 8)\n"
        "  --test SRC         split to take them from (default: the config's data_val)\n"
        "  --tokenizer FILE   centroids to use instead of the checkpoint's own\n"
        "  --key=value        any config key, e.g. --num_workers=1 --data_format=imagefolder\n");
}

// The datasets' shapes: [n,C,H,W] images and [n,gh,gw] patch grids.
typedef struct {
    hsize_t img[4], grid[3];
} Shapes;

static void write_grid_u8(hid_t f, const char *name, const uint8_t *v, long count, const Shapes *s) {
    int32_t *tmp = xmalloc(count * sizeof(int32_t) + 1, name);
    for (long i = 0; i < count; i++) tmp[i] = v[i];
    h5_write_i32(f, name, tmp, 3, s->grid);
    xfree(tmp);
}

typedef struct {
    const char *ckpt, *out, *test, *tok_path;
    int n_images;
    char **keys;  // --key=value, in the order given
    int nkeys;
} Options;

// Every panel is built as patches [n,N,d] from the clean ones, then unpatchified into img.
typedef struct {
    hid_t f;
    Shapes sh;
    int n, C, S, P, N, d, M;  // images, channels, side, patch, patches per image, patch dim, scored patches
    long pix, npatch;         // floats of the n images, patches of the n images
    float *patches, *img;     // scratch [npatch,d], [pix]
} Panels;

// Returns 1 when --help was asked (usage printed).
static int parse_args(Options *o, int argc, char **argv) {
    *o = (Options){.n_images = 8};
    o->keys = xcalloc(argc + 1, sizeof(char *), "args");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE() (v ? (i++, v) : (fatal("%s needs a value (see --help)", a), ""))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 1;
        } else if (!strcmp(a, "--out")) o->out = VALUE();
        else if (!strcmp(a, "--n")) o->n_images = (int)arg_int(a, VALUE(), 1, 4096);
        else if (!strcmp(a, "--test")) o->test = VALUE();
        else if (!strcmp(a, "--tokenizer")) o->tok_path = VALUE();
        else if (!strncmp(a, "--", 2)) o->keys[o->nkeys++] = argv[i];
        else if (!o->ckpt) o->ckpt = a;
        else fatal("unexpected argument '%s' (one checkpoint; see --help)", a);
#undef VALUE
    }
    if (!o->ckpt) fatal("give a pretraining checkpoint (see --help)");
    if (o->n_images < 1 || o->n_images > 4096) fatal("--n %d: give 1..4096 images", o->n_images);
    return 0;
}

// The config the checkpoint was trained with, then --key=value; the test split (default data_val).
static void load_config(Config *cfg, CheckpointInfo *info, Options *o) {
    char err[4096];
    config_defaults(cfg);
    *info = (CheckpointInfo){0};
    if (checkpoint_read_info(o->ckpt, info, err, sizeof err)) fatal("%s", err);
    if (config_load_string(cfg, info->config_yaml, o->ckpt, err, sizeof err)) fatal("config stored in %s", err);
    for (int i = 0; i < o->nkeys; i++)
        if (config_set(cfg, o->keys[i], err, sizeof err)) fatal("%s", err);
    if (config_finalize(cfg, err, sizeof err)) fatal("%s", err);
    if (!o->test) o->test = cfg->data_val;
    if (!o->test[0]) fatal("no test data: give --test SRC (or data_val in the config)");
}

// The tokenizer (--tokenizer or the checkpoint's) and the pretraining model with its heads, as the
// trainer builds it, with the checkpoint's every tensor loaded over the init; activations for n_images.
static Tokenizer *build_model(Model *m, const Options *o, const Config *cfg, const LoaderConfig *lc,
                              const CheckpointInfo *info) {
    char err[4096];
    Tokenizer *tok = o->tok_path ? tokenizer_load(o->tok_path) : checkpoint_load_tokenizer(o->ckpt, err, sizeof err);
    if (!tok) fatal("%s\nHINT: give the centroids the run used with --tokenizer FILE", err);
    tokenizer_check(tok, cfg->patch_size, cfg->in_chans, "the checkpoint's model");
    ModelSpec spec = model_spec_from(cfg, lc, MODEL_PRETRAIN, o->n_images);
    spec.optimizer = 0;
    model_build(m, &spec, tok);
    CheckpointState cs = {.params = &m->params, .config_yaml = info->config_yaml, .mode = CKPT_LOAD_FULL};
    if (checkpoint_load(o->ckpt, &cs, err, sizeof err)) fatal("%s", err);
    return tok;
}

// The first n images, as eval sees them: resized to img_size, no crop.
static Loader *first_images(LoaderConfig *lc, const Config *cfg, const Options *o, Batch *b) {
    lc->batch_size = o->n_images;
    lc->eval_resize = (float)cfg->img_size;
    lc->num_threads = 1;
    lc->require_labels = 0;  // reconstructions need images only
    Loader *L = loader_open(lc);
    if (loader_next(L, b) != 1 || b->n < 1) fatal("test split '%s' gave no images", o->test);
    if (b->n < o->n_images)
        fprintf(stderr, "reconstruct: the split '%s' gave %d images, fewer than --n %d\n", o->test, b->n, o->n_images);
    return L;
}

// Corrupted: the encoder input de-normalised; masked patches grey (the encoder saw mask tokens there).
// Then the mask, replacement and id grids and the scored positions.
static void write_corrupted(Panels *p, const Objective *obj, const LoaderConfig *lc) {
    int C = p->C, S = p->S, d = p->d;
    for (long i = 0; i < p->pix; i++) {
        int c = (int)((i / ((long)S * S)) % C);
        p->img[i] = obj->images[i] * lc->std[c] + lc->mean[c];
    }
    patchify(p->patches, p->img, p->n, C, S, S, p->P);
    for (long i = 0; i < p->npatch; i++)
        if (obj->mask[i])
            for (int j = 0; j < d; j++) p->patches[i * d + j] = GREY;
    unpatchify(p->img, p->patches, p->n, C, S, S, p->P);
    h5_write_f32(p->f, "corrupted", p->img, 4, p->sh.img);
    write_grid_u8(p->f, "mask", obj->mask, p->npatch, &p->sh);
    write_grid_u8(p->f, "replaced", obj->replaced, p->npatch, &p->sh);
    h5_write_i32(p->f, "ids", obj->ids, 3, p->sh.grid);
    if (p->M > 0) {
        hsize_t dm[1] = {(hsize_t)p->M};
        h5_write_i32(p->f, "scored", obj->scored, 1, dm);
    }
}

// Pixel head: de-normalise each prediction with its clean patch's statistics (the target's own).
// Returns the share of values clipped to [0,1].
static double write_pixel_head(Panels *p, const Objective *obj) {
    int d = p->d, M = p->M;
    const float *clean_p = obj->clean_patches;
    double clipped = 0;
    memcpy(p->patches, clean_p, p->npatch * d * sizeof(float));
    for (int m = 0; m < M; m++) {
        const float *x = clean_p + (long)obj->scored[m] * d, *pred = obj->pixel.pred + (long)m * d;
        float *y = p->patches + (long)obj->scored[m] * d;
        double mean = 0, var = 0;
        for (int j = 0; j < d; j++) mean += x[j];
        mean /= d;
        for (int j = 0; j < d; j++) var += (x[j] - mean) * (x[j] - mean);
        var /= (d > 1 ? d - 1 : 1);
        double sd = sqrt(var + 1e-6);
        for (int j = 0; j < d; j++) {
            double v = pred[j] * sd + mean;
            clipped += v < 0 || v > 1;
            y[j] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
        }
    }
    unpatchify(p->img, p->patches, p->n, p->C, p->S, p->S, p->P);
    h5_write_f32(p->f, "recon_pixel", p->img, 4, p->sh.img);
    hsize_t dp[2] = {(hsize_t)M, (hsize_t)d};
    h5_write_f32(p->f, "pixel_pred", obj->pixel.pred, 2, dp);
    return clipped / ((double)M * d);
}

// Token head: each scored patch drawn as its argmax centroid. Returns the share equal to the clean centroid.
static double write_token_head(Panels *p, const Objective *obj, const Tokenizer *tok) {
    int d = p->d, M = p->M;
    double correct = 0;
    int32_t *pred_ids = xmalloc(p->npatch * sizeof(int32_t), "token ids");
    for (long i = 0; i < p->npatch; i++) pred_ids[i] = -1;
    memcpy(p->patches, obj->clean_patches, p->npatch * d * sizeof(float));
    for (int m = 0; m < M; m++) {
        const float *lg = obj->token.logits + (long)m * obj->K;
        int best = 0;
        for (int k = 1; k < obj->K; k++)
            if (lg[k] > lg[best]) best = k;
        pred_ids[obj->scored[m]] = best;
        correct += best == obj->scored_ids[m];
        memcpy(p->patches + (long)obj->scored[m] * d, tok->centroids + (long)best * d, d * sizeof(float));
    }
    unpatchify(p->img, p->patches, p->n, p->C, p->S, p->S, p->P);
    h5_write_f32(p->f, "recon_token", p->img, 4, p->sh.img);
    h5_write_i32(p->f, "token_pred", pred_ids, 3, p->sh.grid);
    xfree(pred_ids);
    return correct / M;
}

// Every panel of the n images of b after the forward `loss` into `out`, then its summary on stdout.
static void write_panels(const char *out, const Options *o, const CheckpointInfo *info, const Model *m,
                         const Tokenizer *tok, const LoaderConfig *lc, const Batch *b, const ObjectiveLosses *loss) {
    const Objective *obj = &m->obj;
    const VitConfig *vc = &m->vit.cfg;
    int n = b->n, C = vc->in_chans, S = vc->img_size, N = m->vit.N, d = obj->patch_dim, M = loss->scored;
    Panels p = {.sh = {{(hsize_t)n, (hsize_t)C, (hsize_t)S, (hsize_t)S}, {(hsize_t)n, (hsize_t)m->vit.grid, (hsize_t)m->vit.grid}},
                .n = n, .C = C, .S = S, .P = vc->patch_size, .N = N, .d = d, .M = M,
                .pix = (long)n * C * S * S, .npatch = (long)n * N};
    p.patches = xmalloc(p.npatch * d * sizeof(float), "patches");
    p.img = xmalloc(p.pix * sizeof(float), "panel");
    p.f = h5_create(out);
    h5_write_f32(p.f, "clean", b->clean1, 4, p.sh.img);
    write_corrupted(&p, obj, lc);
    double clipped = obj->use_pixel && M > 0 ? write_pixel_head(&p, obj) : 0;
    double correct = obj->use_token && M > 0 ? write_token_head(&p, obj, tok) : 0;

    hid_t f = p.f;
    h5_attr_write_str(f, "checkpoint", o->ckpt);
    h5_attr_write_str(f, "source", o->test);
    h5_attr_write_i64(f, "step", info->step);
    h5_attr_write_i64(f, "patch_size", p.P);
    h5_attr_write_f64(f, "grey", GREY);
    h5_attr_write_i64(f, "has_pixel_head", obj->use_pixel);
    h5_attr_write_i64(f, "has_token_head", obj->use_token);
    h5_attr_write_i64(f, "num_centroids", tok->k);
    h5_attr_write_f64(f, "loss_pixel", obj->use_pixel ? loss->pixel : NAN);
    h5_attr_write_f64(f, "loss_token", obj->use_token ? loss->token : NAN);
    h5_attr_write_f64(f, "token_accuracy", obj->use_token && M > 0 ? correct : NAN);
    h5_attr_write_f64(f, "recon_pixel_clipped_share", obj->use_pixel && M > 0 ? clipped : NAN);
    h5_close(f);

    printf("%s: %d images of %s, checkpoint step %lld; %d of %d patches scored (%d masked, %d replaced per image)\n",
           out, n, o->test, (long long)info->step, M, n * N, obj->n_mask, obj->n_replace);
    if (obj->use_pixel) printf("  pixel head: MSE %.4f (normalised), %.1f%% of values clipped to [0,1]\n", loss->pixel, 100 * clipped);
    else printf("  pixel head: absent (w_pixel = 0), recon_pixel left out\n");
    if (obj->use_token) printf("  token head: CE %.4f, argmax = clean centroid on %.1f%%\n", loss->token, 100 * correct);
    else printf("  token head: absent (w_token = 0), recon_token left out\n");
    xfree(p.patches), xfree(p.img);
}

int main(int argc, char **argv) {
    Options o;
    if (parse_args(&o, argc, argv)) return 0;
    Config cfg;
    CheckpointInfo info;
    load_config(&cfg, &info, &o);
    if (!(cfg.w_token > 0 || cfg.w_pixel > 0)) {
        fprintf(stderr, "reconstruct: %s was trained with w_token = w_pixel = 0 (contrastive only): no corruption "
                        "and no head to reconstruct with; nothing written\n", o.ckpt);
        return EXIT_NOTHING;
    }

    // Model, heads and tokenizer, in the trainer's order (train.c); then the images.
    LoaderConfig lc = loader_config_from(&cfg, o.test, LOADER_EVAL, 0);
    Model m;
    Tokenizer *tok = build_model(&m, &o, &cfg, &lc, &info);
    Batch b;
    Loader *L = first_images(&lc, &cfg, &o, &b);

    // the contrastive term wants a second view (the same image here), whether the
    // encoder or the EMA teacher takes it
    ObjectiveLosses loss = objective_forward(&m.obj, b.view1, b.clean1,
                                             objective_loader_views(&m.spec.objective) == 2 ? b.view1 : NULL, b.n, 0, -1);

    const char *out = o.out;
    if (!out) {
        static char buf[4096];
        snprintf(buf, sizeof buf, "%s", o.ckpt);
        char *dot = strrchr(buf, '.');
        if (dot && !strcmp(dot, ".h5")) *dot = 0;
        strncat(buf, ".recon.h5", sizeof buf - strlen(buf) - 1);
        out = buf;
    }
    write_panels(out, &o, &info, &m, tok, &lc, &b, &loss);

    loader_close(L);
    xfree(o.keys);
    model_free(&m);
    tokenizer_free(tok);
    checkpoint_info_free(&info);
    return 0;
}
