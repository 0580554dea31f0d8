// train.c: the trainer program. Reads the config, streams the data, builds or
// loads the centroid tokenizer, and trains the ViT with the CCViT objective,
// the contrastive objective, or both; logs metrics, saves checkpoints, resumes.
//
//   train --config configs/fashion_mnist.yaml [--key=value ...]
//   train --help
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "diagnostics.h"
#include "distributed.h"
#include "gemm_tiles.h"
#include "kernels.h"
#include "live_knn.h"
#include "loader.h"
#include "model.h"
#include "objective.h"
#include "optim.h"
#include "perf.h"
#include "runlog.h"
#include "setup.h"
#include "step.h"
#include "tokenizer.h"
#include "tokenizer_sample.h"

// ---- signals -------------------------------------------------------------------------
// SIGINT/SIGTERM/SIGUSR1 ask for a clean stop: the current step finishes, a
// checkpoint is written, and the run exits 0. A second SIGINT aborts at once.
static volatile sig_atomic_t stop_signal = 0;
static volatile sig_atomic_t sigint_count = 0;

static void on_signal(int sig) {
    if (sig == SIGINT && ++sigint_count >= 2) {
        static const char msg[] = "\nsecond SIGINT: aborting without a checkpoint\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
        _exit(130);
    }
    stop_signal = sig;
}

static void install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

// ---- the trainer's own resumable state ---------------------------------------------
// Masking draws derive from (seed, micro-step, image) and the data order from
// the loader's cursor, so this is all the trainer itself must carry.
typedef struct {
    uint64_t magic, seed;
    int64_t micro_steps;      // micro-batches consumed
    int64_t images_seen;
} TrainerState;
#define TRAINER_STATE_MAGIC 0x63637669742d7473ULL

static double schedule_lr(const Config *cfg, long step, long warmup, long total) {
    if (!strcmp(cfg->sched, "constant")) return step < warmup ? cfg->lr * (step + 1) / (double)warmup : cfg->lr;
    if (!strcmp(cfg->sched, "linear")) {
        if (step < warmup) return cfg->lr * (step + 1) / (double)warmup;
        double p = total > warmup ? (double)(step - warmup) / (double)(total - warmup) : 1.0;
        return cfg->lr + (cfg->min_lr - cfg->lr) * (p > 1 ? 1 : p);
    }
    return lr_at_step(step, cfg->lr, cfg->min_lr, warmup, total);
}

static void print_bytes(const char *what, size_t bytes) {
    printf("  %-28s %9.1f MiB\n", what, bytes / 1048576.0);
}

// Whether to stop before the update after `done` updates, agreed on by every rank: a
// signal, the time limit, or stop_at_step. Fills *reason when it does.
static int agree_on_stop(const Config *cfg, long done, double t_start, const char **reason) {
    int stop = stop_signal == SIGTERM ? 4 : stop_signal == SIGUSR1 ? 3 : stop_signal ? 2 : 0;
    if (!stop && cfg->time_limit_minutes > 0 && now_seconds() - t_start > cfg->time_limit_minutes * 60.0) stop = 1;
    dist_allreduce_max_int(&stop);
    if (!stop && cfg->stop_at_step > 0 && done >= cfg->stop_at_step) stop = 5;  // the same on every rank
    if (stop) *reason = (const char *[]){"", "time limit", "SIGINT", "SIGUSR1", "SIGTERM", "stop_at_step"}[stop];
    return stop;
}

// Resume continues bit-exactly only with the config the checkpoint was trained with.
// Changing a key on purpose (a lower lr after a NaN, more steps) is allowed; say which
// keys changed, so that nobody takes the result for the uninterrupted run's.
static void warn_config_changes(const Config *now, const char *resume_path) {
    // keys that steer the run (where, how often, when to stop), not its numbers; the
    // tokenizer comes from the checkpoint, so its build keys do not matter either
    static const char *const steering[] = {"data_val", "num_workers", "output_dir", "run_name", "log_every",
                                           "save_every", "keep_last", "keep_every", "time_limit_minutes",
                                           "stop_at_step", "resume", "finetune", "tokenizer_path",
                                           "tokenizer_images_per_class", "tokenizer_iters",
                                           "tokenizer_max_patches", NULL};
    CheckpointInfo info;
    char err[1024], diff[1536];
    if (checkpoint_read_info(resume_path, &info, err, sizeof err) != 0) fatal("resume: %s", err);
    Config then;
    if (checkpoint_config(&info, resume_path, &then, err, sizeof err) != 0) {
        warn("resume: %s; cannot check that this run's config matches it", err);
    } else {
        // AdamW's bias correction counts from the run's first update for every tensor,
        // so a tensor unfrozen now would start with moments of 0 and a correction of ~1:
        // first steps ~3x the lr (torch counts per tensor).
        if (then.freeze_patch_embed != now->freeze_patch_embed)
            fatal("resume: freeze_patch_embed was %s in %s and is %s now; changing it on resume is not supported "
                  "(the optimiser's state would be wrong for the patch embedding): keep %s, or start a new run",
                  then.freeze_patch_embed ? "true" : "false", resume_path,
                  now->freeze_patch_embed ? "true" : "false", then.freeze_patch_embed ? "true" : "false");
        // the same global batch over another number of ranks continues the same run
        if (then.global_batch_size > 0 && then.global_batch_size == now->global_batch_size)
            then.batch_size = now->batch_size;
        int n = config_diff_except(&then, now, steering, diff, sizeof diff);
        if (n)
            warn("resume: %d key%s differ from the config %s was trained with (checkpoint vs now: %s); the run "
                 "continues with the new values and is no longer the same as an uninterrupted run",
                 n, n == 1 ? "" : "s", resume_path, diff);
    }
    checkpoint_info_free(&info);
}

