// eval: frozen-feature evaluation of a checkpoint's encoder (or of a randomly
// initialised one, or of raw pixels): weighted kNN (DINO protocol) and a linear
// probe (L-BFGS logistic regression), on a labelled train and test split.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "frozen_features.h"
#include "gemm_tiles.h"
#include "h5io.h"
#include "loader.h"
#include "probe.h"
#include "runlog.h"
#include "setup.h"
#include "kernels.h"
#include "model.h"
#include "vit.h"

// More classes than any labelled image set has (ImageNet-21k: 21841): a larger label is corrupt.
#define EVAL_MAX_CLASSES 100000

static void usage(void) {
    printf(
        "usage: eval CHECKPOINT.h5 [options] [--key=value ...]\n"
        "       eval --random-init --config FILE.yaml [options] [--key=value ...]\n"
        "       eval --raw-pixels --config FILE.yaml [options] [--key=value ...]\n"
        "\n"
        "Frozen features of a labelled train and test split, without masking, then\n"
        "  kNN:          cosine similarity, k nearest train images vote with exp(sim/T) (DINO); top-1, top-5\n"
        "  linear probe: multinomial logistic regression on standardised features; the L2 strength is\n"
        "                chosen on a held-out part of train, then refit on all of train; test top-1\n"
        "The model comes from the checkpoint's config (config_yaml attribute; encoder tensors only).\n"
        "\n"
        "options:\n"
        "  --train SRC, --test SRC  splits (shards or ImageFolder as data_format says); default data_train, data_val\n"
        "  --random-init            a randomly initialised encoder of the config's shape (seeded by --seed=N)\n"
        "  --raw-pixels             features = the normalised image pixels (baseline)\n"
        "  --config FILE            config for --random-init / --raw-pixels (checkpoint: overrides its config)\n"
        "  --features cls|mean|both CLS token after the final norm, mean of the patch tokens, or both (default both)\n"
        "  --block L                the tokens out of blocks.L (0-based, before the final norm) instead of the\n"
        "                           final ones: masked-image models often probe better at mid depth (BEiT)\n"
        "  --last-blocks N          concatenate the features of the last N blocks (ending at --block, default the\n"
        "                           last), each block's tokens through the final norm (as DINO's linear eval\n"
        "                           with n=4, which takes the CLS tokens alone: --features cls); default 1\n"
        "  --batch N                images per forward pass (default 128)\n"
        "  --crop-pct F             eval resize = img_size / F, then centre crop (default 1: no crop)\n"
        "  --k N, --knn-t F         kNN neighbours and temperature (default 20, 0.07)\n"
        "  --holdout F              share of train held out to choose the L2 strength (default 0.1); the\n"
        "                           candidate fits use at most 20000 of the other train images\n"
        "  --lambdas a,b,...        L2 strengths to try (default 1e-6,1e-5,...,1e-1)\n"
        "  --max-iter N             L-BFGS iterations per fit (default 500)\n"
        "  --limit-train N, --limit-test N   use only the first N images of a split\n"
        "  --val-from-train N       score on N train images (a seeded draw) instead of the test split: kNN bank\n"
        "                           and probe use the rest of train. For choosing a recipe or a feature without\n"
        "                           looking at the test set, which is then scored once\n"
        "  --no-knn, --no-probe     skip one protocol\n"
        "  --teacher                the checkpoint's EMA teacher encoder (teacher_momentum > 0) instead of the student\n"
        "  --save-features F.h5     write train/test features and labels (for comparisons)\n"
        "  --out F.json             results (default: beside the checkpoint, <name>.eval.json)\n"
        "  --key=value              any config key, e.g. --num_workers=2 --data_format=imagefolder\n");
}

typedef struct {
    float *x;      // [n, d]
    int32_t *y;    // [n]
    size_t n;
    int d, classes;
} Split;