// The run's state after update `done` into run_dir. Every rank's data cursor is at the same
// place in the one global stream: rank 0 merges them into the one the checkpoint holds (the
// skip counts summed), so that any number of ranks can resume from it. 0, or -1 with the
// reason in err.
static int save_checkpoint(const char *run_dir, CheckpointState *cs, const Loader *loader, void *cursor, void *cursors,
                           long done, int64_t epoch, const Config *cfg, int rank, int world, char *err, size_t errlen) {
    loader_cursor_save(loader, cursor);
    dist_gather_bytes(cursor, loader_cursor_size(), cursors);
    cs->step = done;
    cs->epoch = epoch;
    if (rank != 0) return 0;
    if (!loader_cursor_merge(cursors, world, cs->cursor))
        fatal("checkpoint at step %ld: the ranks' data cursors disagree (see the warning above)", done);
    return checkpoint_save_step(run_dir, cs, cfg->keep_last, cfg->keep_every, err, errlen);
}

static Tokenizer *obtain_tokenizer_once(const Config *cfg, const char *run_dir, const char *resume_path);

// The tokenizer, and a word when its K is not the config's num_centroids (a given file wins).
static Tokenizer *obtain_tokenizer(const Config *cfg, const char *run_dir, const char *resume_path) {
    Tokenizer *t = obtain_tokenizer_once(cfg, run_dir, resume_path);
    if (t->k != cfg->num_centroids)
        warn("tokenizer: it has K = %d centroids, the config says num_centroids = %d; the run uses K = %d (the "
             "checkpoint records the tokenizer)", t->k, cfg->num_centroids, t->k);
    return t;
}

static Tokenizer *obtain_tokenizer_once(const Config *cfg, const char *run_dir, const char *resume_path) {
    char err[1024], path[4096];
    if (cfg->tokenizer_path[0]) {
        printf("tokenizer: loading %s\n", cfg->tokenizer_path);
        return tokenizer_load(cfg->tokenizer_path);
    }
    if (resume_path) {
        Tokenizer *t = checkpoint_load_tokenizer(resume_path, err, sizeof err);
        if (!t) fatal("%s", err);
        printf("tokenizer: from checkpoint %s\n", resume_path);
        return t;
    }
    snprintf(path, sizeof path, "%s/tokenizer.h5", run_dir);
    if (access(path, R_OK) == 0) {
        printf("tokenizer: reusing %s\n", path);
        return tokenizer_load(path);
    }
    LoaderConfig src = loader_config_from(cfg, cfg->data_train, LOADER_EVAL, 0);
    src.eval_resize = (float)cfg->img_size;  // CCViT: resize to the training resolution, centre crop
    PatchSampleOptions so = {.patch = cfg->patch_size, .images_per_class = cfg->tokenizer_images_per_class,
                             .max_samples = cfg->tokenizer_max_patches, .seed = (uint64_t)cfg->seed};
    double t0 = now_seconds();
    size_t n;
    int64_t images;
    float *patches = tokenizer_sample_patches(&src, &so, &n, &images);
    KmeansOptions ko = kmeans_defaults(cfg->num_centroids);
    ko.max_iter = cfg->tokenizer_iters;
    ko.seed = (uint64_t)cfg->seed;
    ko.verbose = 1;
    if ((size_t)ko.k > n) fatal("tokenizer: %zu patches sampled, fewer than num_centroids = %d; raise tokenizer_images_per_class", n, ko.k);
    printf("tokenizer: k-means, K=%d, on %zu patches of %lld images from %s\n", ko.k, n, (long long)images, cfg->data_train);
    Tokenizer *t = tokenizer_build(patches, n, cfg->patch_size, cfg->in_chans, &ko, cfg->data_train);
    xfree(patches);
    tokenizer_save(t, path);
    printf("tokenizer: built in %.1f s, saved to %s\n", now_seconds() - t0, path);
    return t;
}