// Features of every image of one split, in the loader's (sequential) order.
// block -1: the final norm's tokens; n_blocks > 1: blocks block-n_blocks+1..block (block -1: the last),
// each through the final norm, concatenated.
static Split extract(const Config *cfg, const char *source, const char *name, Vit *vit, FeatureKind kind, int block,
                     int n_blocks, int batch, double crop_pct, long limit) {
    LoaderConfig lc = loader_config_from(cfg, source, LOADER_EVAL, 0);
    lc.batch_size = batch;
    lc.eval_resize = (float)(int)(cfg->img_size / crop_pct + 0.5);
    Loader *L = loader_open(&lc);
    require_labelled(L, name, source, "evaluation (kNN and the linear probe)");
    size_t total = (size_t)loader_num_samples(L);
    if (limit > 0 && (size_t)limit < total) total = (size_t)limit;
    Split s = {0};
    FeatureSpec spec = {.kind = kind, .block = block, .n_blocks = n_blocks};
    s.d = vit ? features_dim(vit, &spec) : lc.channels * lc.image_size * lc.image_size;
    FeatureScratch scratch = {0};
    if (vit) features_scratch_alloc(&scratch, vit, batch, &spec);
    s.x = xmalloc(total * s.d * sizeof(float) + 1, "features");
    s.y = xmalloc(total * sizeof(int32_t) + 1, "labels");
    fprintf(stderr, "features of the %s split: %zu images from %s\n", name, total, source);
    Progress pr;
    long steps = (long)((total + batch - 1) / batch);
    progress_init(&pr, stderr, 0, steps, 0);
    double t0 = now_seconds(), last = t0;
    Batch b;
    long step = 0;
    while (s.n < total && loader_next(L, &b) == 1) {
        int n = b.n < (int)(total - s.n) ? b.n : (int)(total - s.n);
        size_t pix = (size_t)b.channels * b.height * b.width;
        for (int i = 0; i < n; i++) {
            if (b.labels[i] < 0) fatal("%s split '%s' has an image without a label; eval needs labelled data", name, source);
            s.y[s.n + i] = b.labels[i];
        }
        float *out = s.x + s.n * s.d;
        if (!vit) {
            memcpy(out, b.view1, n * pix * sizeof(float));
        } else {
            features_forward(vit, b.view1, n, &spec, &scratch, out, s.d);
        }
        s.n += n;
        step++;
        double now = now_seconds();
        if (now - last > (pr.tty ? 1.0 : 10.0) || s.n == total) {
            progress_update(&pr, step, (double)s.n / total, s.n / (now - t0 + 1e-9), NULL, 0);
            last = now;
        }
    }
    progress_end(&pr);
    int64_t skipped = 0;
    for (int r = 0; r < SKIP_NUM_REASONS; r++) skipped += loader_skipped(L, (SkipReason)r);
    if (skipped)
        warn("%s split '%s': %lld images skipped (unreadable; see the warnings above); the accuracies are over the "
             "%zu read", name, source, (long long)skipped, s.n);
    loader_close(L);
    features_scratch_free(&scratch);
    if (s.n == 0) fatal("%s split '%s' gave no images", name, source);
    size_t bad = 0;
    for (size_t i = 0; i < s.n * s.d; i++) bad += !isfinite(s.x[i]);
    if (bad)  // a NaN would win every kNN vote it took part in, and poison the probe
        fatal("%s split '%s': %zu feature values are NaN or infinite; the checkpoint's weights are not usable",
              name, source, bad);
    for (size_t i = 0; i < s.n; i++) {
        if (s.y[i] < 0 || s.y[i] >= EVAL_MAX_CLASSES)
            fatal("%s split '%s': image %zu has label %d, outside [0, %d): a corrupt label (eval sizes its classes "
                  "by the largest label)", name, source, i, s.y[i], EVAL_MAX_CLASSES);
        if (s.y[i] + 1 > s.classes) s.classes = s.y[i] + 1;
    }
    fprintf(stderr, "  %zu images, %d dims, %.1f s (%.0f img/s)\n", s.n, s.d, now_seconds() - t0, s.n / (now_seconds() - t0 + 1e-9));
    return s;
}