// Top-1 accuracy of the classification head (mean-pooled features) on data_val.
static double classifier_top1(Vit *vit, const Config *cfg) {
    LoaderConfig lc = loader_config_from(cfg, cfg->data_val, LOADER_EVAL, 0);
    lc.eval_resize = (float)cfg->img_size;
    lc.batch_size = vit->max_batch;
    Loader *l = loader_open(&lc);
    require_labelled(l, "data_val", cfg->data_val, "fine-tuning");
    Batch b;
    long correct = 0, total = 0;
    vit->drop_active = 0;
    vit->head.targets = NULL;  // the labels, not the last training batch's mixed targets
    while (loader_next(l, &b)) {
        for (int i = 0; i < b.n; i++)
            if (b.labels[i] < 0 || b.labels[i] >= vit->cfg.num_classes)
                fatal("finetune: data_val '%s' has label %d, outside [0, num_classes = %d)", cfg->data_val,
                      b.labels[i], vit->cfg.num_classes);
        vit_forward(vit, b.view1, NULL, b.n);
        vit_head_forward(vit, b.labels, b.n, 1);
        int K = vit->cfg.num_classes;
        for (int i = 0; i < b.n; i++) {
            const float *row = vit->head.logits + (long)i * K;
            int arg = 0;
            for (int k = 1; k < K; k++) arg = row[k] > row[arg] ? k : arg;
            correct += arg == b.labels[i];
            total++;
        }
    }
    loader_close(l);
    return total ? (double)correct / total : NAN;
}

// ---- the run: everything set up before the first update --------------------------------
typedef struct {
    Config cfg;
    int rank, world, finetune;
    char run_dir[4096], resume_buf[4096];
    const char *resume_path;       // NULL: a fresh run
    char *yaml;                    // the effective config
    RunLog *rl;                    // rank 0 only
    Loader *loader;
    Tokenizer *tok;
    Model model;
    long steps_per_epoch, total_steps, warmup, start_step;
    TrainerState ts;
    CheckpointState cs;
    void *cursor;                  // this rank's data cursor
    char *cursors;                 // rank 0: every rank's, in rank order
    void *merged_cursor;           // the one the checkpoint holds: the common position, every rank's counts
    double peak_gflops;            // the MFU yardstick
    LiveKnn *knn;                  // rank 0, pretraining on labelled data: the live kNN signal
    double knn_top1;               // its latest value (-1: none yet)
    int knn_fresh;                 // 1: taken at this update, for its metrics line
    SpectrumProbe probe;           // collapse diagnostic over CLS rows
    float *probe_rows;
    Stepper stepper;
} Run;

// batch_size becomes this rank's share of global_batch_size when that is given: the data
// stream, masks and schedule are then those of one process with the global batch.
static void run_derive_batch(Run *r) {
    Config *cfg = &r->cfg;
    if (cfg->global_batch_size <= 0) return;
    if (cfg->global_batch_size % r->world != 0)
        fatal("config: global_batch_size %d does not split over %d ranks; make it a multiple of %d",
              cfg->global_batch_size, r->world, r->world);
    cfg->batch_size = cfg->global_batch_size / r->world;
}

// Config, run folder and log, precision; under mpirun rank 0 alone prints, logs and
// writes checkpoints (the others' stdout goes to /dev/null).
static void run_open(Run *r, int argc, char **argv) {
    dist_init(&argc, &argv);
    r->rank = dist_rank(), r->world = dist_world();
    if (r->rank != 0 && !freopen("/dev/null", "w", stdout)) fatal("rank %d: cannot silence stdout", r->rank);
    Config *cfg = &r->cfg;
    config_from_args(cfg, argc, argv);
    char err[2048];
    if (config_check_training(cfg, err, sizeof err) != 0) fatal("%s", err);
    if (config_ignored_keys(cfg, err, sizeof err) && r->rank == 0)
        fprintf(stderr, "warning: %s\n", err);
    r->finetune = !strcmp(cfg->task, "finetune");
    run_derive_batch(r);
    dist_set_timeout(cfg->dist_timeout_s);
    gemm_set_precision(strcmp(cfg->precision, "bf16") ? GEMM_FP32 : GEMM_BF16);
    if (!cfg->run_name[0]) {
        if (!strcmp(cfg->resume, "auto")) fatal("--resume=auto needs a run_name to find the run folder");
        runlog_timestamp_name(cfg->run_name, sizeof cfg->run_name);
        dist_broadcast_bytes(cfg->run_name, sizeof cfg->run_name);  // every rank uses rank 0's name
    }
    r->yaml = config_to_yaml(cfg);
    printf("---- effective config ----\n%s--------------------------\n", r->yaml);
    r->rl = r->rank == 0 ? runlog_open(cfg->output_dir, cfg->run_name, r->yaml) : NULL;
    snprintf(r->run_dir, sizeof r->run_dir, "%s/%s", cfg->output_dir, cfg->run_name);
    dist_barrier();  // the run folder exists before any rank reads from it
    if (r->world > 1)
        printf("distributed: %d ranks (Open MPI); global batch %d = %d ranks x %d; gradients summed every update%s; "
               "contrastive negatives %s\n", r->world, cfg->batch_size * r->world, r->world, cfg->batch_size,
               cfg->reduce_overlap ? ", overlapped with the backward pass" : "", cfg->contrast_negatives);
}