// Move n rows of train (a seeded draw) into a validation split; train keeps the rest, in order.
static Split split_off_validation(Split *tr, size_t n, uint64_t seed) {
    if (n >= tr->n) fatal("--val-from-train %zu: the train split has only %zu images", n, tr->n);
    uint32_t *perm = xmalloc(tr->n * sizeof(uint32_t), "permutation");
    for (size_t i = 0; i < tr->n; i++) perm[i] = (uint32_t)i;
    Rng r;
    rng_seed(&r, seed, 0x7a1);
    rng_shuffle_u32(&r, perm, tr->n);
    uint8_t *is_val = xcalloc(tr->n, 1, "validation rows");
    for (size_t i = 0; i < n; i++) is_val[perm[i]] = 1;
    Split va = {.x = xmalloc(n * tr->d * sizeof(float) + 1, "validation features"),
                .y = xmalloc(n * sizeof(int32_t) + 1, "validation labels"), .d = tr->d, .classes = tr->classes};
    size_t kept = 0;
    for (size_t i = 0; i < tr->n; i++) {
        Split *dst = is_val[i] ? &va : tr;
        size_t j = is_val[i] ? va.n++ : kept++;
        memmove(dst->x + j * tr->d, tr->x + i * tr->d, tr->d * sizeof(float));
        dst->y[j] = tr->y[i];
    }
    tr->n = kept;
    xfree(perm);
    xfree(is_val);
    return va;
}

static void save_features(const char *path, const Split *tr, const Split *te) {
    hid_t f = h5_create(path);
    hsize_t d2[2] = {tr->n, (hsize_t)tr->d}, d1[1] = {tr->n};
    h5_write_f32(f, "train_features", tr->x, 2, d2);
    h5_write_i32(f, "train_labels", tr->y, 1, d1);
    d2[0] = d1[0] = te->n;
    h5_write_f32(f, "test_features", te->x, 2, d2);
    h5_write_i32(f, "test_labels", te->y, 1, d1);
    h5_close(f);
}