// Which checkpoint to resume from, if any: rank 0 decides for everyone.
static void run_find_resume(Run *r) {
    char err[2048];
    if (!strcmp(r->cfg.resume, "auto")) {
        if (r->rank == 0) {
            int found = checkpoint_find_resume(r->run_dir, r->resume_buf, sizeof r->resume_buf, err, sizeof err);
            if (found < 0) fatal("%s", err);
            if (found == 0) {
                r->resume_buf[0] = 0;
                printf("resume: no checkpoint in %s yet, starting fresh\n", r->run_dir);
            }
        }
        dist_broadcast_bytes(r->resume_buf, sizeof r->resume_buf);
        if (r->resume_buf[0]) r->resume_path = r->resume_buf;
    } else if (r->cfg.resume[0]) {
        r->resume_path = r->cfg.resume;
        if (checkpoint_verify(r->resume_path, err, sizeof err) != 0) fatal("resume: %s", err);
    }
}

// The tokenizer (rank 0 builds it if needed, the others load it), the loader, the schedule's length.
static void run_open_data(Run *r, LoaderConfig *lc) {
    const Config *cfg = &r->cfg;
    *lc = loader_config_from(cfg, cfg->data_train, LOADER_TRAIN, !r->finetune && cfg->w_contrast > 0);
    int corrupt = !r->finetune && (cfg->w_token > 0 || cfg->w_pixel > 0);
    if (corrupt && r->rank == 0) r->tok = obtain_tokenizer(cfg, r->run_dir, r->resume_path);
    dist_barrier();  // rank 0 has built and saved it if needed; the others load it
    if (corrupt && r->rank != 0) r->tok = obtain_tokenizer(cfg, r->run_dir, r->resume_path);
    lc->rank = r->rank;
    lc->world_size = r->world;
    // the MFU yardstick, measured before the decode threads start competing for the cores
    r->peak_gflops = sgemm_peak_gflops(1536, 3);
    lc->require_labels = r->finetune;  // pretraining reads unlabeled samples (label -1)
    r->loader = loader_open(lc);
    if (r->finetune) require_labelled(r->loader, "data_train", cfg->data_train, "fine-tuning");
    r->steps_per_epoch = (long)(loader_steps_per_epoch(r->loader) / cfg->accum_steps);
    if (r->steps_per_epoch < 1) r->steps_per_epoch = 1;
    r->total_steps = cfg->steps > 0 ? cfg->steps : (long)cfg->epochs * r->steps_per_epoch;
    if (r->total_steps <= 0) r->total_steps = 1L << 40;  // time limit only (sched constant, checked above)
    r->warmup = cfg->warmup_steps > 0 ? cfg->warmup_steps : (long)lround(cfg->warmup_epochs * r->steps_per_epoch);
    if (r->warmup >= r->total_steps)
        warn("the warmup (%ld updates) is not shorter than the run (%ld updates): the lr never reaches its peak %g",
             r->warmup, r->total_steps, cfg->lr);
}

// Fine-tuning starts from a pretrained encoder (unless resuming) with a new head.
static void run_load_finetune_encoder(Run *r) {
    const Config *cfg = &r->cfg;
    char err[2048];
    if (cfg->finetune[0] && !r->resume_path) {
        CheckpointState enc = {.params = &r->model.params, .mode = CKPT_LOAD_ENCODER};
        if (checkpoint_load(cfg->finetune, &enc, err, sizeof err) != 0) fatal("finetune: %s", err);
        printf("finetune: encoder from %s (step %lld); new head, %d classes\n", cfg->finetune, (long long)enc.step,
               cfg->num_classes);
    } else if (!r->resume_path) {
        printf("finetune: no checkpoint given, training from scratch (the baseline)\n");
    }
}

// A fresh start in a run folder an earlier start wrote to (killed before its first checkpoint,
// or a run begun again without --resume): its checkpoints are moved aside, so that a later
// --resume=auto cannot pick them up, and its metrics lines are dropped, so that the log holds
// each step once.
static void run_start_fresh(Run *r) {
    if (r->rank != 0) return;
    char aside[PATH_MAX];
    int moved = checkpoint_set_aside_after(r->run_dir, 0, aside, sizeof aside);
    if (moved)
        warn("fresh start: %d checkpoint%s of an earlier run in %s moved into %s", moved, moved == 1 ? "" : "s",
             r->run_dir, aside);
    long dropped = runlog_resume_at(r->rl, 0);
    if (dropped) printf("fresh start: dropped %ld metrics lines of an earlier start in %s\n", dropped, r->run_dir);
}

// The checkpoint's view of the run, and its state when resuming.
static void run_resume(Run *r) {
    const Config *cfg = &r->cfg;
    char err[2048];
    r->ts = (TrainerState){TRAINER_STATE_MAGIC, (uint64_t)cfg->seed, 0, 0};
    size_t cursor_size = loader_cursor_size();
    r->cursor = xmalloc(cursor_size, "loader cursor");
    r->cursors = xmalloc(cursor_size * r->world, "loader cursors");
    r->merged_cursor = xmalloc(cursor_size, "merged loader cursor");
    r->cs = (CheckpointState){.params = &r->model.params, .opt = &r->model.opt, .tokenizer = r->tok,
                              .config_yaml = r->yaml, .rng = &r->ts, .rng_size = sizeof r->ts,
                              .cursor = r->merged_cursor, .cursor_size = cursor_size, .mode = CKPT_LOAD_FULL};
    if (!r->resume_path) {
        run_start_fresh(r);
        return;
    }
    const char *path = r->resume_path;
    if (checkpoint_load(path, &r->cs, err, sizeof err) != 0) fatal("resume: %s", err);
    if (r->ts.magic != TRAINER_STATE_MAGIC) fatal("resume: %s holds no trainer state from this program", path);
    if (r->ts.seed != (uint64_t)cfg->seed)
        fatal("resume: %s was trained with seed %llu, the config says %d", path, (unsigned long long)r->ts.seed, cfg->seed);
    memcpy(r->cursor, r->merged_cursor, cursor_size);
    if (r->rank != 0) loader_cursor_clear_counts(r->cursor);  // the totals live on rank 0
    if (!loader_cursor_restore(r->loader, r->cursor)) fatal("resume: the data cursor in %s does not fit this data/config", path);
    r->start_step = (long)r->cs.step;
    printf("resume: %s at step %ld (epoch %lld)\n", path, r->start_step, (long long)r->cs.epoch);
    if (r->rank == 0) {
        warn_config_changes(cfg, path);
        char aside[PATH_MAX];
        int moved = checkpoint_set_aside_after(r->run_dir, r->start_step, aside, sizeof aside);
        if (moved)
            warn("resume: %d checkpoint%s of steps after %ld (a branch this resume abandons) moved into %s", moved,
                 moved == 1 ? "" : "s", r->start_step, aside);
    }
    long dropped = r->rl ? runlog_resume_at(r->rl, r->start_step) : 0;
    if (dropped)
        printf("resume: dropped %ld metrics lines of steps after %ld (logged after that checkpoint)\n", dropped,
               r->start_step);
}

// Model, optimiser, collapse probe, stepper; then the resume.
static void run_build(Run *r, const LoaderConfig *lc) {
    const Config *cfg = &r->cfg;
    ModelSpec spec = model_spec_from(cfg, lc, r->finetune ? MODEL_CLASSIFY : MODEL_PRETRAIN, cfg->batch_size);
    model_build(&r->model, &spec, r->tok);
    if (r->finetune) run_load_finetune_encoder(r);
    // The collapse probe reads 2B CLS rows with any contrastive term: the student's two views,
    // or (EMA teacher) the student's view1 and the teacher's view2, so that its share means the
    // same in both modes (fewer rows would bias it up).
    int rows = objective_cls_rows_max(&r->model.obj);
    spectrum_probe_init(&r->probe, rows, r->model.vit.D, 5);
    r->probe_rows = xmalloc(sizeof(float) * rows * r->model.vit.D, "probe rows");
    run_resume(r);
    r->knn_top1 = -1;
    if (!r->finetune && cfg->knn_every > 0 && r->rank == 0) r->knn = live_knn_open(cfg, cfg->knn_images);
    const char *fault = getenv("CCVIT_FAULT_NAN_STEP");  // tests: make step n's token loss NaN
    r->stepper = (Stepper){.model = &r->model, .loader = r->loader, .accum_steps = cfg->accum_steps,
                           .clip_grad = cfg->clip_grad, .rank = r->rank, .world = r->world,
                           .batch_size = cfg->batch_size, .overlap = cfg->reduce_overlap,
                           .reduced_floats = objective_trained_floats(&r->model.obj),
                           .steps_per_epoch = r->steps_per_epoch, .data_train = cfg->data_train,
                           .fault_step = fault ? atol(fault) : -1, .micro_steps = &r->ts.micro_steps};  // NOLINT(cert-err34-c): a test-only fault-injection variable
}