static int parse_lambdas(const char *s, double *out, int max) {
    int n = 0;
    char *end;
    while (*s) {
        if (n == max) fatal("--lambdas: more than %d values", max);
        double v = strtod(s, &end);
        if (end == s || !(v > 0)) fatal("--lambdas: '%s' is not a list of positive numbers", s);
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

// Eval's own options; config files and --key=value keys are applied afterwards (load_config).
typedef struct {
    const char *ckpt, *train, *test, *out_json, *feat_path;
    int teacher, random_init, raw, batch, k, max_iter, do_knn, do_probe;
    double knn_t, holdout, crop_pct;
    long limit_train, limit_test, val_from_train;
    FeatureKind kind;
    double lambdas[16];
    int n_lambdas;
    int block;     // -1: the final norm's tokens
    int n_blocks;
    char **keys;   // --key=value, in the order given
    int nkeys;
    const char *config_files[16];
    int nconf;
} Options;

// What the protocols found.
typedef struct {
    Split tr, te;
    int classes;
    double top1, top5;  // kNN
    ProbeResult pr;
    double t_feat, t_knn, t_probe;
} Results;

// Pass 1: eval's own options, range-checked. Returns 1 when --help was asked (usage printed).
static int parse_args(Options *o, int argc, char **argv) {
    *o = (Options){.batch = 128, .k = 20, .max_iter = 500, .do_knn = 1, .do_probe = 1, .knn_t = 0.07, .holdout = 0.1,
                   .crop_pct = 1.0, .kind = FEAT_BOTH, .lambdas = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}, .n_lambdas = 6,
                   .block = -1, .n_blocks = 1};
    o->keys = xcalloc(argc + 1, sizeof(char *), "args");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE() (v ? (i++, v) : (fatal("%s needs a value (see --help)", a), ""))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 1;
        } else if (!strcmp(a, "--random-init")) o->random_init = 1;
        else if (!strcmp(a, "--raw-pixels")) o->raw = 1;
        else if (!strcmp(a, "--no-knn")) o->do_knn = 0;
        else if (!strcmp(a, "--teacher")) o->teacher = 1;
        else if (!strcmp(a, "--no-probe")) o->do_probe = 0;
        else if (!strcmp(a, "--train")) o->train = VALUE();
        else if (!strcmp(a, "--test")) o->test = VALUE();
        else if (!strcmp(a, "--out")) o->out_json = VALUE();
        else if (!strcmp(a, "--save-features")) o->feat_path = VALUE();
        else if (!strcmp(a, "--config") || !strcmp(a, "-c")) {
            if (o->nconf == 16) fatal("at most 16 --config files");
            o->config_files[o->nconf++] = VALUE();
        } else if (!strcmp(a, "--batch")) o->batch = (int)arg_int(a, VALUE(), 1, INT_MAX);
        else if (!strcmp(a, "--k")) o->k = (int)arg_int(a, VALUE(), 1, 4096);
        else if (!strcmp(a, "--knn-t")) o->knn_t = arg_real(a, VALUE(), -HUGE_VAL, HUGE_VAL);
        else if (!strcmp(a, "--holdout")) o->holdout = arg_real(a, VALUE(), -HUGE_VAL, HUGE_VAL);
        else if (!strcmp(a, "--crop-pct")) o->crop_pct = arg_real(a, VALUE(), -HUGE_VAL, HUGE_VAL);
        else if (!strcmp(a, "--max-iter")) o->max_iter = (int)arg_int(a, VALUE(), 1, INT_MAX);
        else if (!strcmp(a, "--limit-train")) o->limit_train = arg_int(a, VALUE(), 0, LONG_MAX);
        else if (!strcmp(a, "--limit-test")) o->limit_test = arg_int(a, VALUE(), 0, LONG_MAX);
        else if (!strcmp(a, "--val-from-train")) o->val_from_train = arg_int(a, VALUE(), 0, LONG_MAX);
        else if (!strcmp(a, "--block")) o->block = (int)arg_int(a, VALUE(), INT_MIN, INT_MAX);
        else if (!strcmp(a, "--last-blocks")) o->n_blocks = (int)arg_int(a, VALUE(), INT_MIN, INT_MAX);
        else if (!strcmp(a, "--lambdas")) o->n_lambdas = parse_lambdas(VALUE(), o->lambdas, 16);
        else if (!strcmp(a, "--features")) {
            const char *f = VALUE();
            if (!strcmp(f, "cls")) o->kind = FEAT_CLS;
            else if (!strcmp(f, "mean")) o->kind = FEAT_MEAN;
            else if (!strcmp(f, "both")) o->kind = FEAT_BOTH;
            else fatal("--features: '%s' is not cls, mean or both", f);
        } else if (!strncmp(a, "--", 2)) o->keys[o->nkeys++] = argv[i];
        else if (!o->ckpt) o->ckpt = a;
        else fatal("unexpected argument '%s' (one checkpoint at most; see --help)", a);
#undef VALUE
    }
    if (!o->ckpt && !o->random_init && !o->raw) fatal("give a checkpoint, --random-init or --raw-pixels (see --help)");
    if (o->ckpt && (o->random_init || o->raw)) fatal("a checkpoint and --random-init/--raw-pixels exclude each other");
    if (o->teacher && !o->ckpt) fatal("--teacher reads a checkpoint's EMA teacher: give the checkpoint");
    // the integer options are range-checked as they are parsed (arg_int); these bounds are open
    if (!(o->knn_t > 0) || !(o->holdout > 0 && o->holdout < 1) || !(o->crop_pct > 0 && o->crop_pct <= 1))
        fatal("bad option value: need --knn-t > 0, 0 < --holdout < 1, 0 < --crop-pct <= 1");
    return 0;
}