// Model FLOPs of one rank's update (accum_steps micro-batches), for the MFU figure.
static double run_step_flops(const Run *r) {
    const Config *cfg = &r->cfg;
    const Objective *o = &r->model.obj;
    double per_micro = r->finetune ? 3.0 * cfg->batch_size * vit_forward_flops_per_image(&r->model.vit.cfg)
                                   : 3.0 * objective_forward_flops(o, cfg->batch_size) +
                                         objective_teacher_flops(o, cfg->batch_size);
    return cfg->accum_steps * per_micro;
}

static void run_print_summary(const Run *r) {
    const Config *cfg = &r->cfg;
    const Model *m = &r->model;
    const VitConfig *vc = &m->vit.cfg;
    const Objective *o = &m->obj;
    printf("model: ViT D=%d depth=%d heads=%d patch=%d img=%d chans=%d, %zu parameters (%d tensors)\n", m->vit.D,
           vc->depth, vc->num_heads, vc->patch_size, vc->img_size, vc->in_chans, m->params.total, m->params.count);
    if (r->finetune)
        printf("objective: supervised fine-tuning, %d classes, label smoothing %g, drop path %g, layer decay %g, "
               "mixup %g, cutmix %g, random erasing %g\n", cfg->num_classes, cfg->smoothing, cfg->drop_path, cfg->layer_decay,
               cfg->mixup, cfg->cutmix, cfg->reprob);
    else {
        printf("objective: w_token=%g w_pixel=%g w_contrast=%g, %d masked + %d replaced of %d patches, K=%d, views=%d%s",
               cfg->w_token, cfg->w_pixel, cfg->w_contrast, o->n_mask, o->n_replace, m->vit.N, o->K, m->views,
               o->use_teacher ? "; view2 through the EMA teacher (InfoNCE)" : "");
        if (o->n_local)
            printf("; %d local views of %d px (%d patches) per image, contrastive anchors", o->n_local,
                   (int)cfg->local_crop_size, o->local->N);
        printf("\n");
    }
    printf("precision: %s\n", gemm_precision_summary());
    printf("data: %lld samples, %ld updates/epoch (global batch %d x accum %d = %d images per update; %d per rank "
           "and micro-step), %d decode threads; %d compute threads\n",
           (long long)loader_num_samples(r->loader), r->steps_per_epoch, cfg->batch_size * r->world, cfg->accum_steps,
           cfg->batch_size * r->world * cfg->accum_steps, cfg->batch_size, cfg->num_workers, kernel_max_threads());
    printf("memory (fixed after start-up):\n");
    print_bytes("parameters + gradients", 2 * params_bytes(&m->params));
    print_bytes("AdamW m + v", 2 * params_bytes(&m->params));
    print_bytes("encoder activations", vit_activation_bytes(&m->vit));
    if (o->use_teacher) print_bytes("teacher activations", vit_activation_bytes(&o->teacher->vit));
    print_bytes("objective activations", o->acts.capacity + o->grads.capacity);
    printf("  sgemm peak %.0f GFLOP/s; a step is %.1f GFLOP\n", r->peak_gflops, run_step_flops(r) * 1e-9);
    printf("run folder: %s; %ld updates, warmup %ld\n", r->run_dir, r->total_steps, r->warmup);
    fflush(stdout);
}

// ---- metrics: sums over the updates since the last log line ----------------------------
typedef struct {
    double t_window, wait, comm, loss[4], grad_norm, clipped;
    long images;
    long skipped[SKIP_NUM_REASONS];   // every rank's, so far
    int steps;
} Window;

static void window_add(Window *w, const StepStats *s) {
    w->wait += s->data_wait_s;
    w->comm += s->comm_s;
    memcpy(w->skipped, s->skipped, sizeof w->skipped);
    w->images += s->images;
    w->loss[0] += s->total, w->loss[1] += s->token, w->loss[2] += s->pixel, w->loss[3] += s->contrast;
    w->grad_norm += s->grad_norm;
    w->clipped += s->clipped;
    w->steps++;
}