// The config: the checkpoint's, then files, then --key=value. info: the checkpoint's (zeroed without one).
static void load_config(Config *cfg, CheckpointInfo *info, const Options *o) {
    char err[4096];
    config_defaults(cfg);
    *info = (CheckpointInfo){0};
    if (o->ckpt) {
        if (checkpoint_read_info(o->ckpt, info, err, sizeof err)) fatal("%s", err);
        if (config_load_string(cfg, info->config_yaml, o->ckpt, err, sizeof err)) fatal("config stored in %s", err);
    }
    for (int i = 0; i < o->nconf; i++)
        if (config_load_file(cfg, o->config_files[i], err, sizeof err)) fatal("%s", err);
    for (int i = 0; i < o->nkeys; i++)
        if (config_set(cfg, o->keys[i], err, sizeof err)) fatal("%s", err);
    if (config_finalize(cfg, err, sizeof err)) fatal("%s", err);
}

// The encoder must be the one the checkpoint holds, fed as it was trained.
static void check_encoder_unchanged(const Config *cfg, const CheckpointInfo *info, const char *ckpt) {
    static const char *const model_keys[] = {"model", "img_size", "patch_size", "in_chans", "embed_dim", "depth",
                                             "num_heads", "mlp_ratio", "qkv_bias", "layer_scale_init",
                                             "mean", "std", NULL};
    char err[4096];
    Config stored;
    if (checkpoint_config(info, ckpt, &stored, err, sizeof err)) fatal("%s; eval cannot rebuild its encoder", err);
    char diff[1024];
    if (config_diff_only(&stored, cfg, model_keys, diff, sizeof diff))
        fatal("--config/--key change the encoder %s was trained as (checkpoint vs now: %s); drop them", ckpt, diff);
}

// The options that depend on the model (--block, --last-blocks) and the splits (default: the config's).
static void check_options(Options *o, const Config *cfg) {
    int block = o->block, n_blocks = o->n_blocks;
    if (block < -1 || block >= cfg->depth) fatal("--block %d: the model has blocks 0..%d", block, cfg->depth - 1);
    if (block >= 0 && o->raw) fatal("--block needs a model, not --raw-pixels");
    if (n_blocks < 1 || n_blocks > (block >= 0 ? block + 1 : cfg->depth))
        fatal("--last-blocks %d: need 1..%d (the blocks up to %s)", n_blocks, block >= 0 ? block + 1 : cfg->depth,
              block >= 0 ? "--block" : "the last");
    if (n_blocks > 1 && o->raw) fatal("--last-blocks needs a model, not --raw-pixels");
    if (!o->train) o->train = cfg->data_train;
    if (!o->test || o->val_from_train) o->test = o->val_from_train ? "validation split of train" : cfg->data_val;
    if (!o->train[0] || !o->test[0]) fatal("no data: give --train and --test (or data_train and data_val in the config)");
    if (!o->val_from_train && !strcmp(o->train, o->test))
        fatal("--train and --test are the same data ('%s'): every test image would be in the kNN's bank", o->train);
}

// The encoder of the config's shape (init seeded by cfg.seed), then the checkpoint's weights (student or
// EMA teacher) over it; activations for o->batch images. NULL with --raw-pixels (m untouched).
static Vit *build_encoder(Model *m, const Options *o, const Config *cfg) {
    if (o->raw) return NULL;
    // the config's precision (a checkpoint's own, or --precision=...): bf16 features come 1.5x faster
    gemm_set_precision(strcmp(cfg->precision, "bf16") ? GEMM_FP32 : GEMM_BF16);
    ModelSpec spec = {.kind = MODEL_ENCODER, .vit = vit_config_from(cfg, 0, 0), .max_batch = o->batch,
                      .seed = (uint64_t)cfg->seed, .optimizer = 0};
    model_build(m, &spec, NULL);
    if (o->ckpt) {
        char err[4096];
        CheckpointState st = {.params = &m->params, .mode = o->teacher ? CKPT_LOAD_TEACHER : CKPT_LOAD_ENCODER};
        if (checkpoint_load(o->ckpt, &st, err, sizeof err)) fatal("%s", err);
    }
    return &m->vit;
}

// One line on stderr: which features of which model.
static void announce(const Options *o, const Config *cfg, const CheckpointInfo *info, const Vit *model, const char *what) {
    FeatureKind kind = o->kind;
    int block = o->block;
    fprintf(stderr, "eval: %s", what);
    if (o->ckpt) fprintf(stderr, " (%sstep %lld, code %s)", o->teacher ? "its EMA teacher, " : "", (long long)info->step,
                         info->code_version);
    if (model) fprintf(stderr, ", ViT %dpx/%d D=%d depth %d, features %s", cfg->img_size, cfg->patch_size, cfg->embed_dim,
                       cfg->depth, kind == FEAT_BOTH ? "cls+mean" : feature_kind_name(kind));
    if (model && o->n_blocks > 1) fprintf(stderr, " of the %d blocks up to blocks.%d, each through the final norm",
                                          o->n_blocks, block >= 0 ? block : cfg->depth - 1);
    else if (model) fprintf(stderr, block >= 0 ? " of blocks.%d" : " after the final norm", block);
    fprintf(stderr, "\n");
}

// Features of both splits (or train and its validation draw), then kNN and the linear probe.
static Results run_protocols(const Options *o, const Config *cfg, Vit *model) {
    Results r = {.top1 = NAN, .top5 = NAN};
    double t0 = now_seconds();
    r.tr = extract(cfg, o->train, "train", model, o->kind, o->block, o->n_blocks, o->batch, o->crop_pct, o->limit_train);
    r.te = o->val_from_train ? split_off_validation(&r.tr, (size_t)o->val_from_train, (uint64_t)cfg->seed)
                             : extract(cfg, o->test, "test", model, o->kind, o->block, o->n_blocks, o->batch, o->crop_pct,
                                       o->limit_test);
    if (o->val_from_train)
        fprintf(stderr, "validation: %zu of the train images (seeded draw); bank and probe use the other %zu\n", r.te.n,
                r.tr.n);
    r.t_feat = now_seconds() - t0;
    r.classes = r.tr.classes > r.te.classes ? r.tr.classes : r.te.classes;
    if (o->feat_path) save_features(o->feat_path, &r.tr, &r.te);

    const Split *tr = &r.tr, *te = &r.te;
    if (o->do_knn) {
        double t = now_seconds();
        knn_eval(tr->x, tr->y, tr->n, te->x, te->y, te->n, tr->d, r.classes, o->k, o->knn_t, &r.top1, &r.top5);
        r.t_knn = now_seconds() - t;
    }
    r.pr.test_top1 = r.pr.lambda = NAN;
    if (o->do_probe) {
        double t = now_seconds();
        fprintf(stderr, "linear probe: %d L2 strengths on %zu train images, %.0f%% held out\n", o->n_lambdas, tr->n,
                o->holdout * 100);
        linear_probe(tr->x, tr->y, tr->n, te->x, te->y, te->n, tr->d, r.classes, o->lambdas, o->n_lambdas, o->holdout,
                     (uint64_t)cfg->seed, o->max_iter, 1, &r.pr);
        r.t_probe = now_seconds() - t;
    }
    return r;
}

// The results table on stdout.
static void print_report(const Options *o, const CheckpointInfo *info, const Results *r, const char *what) {
    const ProbeResult *pr = &r->pr;
    printf("\n%-28s %s\n", "model", what);
    if (o->ckpt) printf("%-28s %lld\n", "step", (long long)info->step);
    printf("%-28s %zu / %zu images, %d classes, %d dims\n", "train / test", r->tr.n, r->te.n, r->classes, r->tr.d);
    if (o->do_knn) printf("%-28s top-1 %6.2f   top-5 %6.2f   (k=%d, T=%g)\n", "kNN", r->top1, r->top5, o->k, o->knn_t);
    if (o->do_probe) {
        printf("%-28s top-1 %6.2f   (L2 %g = sklearn C %.4g; train top-1 %.2f)\n", "linear probe", pr->test_top1,
               pr->lambda, 1.0 / (pr->lambda * r->tr.n), pr->train_top1);
        printf("%-28s", "  held-out top-1 by L2");
        for (int i = 0; i < pr->n_lambdas; i++) printf(" %g:%.2f", pr->lambdas[i], pr->holdout_top1[i]);
        printf("\n");
    }
    printf("%-28s features %.1f s, kNN %.1f s, probe %.1f s\n", "time", r->t_feat, r->t_knn, r->t_probe);
}