// The live kNN after every knn_every-th update and the run's end: its seconds are kept out of the
// window's images/s.
static void live_knn_due(Run *r, Window *w, long done, int end) {
    r->knn_fresh = 0;
    if (!r->knn || !(done % r->cfg.knn_every == 0 || end)) return;
    double t0 = now_seconds();
    r->knn_top1 = live_knn_eval(r->knn, &r->model.vit);
    r->knn_fresh = 1;
    w->t_window += now_seconds() - t0;
}

// One JSON line and the progress line after update `done`; then a new window.
static void log_metrics(Run *r, Window *w, Progress *prog, long done, double lr, float w_con, double t_start) {
    const Config *cfg = &r->cfg;
    double now = now_seconds(), dt = now - w->t_window, ips = w->images / dt;
    double epoch_f = (double)r->ts.images_seen / (double)loader_num_samples(r->loader);
    int rows = objective_cls_rows(&r->model.obj, r->probe_rows);
    double top5 = spectrum_top_share(&r->probe, r->probe_rows, rows, r->model.vit.D);
    // the step's FLOPs are one rank's update; ips counts every rank's images
    double mfu = run_step_flops(r) / ((double)cfg->batch_size * cfg->accum_steps) * ips / (r->peak_gflops * 1e9 * r->world);
    int heads = !r->finetune, n = w->steps;
    // One table feeds the JSON line and the progress line (the fields with a short name), in this order.
    const struct {
        const char *key, *short_name;
        double value;
        int on;
    } fields[] = {
        {"loss", "loss", w->loss[0] / n, 1},
        {"loss_token", "tok", w->loss[1] / n, heads && cfg->w_token > 0},
        {"loss_pixel", "pix", w->loss[2] / n, heads && cfg->w_pixel > 0},
        {"loss_contrast", "nce", w->loss[3] / n, heads && cfg->w_contrast > 0},
        {"lr", "lr", lr, 1},
        {"w_contrast", NULL, w_con, heads},
        {"grad_norm", NULL, w->grad_norm / n, 1},
        {"clipped_share", NULL, w->clipped / n, 1},
        {"images_per_s", NULL, ips, 1},
        {"mfu", NULL, mfu, 1},
        {"data_wait_share", NULL, w->wait / dt, 1},
        {"comm_share", NULL, w->comm / dt, r->world > 1},
        {"cls_top5_variance_share", "top5", top5, 1},
    };
    JsonLine *m = runlog_metrics(r->rl);
    json_int(m, "step", done);
    json_num(m, "epoch", epoch_f);
    NamedValue nv[ARRAY_LEN(fields) + 1];
    int k = 0;
    for (size_t f = 0; f < ARRAY_LEN(fields); f++) {
        if (!fields[f].on) continue;
        json_num(m, fields[f].key, fields[f].value);
        if (fields[f].short_name) nv[k++] = (NamedValue){fields[f].short_name, fields[f].value};
    }
    if (r->knn_fresh) json_num(m, "knn20", r->knn_top1);              // the line of the update it was taken at
    if (r->knn_top1 >= 0) nv[k++] = (NamedValue){"knn", r->knn_top1};  // the progress line keeps the latest
    for (int s = 0; s < SKIP_NUM_REASONS; s++)
        json_int(m, loader_skip_reason_name((SkipReason)s), w->skipped[s]);
    json_num(m, "elapsed_s", now - t_start);
    runlog_metrics_write(r->rl);
    progress_update(prog, done, epoch_f, ips, nv, k);
    *w = (Window){.t_window = now};
}

static float contrast_weight_at(const Config *cfg, long step) {
    float w = (float)cfg->w_contrast;
    if (cfg->contrast_warmup_steps > 0 && step < cfg->contrast_warmup_steps)
        w *= (float)(step + 1) / (float)cfg->contrast_warmup_steps;
    return w;
}

static float teacher_momentum_at(const Run *r, long step) {
    const Config *cfg = &r->cfg;
    return (float)ema_momentum_at(step, cfg->teacher_momentum, r->total_steps,
                                  !strcmp(cfg->teacher_momentum_schedule, "cosine"));
}

// The final checkpoint (at the end, on a signal, or at the time limit) and the run's summary.
static void run_finish(Run *r, long done, const char *stop_reason, double t_start, int64_t epoch) {
    char err[2048], path[4096];
    if ((done > r->start_step || !r->resume_path) &&
        save_checkpoint(r->run_dir, &r->cs, r->loader, r->cursor, r->cursors, done, epoch, &r->cfg, r->rank, r->world, err,
                        sizeof err) != 0)
        fatal("final checkpoint at step %ld failed: %s\nThe previous checkpoint is kept.", done, err);
    checkpoint_path(path, sizeof path, r->run_dir, done);
    printf("stopped (%s) at step %ld after %.1f s; checkpoint %s\n", stop_reason, done, now_seconds() - t_start, path);
    for (int s = 0; s < SKIP_NUM_REASONS; s++)
        if (loader_skipped(r->loader, (SkipReason)s))
            printf("skipped samples (%s): %lld\n", loader_skip_reason_name((SkipReason)s),
                   (long long)loader_skipped(r->loader, (SkipReason)s));
    if (r->stepper.empty_batches) printf("empty batches passed over: %ld\n", r->stepper.empty_batches);
    if (r->knn)
        printf("live kNN: %d evaluations of %d images, %.1f s in all (%.1f%% of the training time)\n",
               live_knn_count(r->knn), r->cfg.knn_images, live_knn_seconds(r->knn),
               100 * live_knn_seconds(r->knn) / (now_seconds() - t_start));
    if (r->finetune && r->cfg.data_val[0] && r->rank == 0) {
        double acc = classifier_top1(&r->model.vit, &r->cfg);
        JsonLine *m = runlog_metrics(r->rl);
        json_int(m, "step", done);
        json_num(m, "val_top1", acc);
        runlog_metrics_write(r->rl);
        printf("finetune: top-1 on %s: %.2f%%\n", r->cfg.data_val, 100 * acc);
    }
}

static void run_close(Run *r) {
    stepper_release(&r->stepper);
    live_knn_close(r->knn);
    spectrum_probe_free(&r->probe);
    xfree(r->probe_rows);
    xfree(r->cursor);
    xfree(r->cursors);
    xfree(r->merged_cursor);
    model_free(&r->model);
    loader_close(r->loader);
    if (r->rl) runlog_close(r->rl);
    xfree(r->yaml);
    dist_finalize();
}

int main(int argc, char **argv) {
    static Run run;
    Run *r = &run;
    run_open(r, argc, argv);
    run_find_resume(r);
    LoaderConfig lc;
    run_open_data(r, &lc);
    run_build(r, &lc);
    run_print_summary(r);
    const Config *cfg = &r->cfg;
    char err[2048];
    install_signal_handlers();
    Progress prog;
    progress_init(&prog, stdout, r->start_step, r->total_steps, cfg->time_limit_minutes * 60.0);
    double t_start = now_seconds();
    Window win = {.t_window = t_start};
    long step = r->start_step;
    int64_t epoch = r->cs.epoch;
    const char *stop_reason = "done";
    // Stop requests are agreed on by all ranks (the largest code wins). Asked before the first
    // update and after each one, so that the update a stop ends on is logged like the last.
    int stop = agree_on_stop(cfg, r->start_step, t_start, &stop_reason);
    for (; step < r->total_steps && !stop; step++) {
        double lr = schedule_lr(cfg, step, r->warmup, r->total_steps);
        float w_con = contrast_weight_at(cfg, step);
        StepStats st = train_step(&r->stepper, step, lr, w_con, teacher_momentum_at(r, step));
        if (st.failed) {
            progress_end(&prog);
            fatal("%s. The last checkpoint in %s is intact. Lower lr (now %g) or raise warmup, then --resume=auto",
                  r->stepper.err, r->run_dir, lr);
        }
        r->ts.images_seen += st.images;
        epoch = st.epoch;
        window_add(&win, &st);
        long done = step + 1;
        if (done < r->total_steps) stop = agree_on_stop(cfg, done, t_start, &stop_reason);  // a finished run is "done"
        int last = done == r->total_steps || stop;
        live_knn_due(r, &win, done, done == r->total_steps);  // not at a stop: a resumed run logs what a whole one does
        if (r->rank == 0 && (done % cfg->log_every == 0 || last || done == r->start_step + 1 || r->knn_fresh))
            log_metrics(r, &win, &prog, done, lr, w_con, t_start);
        if (cfg->save_every > 0 && done % cfg->save_every == 0 && !last &&
            save_checkpoint(r->run_dir, &r->cs, r->loader, r->cursor, r->cursors, done, epoch, cfg, r->rank, r->world, err,
                        sizeof err) != 0) {
            progress_end(&prog);
            fatal("checkpoint at step %ld failed: %s\nThe previous checkpoint is kept; stopping.", done, err);
        }
    }
    progress_end(&prog);
    run_finish(r, step, stop_reason, t_start, epoch);
    run_close(r);
    return 0;
}