// The results as one JSON line, written atomically to `path`.
static void write_json(const char *path, const Options *o, const CheckpointInfo *info, const Results *r, const char *what) {
    const ProbeResult *pr = &r->pr;
    FeatureKind kind = o->kind;
    JsonLine j = {0};
    json_begin(&j);
    json_str(&j, "model", what);
    if (o->ckpt) json_int(&j, "step", info->step);
    json_int(&j, "teacher", o->teacher);
    json_str(&j, "features", o->raw ? "pixels" : feature_kind_name(kind));
    json_int(&j, "block", o->block);
    json_int(&j, "last_blocks", o->n_blocks);
    json_str(&j, "train", o->train);
    json_str(&j, "test", o->test);
    json_int(&j, "n_train", (long long)r->tr.n);
    json_int(&j, "n_test", (long long)r->te.n);
    json_int(&j, "val_from_train", o->val_from_train);
    json_int(&j, "dim", r->tr.d);
    json_int(&j, "classes", r->classes);
    json_int(&j, "knn_k", o->k);
    json_num(&j, "knn_t", o->knn_t);
    json_num(&j, "knn_top1", r->top1);
    json_num(&j, "knn_top5", r->top5);
    json_num(&j, "probe_top1", pr->test_top1);
    json_num(&j, "probe_train_top1", pr->train_top1);
    json_num(&j, "probe_l2", pr->lambda);
    json_num(&j, "probe_sklearn_C", o->do_probe ? 1.0 / (pr->lambda * r->tr.n) : NAN);
    json_num(&j, "probe_holdout", o->holdout);
    json_int(&j, "probe_iters", pr->iters);
    json_num(&j, "probe_grad_max", o->do_probe ? pr->grad_max : NAN);
    json_num(&j, "seconds_features", r->t_feat);
    json_num(&j, "seconds_knn", r->t_knn);
    json_num(&j, "seconds_probe", r->t_probe);
    const char *text = json_end(&j);
    size_t n = strlen(text);
    char *line = xmalloc(n + 2, "results line");
    memcpy(line, text, n);
    line[n] = '\n';
    // atomically: the main job reuses cached results, so a cut-short file must never exist
    char err[4096];
    if (file_write_atomic(path, line, n + 1, "results", err, sizeof err) != 0) fatal("%s", err);
    xfree(line);
    json_free(&j);
    printf("%-28s %s\n", "results", path);
}

int main(int argc, char **argv) {
    Options o;
    if (parse_args(&o, argc, argv)) return 0;
    Config cfg;
    CheckpointInfo info;
    load_config(&cfg, &info, &o);
    if (o.ckpt) check_encoder_unchanged(&cfg, &info, o.ckpt);
    check_options(&o, &cfg);

    Model m;
    Vit *model = build_encoder(&m, &o, &cfg);
    const char *what = o.raw ? "raw pixels" : o.random_init ? "random init" : o.ckpt;
    announce(&o, &cfg, &info, model, what);
    Results r = run_protocols(&o, &cfg, model);
    print_report(&o, &info, &r, what);

    char json_path[4096];
    const char *out_json = o.out_json;
    if (!out_json && o.ckpt) {  // beside the checkpoint
        char *real = realpath(o.ckpt, NULL);  // `latest` -> the checkpoint it names
        snprintf(json_path, sizeof json_path, "%s", real ? real : o.ckpt);
        free(real);
        char *dot = strrchr(json_path, '.');
        if (dot && !strcmp(dot, ".h5")) *dot = 0;
        strncat(json_path, ".eval.json", sizeof json_path - strlen(json_path) - 1);
        out_json = json_path;
    }
    if (out_json) write_json(out_json, &o, &info, &r, what);
    if (model) model_free(&m);
    checkpoint_info_free(&info);
    xfree(r.tr.x), xfree(r.tr.y), xfree(r.te.x), xfree(r.te.y), xfree(o.keys);
    return 0;
}
