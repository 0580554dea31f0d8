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
#include "loader.h"
#include "objective.h"
#include "optim.h"
#include "perf.h"
#include "runlog.h"
#include "setup.h"
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
        int n = config_diff_except(&then, now, steering, diff, sizeof diff);
        if (n)
            warn("resume: %d key%s differ from the config %s was trained with (checkpoint vs now: %s); the run "
                 "continues with the new values and is no longer the same as an uninterrupted run",
                 n, n == 1 ? "" : "s", resume_path, diff);
    }
    checkpoint_info_free(&info);
}

// The run's state after update `done` into run_dir: every rank gives its data cursor (into cs->cursor,
// rank by rank), rank 0 writes. 0, or -1 with the reason in err.
static int save_checkpoint(const char *run_dir, CheckpointState *cs, const Loader *loader, void *cursor, long done,
                           int64_t epoch, const Config *cfg, int rank, char *err, size_t errlen) {
    loader_cursor_save(loader, cursor);
    dist_gather_bytes(cursor, loader_cursor_size(), cs->cursor);
    cs->step = done;
    cs->epoch = epoch;
    if (rank != 0) return 0;
    return checkpoint_save_step(run_dir, cs, cfg->keep_last, cfg->keep_every, err, errlen);
}

static Tokenizer *obtain_tokenizer(const Config *cfg, const char *run_dir, const char *resume_path) {
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
    while (loader_next(l, &b)) {
        vit_forward(vit, b.view1, NULL, b.n);
        vit_head_forward(vit, b.labels, b.n, 1);
        int K = vit->cfg.num_classes;
        for (int i = 0; i < b.n; i++) {
            const float *row = vit->logits + (long)i * K;
            int arg = 0;
            for (int k = 1; k < K; k++) arg = row[k] > row[arg] ? k : arg;
            correct += arg == b.labels[i];
            total++;
        }
    }
    loader_close(l);
    return total ? (double)correct / total : NAN;
}

int main(int argc, char **argv) {
    // Under mpirun every rank trains on its slice of the data; rank 0 alone
    // prints, logs and writes checkpoints (the others' stdout goes to /dev/null).
    dist_init(&argc, &argv);
    int rank = dist_rank(), world = dist_world();
    if (rank != 0 && !freopen("/dev/null", "w", stdout)) fatal("rank %d: cannot silence stdout", rank);
    Config cfg;
    config_from_args(&cfg, argc, argv);
    char err[2048];
    if (config_check_training(&cfg, err, sizeof err) != 0) fatal("%s", err);
    int finetune = !strcmp(cfg.task, "finetune");
    gemm_set_precision(strcmp(cfg.precision, "bf16") ? GEMM_FP32 : GEMM_BF16);
    if (!cfg.run_name[0]) {
        if (!strcmp(cfg.resume, "auto")) fatal("--resume=auto needs a run_name to find the run folder");
        runlog_timestamp_name(cfg.run_name, sizeof cfg.run_name);
        dist_broadcast_bytes(cfg.run_name, sizeof cfg.run_name);  // every rank uses rank 0's name
    }
    char *yaml = config_to_yaml(&cfg);
    printf("---- effective config ----\n%s--------------------------\n", yaml);
    RunLog *rl = rank == 0 ? runlog_open(cfg.output_dir, cfg.run_name, yaml) : NULL;
    char run_dir[4096];
    snprintf(run_dir, sizeof run_dir, "%s/%s", cfg.output_dir, cfg.run_name);
    dist_barrier();  // the run folder exists before any rank reads from it
    if (world > 1) printf("distributed: %d ranks (Open MPI), gradients summed every update\n", world);

    // Which checkpoint to resume from, if any: rank 0 decides for everyone.
    char resume_buf[4096] = "";
    const char *resume_path = NULL;
    if (!strcmp(cfg.resume, "auto")) {
        if (rank == 0) {
            int r = checkpoint_find_resume(run_dir, resume_buf, sizeof resume_buf, err, sizeof err);
            if (r < 0) fatal("%s", err);
            if (r == 0) {
                resume_buf[0] = 0;
                printf("resume: no checkpoint in %s yet, starting fresh\n", run_dir);
            }
        }
        dist_broadcast_bytes(resume_buf, sizeof resume_buf);
        if (resume_buf[0]) resume_path = resume_buf;
    } else if (cfg.resume[0]) {
        resume_path = cfg.resume;
    }

    // ---- data
    LoaderConfig lc = loader_config_from(&cfg, cfg.data_train, LOADER_TRAIN, !finetune && cfg.w_contrast > 0);
    ObjectiveConfig oc = objective_config_from(&cfg, &lc);
    int views = finetune ? 1 : objective_views(&oc);  // images per sample through the encoder
    int corrupt = !finetune && (cfg.w_token > 0 || cfg.w_pixel > 0);
    Tokenizer *tok = NULL;
    if (corrupt && rank == 0) tok = obtain_tokenizer(&cfg, run_dir, resume_path);
    dist_barrier();  // rank 0 has built and saved it if needed; the others load it
    if (corrupt && rank != 0) tok = obtain_tokenizer(&cfg, run_dir, resume_path);
    lc.rank = rank;
    lc.world_size = world;
    // the MFU yardstick, measured before the decode threads start competing for the cores
    double peak = sgemm_peak_gflops(1536, 3);
    lc.require_labels = finetune;  // pretraining reads unlabeled samples (label -1)
    Loader *loader = loader_open(&lc);
    if (finetune) require_labelled(loader, "data_train", cfg.data_train, "fine-tuning");
    long steps_per_epoch = (long)(loader_steps_per_epoch(loader) / cfg.accum_steps);
    if (steps_per_epoch < 1) steps_per_epoch = 1;
    long total_steps = cfg.steps > 0 ? cfg.steps : (long)cfg.epochs * steps_per_epoch;
    if (total_steps <= 0) total_steps = 1L << 40;  // time limit only (sched constant, checked above)
    long warmup = cfg.warmup_steps > 0 ? cfg.warmup_steps : (long)lround(cfg.warmup_epochs * steps_per_epoch);
    if (warmup >= total_steps)
        warn("the warmup (%ld updates) is not shorter than the run (%ld updates): the lr never reaches its peak %g",
             warmup, total_steps, cfg.lr);

    // ---- model, heads, optimiser
    ParamTable params = {0};
    Vit vit;
    VitConfig vc = vit_config_from(&cfg, !finetune && (corrupt || cfg.mask_both_views), finetune ? cfg.num_classes : 0);
    vit_register(&vit, &params, &vc);
    Objective obj;
    memset(&obj, 0, sizeof obj);
    if (!finetune) objective_register(&obj, &vit, tok, &oc);
    params_allocate(&params);
    vit_bind(&vit);
    if (!finetune) objective_bind(&obj);
    vit_init_weights(&vit, (uint64_t)cfg.seed);
    if (!finetune) objective_init_weights(&obj, (uint64_t)cfg.seed);
    if (finetune) {
        vit_set_regularisation(&vit, (float)cfg.drop_path, (float)cfg.smoothing);
        vit_set_layer_decay(&vit, cfg.layer_decay);
        if (cfg.finetune[0] && !resume_path) {
            CheckpointState enc = {.params = &params, .mode = CKPT_LOAD_ENCODER};
            if (checkpoint_load(cfg.finetune, &enc, err, sizeof err) != 0) fatal("finetune: %s", err);
            printf("finetune: encoder from %s (step %lld); new head, %d classes\n", cfg.finetune, (long long)enc.step,
                   cfg.num_classes);
        } else if (!resume_path) {
            printf("finetune: no checkpoint given, training from scratch (the baseline)\n");
        }
    }
    if (cfg.freeze_patch_embed) vit_freeze_patch_embed(&vit);
    vit_allocate_activations(&vit, views * cfg.batch_size);
    if (!finetune) objective_allocate(&obj, cfg.batch_size);
    AdamW opt;
    adamw_init(&opt, &params, (float)cfg.opt_betas.v[0], (float)cfg.opt_betas.v[1], (float)cfg.opt_eps,
               (float)cfg.weight_decay);
    SpectrumProbe probe;
    // The collapse probe reads 2B CLS rows with any contrastive term: the student's
    // two views, or (EMA teacher) the student's view1 and the teacher's view2, so
    // that its share means the same in both modes (fewer rows would bias it up).
    int probe_rows = !finetune && obj.use_teacher ? 2 : views;
    spectrum_probe_init(&probe, probe_rows * cfg.batch_size, vit.D, 5);
    float *probe_cls = !finetune && obj.use_teacher ? xmalloc(sizeof(float) * 2 * cfg.batch_size * vit.D, "probe rows") : NULL;
    // Under MPI only the trained tensors' gradients are summed: the teacher's (the
    // table's tail, frozen) stay zero.
    size_t reduced_floats = !finetune && obj.use_teacher ? params.info[obj.teacher_first].offset : params.total;

    TrainerState ts = {TRAINER_STATE_MAGIC, (uint64_t)cfg.seed, 0, 0};
    // The checkpoint holds every rank's data cursor, in rank order.
    size_t cursor_size = loader_cursor_size();
    void *cursor = xmalloc(cursor_size, "loader cursor");
    char *cursors = xmalloc(cursor_size * world, "loader cursors");
    CheckpointState cs = {.params = &params, .opt = &opt, .tokenizer = tok, .config_yaml = yaml, .rng = &ts,
                          .rng_size = sizeof ts, .cursor = cursors, .cursor_size = cursor_size * world,
                          .mode = CKPT_LOAD_FULL};
    long start_step = 0;
    if (resume_path) {
        if (checkpoint_load(resume_path, &cs, err, sizeof err) != 0) fatal("resume: %s", err);
        if (ts.magic != TRAINER_STATE_MAGIC) fatal("resume: %s holds no trainer state from this program", resume_path);
        if (ts.seed != (uint64_t)cfg.seed)
            fatal("resume: %s was trained with seed %llu, the config says %d", resume_path, (unsigned long long)ts.seed, cfg.seed);
        memcpy(cursor, cursors + cursor_size * rank, cursor_size);
        if (!loader_cursor_restore(loader, cursor)) fatal("resume: the data cursor in %s does not fit this data/config", resume_path);
        start_step = (long)cs.step;
        printf("resume: %s at step %ld (epoch %lld)\n", resume_path, start_step, (long long)cs.epoch);
        if (rank == 0) {
            warn_config_changes(&cfg, resume_path);
            char aside[PATH_MAX];
            int moved = checkpoint_set_aside_after(run_dir, start_step, aside, sizeof aside);
            if (moved)
                warn("resume: %d checkpoint%s of steps after %ld (a branch this resume abandons) moved into %s", moved,
                     moved == 1 ? "" : "s", start_step, aside);
        }
        long dropped = rl ? runlog_resume_at(rl, start_step) : 0;
        if (dropped)
            printf("resume: dropped %ld metrics lines of steps after %ld (logged after that checkpoint)\n", dropped,
                   start_step);
    }

    // ---- start-up summary
    double step_flops = cfg.accum_steps * (finetune ? 3.0 * cfg.batch_size * vit_forward_flops_per_image(&vc)
                                                    : 3.0 * objective_forward_flops(&obj, cfg.batch_size) +
                                                          objective_teacher_flops(&obj, cfg.batch_size));
    printf("model: ViT D=%d depth=%d heads=%d patch=%d img=%d chans=%d, %zu parameters (%d tensors)\n", vit.D,
           vc.depth, vc.num_heads, vc.patch_size, vc.img_size, vc.in_chans, params.total, params.count);
    if (finetune)
        printf("objective: supervised fine-tuning, %d classes, label smoothing %g, drop path %g, layer decay %g\n",
               cfg.num_classes, cfg.smoothing, cfg.drop_path, cfg.layer_decay);
    else
        printf("objective: w_token=%g w_pixel=%g w_contrast=%g, %d masked + %d replaced of %d patches, K=%d, views=%d%s\n",
               cfg.w_token, cfg.w_pixel, cfg.w_contrast, obj.n_mask, obj.n_replace, vit.N, obj.K, views,
               obj.use_teacher ? "; view2 through the EMA teacher (InfoNCE)" : "");
    printf("precision: %s\n", gemm_precision_summary());
    printf("data: %lld samples, %ld updates/epoch (batch %d x accum %d), %d decode threads; %d compute threads\n",
           (long long)loader_num_samples(loader), steps_per_epoch, cfg.batch_size, cfg.accum_steps, cfg.num_workers,
           kernel_max_threads());
    printf("memory (fixed after start-up):\n");
    print_bytes("parameters + gradients", 2 * params_bytes(&params));
    print_bytes("AdamW m + v", 2 * params_bytes(&params));
    print_bytes("encoder activations", vit_activation_bytes(&vit));
    if (!finetune && obj.use_teacher) print_bytes("teacher activations", vit_activation_bytes(obj.teacher));
    print_bytes("objective activations", obj.acts.capacity + obj.grads.capacity);
    printf("  sgemm peak %.0f GFLOP/s; a step is %.1f GFLOP\n", peak, step_flops * 1e-9);
    printf("run folder: %s; %ld updates, warmup %ld\n", run_dir, total_steps, warmup);
    fflush(stdout);

    // Fault injection for the tests: CCVIT_FAULT_NAN_STEP=n makes step n's token
    // loss NaN, to exercise the non-finite stop on a real run.
    const char *fault = getenv("CCVIT_FAULT_NAN_STEP");
    long fault_step = fault ? atol(fault) : -1;
    install_signal_handlers();
    Progress prog;
    progress_init(&prog, stdout, start_step, total_steps, cfg.time_limit_minutes * 60.0);
    double t_start = now_seconds(), t_window = t_start, wait_window = 0, compute_window = 0;
    long images_window = 0;
    double loss_sum[4] = {0}, grad_norm_sum = 0, clipped = 0;
    int window_steps = 0;
    long step = start_step;
    const char *stop_reason = "done";
    int64_t epoch_now = cs.epoch;
    float *first_cls = NULL;
    int last_n = 0;
    long empty_batches = 0;  // batches whose every image was skipped (e.g. a shard shorter than its manifest says)

    // Stop requests are agreed on by all ranks (the largest code wins). Asked before the first
    // update and after each one, so that the update a stop ends on is logged like the last.
    int stop = agree_on_stop(&cfg, start_step, t_start, &stop_reason);
    for (; step < total_steps && !stop; step++) {
        double lr = schedule_lr(&cfg, step, warmup, total_steps);
        float w_con = (float)cfg.w_contrast;
        if (cfg.contrast_warmup_steps > 0 && step < cfg.contrast_warmup_steps)
            w_con *= (float)(step + 1) / (float)cfg.contrast_warmup_steps;
        params_zero_grad(&params);
        ObjectiveLosses L = {0};
        long step_images = 0;
        for (int micro = 0; micro < cfg.accum_steps; micro++) {
            Batch b;
            double tw = now_seconds();
            // An empty batch is passed over: it has no loss to average (0/0). Two epochs'
            // worth in a row means the data holds no usable image at all.
            for (long empty_run = 0;; empty_run++) {
                if (!loader_next(loader, &b)) fatal("data: the training loader ended unexpectedly");
                if (b.n > 0) break;
                if (empty_run > 2 * steps_per_epoch * cfg.accum_steps)
                    fatal("data: %ld batches in a row had no usable image (two epochs); check data_train '%s' "
                          "and its manifest", empty_run, cfg.data_train);
                if (empty_batches++ == 0)
                    warn("data: a batch at epoch %lld, step %lld had no usable image (a shard shorter than its "
                         "manifest, or every image skipped); such batches are passed over and counted",
                         (long long)b.epoch, (long long)b.step);
            }
            double tc = now_seconds();
            wait_window += tc - tw;
            epoch_now = b.epoch;
            ObjectiveLosses l = {0};
            if (finetune) {
                for (int i = 0; i < b.n; i++)
                    if (b.labels[i] < 0 || b.labels[i] >= cfg.num_classes)
                        fatal("finetune: label %d of a training image is outside [0, num_classes = %d)", b.labels[i], cfg.num_classes);
                // each rank its own stochastic depth, as with the masks: the stream is (micro-step, rank)
                vit_sample_drop_path(&vit, b.n, (uint64_t)cfg.seed, ts.micro_steps * world + rank);
                vit_forward(&vit, b.view1, NULL, b.n);
                l.token = l.total = vit_head_forward(&vit, b.labels, b.n, 1);
            } else {
                // each rank draws its own masks: the stream is (micro-step, rank)
                l = objective_forward(&obj, b.view1, b.clean1, b.view2, b.n, ts.micro_steps * world + rank, w_con);
            }
            if (step == fault_step) l.token = NAN;
            const char *bad = !isfinite(l.token) ? (finetune ? "classification cross-entropy" : "token cross-entropy")
                              : !isfinite(l.pixel) ? "pixel MSE"
                              : !isfinite(l.contrast) ? (obj.use_teacher ? "InfoNCE" : "NT-Xent") : NULL;
            if (bad) {
                progress_end(&prog);
                fatal("step %ld: the %s loss is %g; no update was applied. The last checkpoint in %s is intact. "
                      "Lower lr (now %g) or raise warmup, then --resume=auto", step, bad,
                      !isfinite(l.token) ? l.token : !isfinite(l.pixel) ? l.pixel : l.contrast, run_dir, lr);
            }
            if (finetune) {
                vit_head_backward(&vit, b.labels, b.n, 1, 1.0f / cfg.accum_steps);
                vit_backward(&vit, vit_head_dfinal(&vit), NULL, b.n);
            } else {
                objective_backward(&obj, 1.0f / cfg.accum_steps);
            }
            last_n = b.n;
            L.token += l.token / cfg.accum_steps;
            L.pixel += l.pixel / cfg.accum_steps;
            L.contrast += l.contrast / cfg.accum_steps;
            L.total += l.total / cfg.accum_steps;
            ts.micro_steps++;
            step_images += b.n;
            compute_window += now_seconds() - tc;
            first_cls = vit.final;  // CLS rows of the last micro-batch, for the collapse probe
        }
        if (world > 1) {  // sum the ranks' gradients, average their losses
            dist_allreduce_sum_floats(params.grad, reduced_floats);
            grad_scale(&params, 1.0f / world);
            double agg[5] = {L.token, L.pixel, L.contrast, L.total, (double)step_images};
            dist_allreduce_sum_doubles(agg, 5);
            L.token = agg[0] / world, L.pixel = agg[1] / world, L.contrast = agg[2] / world, L.total = agg[3] / world;
            step_images = (long)agg[4];
        }
        ts.images_seen += step_images;
        images_window += step_images;
        double gnorm = clip_grad_norm(&opt, &params, cfg.clip_grad);
        if (!isfinite(gnorm)) {
            progress_end(&prog);
            fatal("step %ld: the gradient norm is %g; no update was applied. The last checkpoint in %s is intact. "
                  "Lower lr (now %g), then --resume=auto", step, gnorm, run_dir, lr);
        }
        clipped += cfg.clip_grad > 0 && gnorm > cfg.clip_grad;
        adamw_step(&opt, &params, (float)lr);
        if (!finetune)
            objective_teacher_update(&obj, (float)ema_momentum_at(step, cfg.teacher_momentum, total_steps,
                                                                 !strcmp(cfg.teacher_momentum_schedule, "cosine")));
        loss_sum[0] += L.total, loss_sum[1] += L.token, loss_sum[2] += L.pixel, loss_sum[3] += L.contrast;
        grad_norm_sum += gnorm;
        window_steps++;

        long done = step + 1;
        if (done < total_steps) stop = agree_on_stop(&cfg, done, t_start, &stop_reason);  // a finished run is "done"
        int last = done == total_steps || stop;
        if (rank == 0 && (done % cfg.log_every == 0 || last || done == start_step + 1)) {
            double now = now_seconds(), dt = now - t_window;
            double ips = images_window / dt;
            double epoch_f = (double)ts.images_seen / (double)loader_num_samples(loader);
            double top5;
            if (probe_cls) {  // student view1 CLS rows, then the teacher's view2 CLS rows
                for (int i = 0; i < last_n; i++) {
                    memcpy(probe_cls + (long)i * vit.D, first_cls + (long)i * vit.T * vit.D, sizeof(float) * vit.D);
                    memcpy(probe_cls + (long)(last_n + i) * vit.D, obj.teacher->final + (long)i * vit.T * vit.D,
                           sizeof(float) * vit.D);
                }
                top5 = spectrum_top_share(&probe, probe_cls, 2 * last_n, vit.D);
            } else {
                top5 = spectrum_top_share(&probe, first_cls, views * last_n, vit.T * vit.D);
            }
            // step_flops is one rank's update (accum_steps micro-batches); ips counts every rank's images
            double mfu = step_flops / ((double)cfg.batch_size * cfg.accum_steps) * ips / (peak * 1e9 * world);
            // One table feeds the JSON line and the progress line (the fields with a short name), in this order.
            int heads = !finetune;
            const struct {
                const char *key, *short_name;
                double value;
                int on;
            } fields[] = {
                {"loss", "loss", loss_sum[0] / window_steps, 1},
                {"loss_token", "tok", loss_sum[1] / window_steps, heads && cfg.w_token > 0},
                {"loss_pixel", "pix", loss_sum[2] / window_steps, heads && cfg.w_pixel > 0},
                {"loss_contrast", "nce", loss_sum[3] / window_steps, heads && cfg.w_contrast > 0},
                {"lr", "lr", lr, 1},
                {"w_contrast", NULL, w_con, heads},
                {"grad_norm", NULL, grad_norm_sum / window_steps, 1},
                {"clipped_share", NULL, clipped / window_steps, 1},
                {"images_per_s", NULL, ips, 1},
                {"mfu", NULL, mfu, 1},
                {"data_wait_share", NULL, wait_window / dt, 1},
                {"cls_top5_variance_share", "top5", top5, 1},
            };
            JsonLine *m = runlog_metrics(rl);
            json_int(m, "step", done);
            json_num(m, "epoch", epoch_f);
            NamedValue nv[ARRAY_LEN(fields)];
            int k = 0;
            for (size_t f = 0; f < ARRAY_LEN(fields); f++) {
                if (!fields[f].on) continue;
                json_num(m, fields[f].key, fields[f].value);
                if (fields[f].short_name) nv[k++] = (NamedValue){fields[f].short_name, fields[f].value};
            }
            for (int r = 0; r < SKIP_NUM_REASONS; r++)
                json_int(m, loader_skip_reason_name((SkipReason)r), loader_skipped(loader, (SkipReason)r));
            json_num(m, "elapsed_s", now - t_start);
            runlog_metrics_write(rl);
            progress_update(&prog, done, epoch_f, ips, nv, k);
            t_window = now;
            wait_window = compute_window = 0;
            images_window = 0;
            memset(loss_sum, 0, sizeof loss_sum);
            grad_norm_sum = clipped = 0;
            window_steps = 0;
        }
        if (cfg.save_every > 0 && done % cfg.save_every == 0 && !last &&
            save_checkpoint(run_dir, &cs, loader, cursor, done, epoch_now, &cfg, rank, err, sizeof err) != 0) {
            progress_end(&prog);
            fatal("checkpoint at step %ld failed: %s\nThe previous checkpoint is kept; stopping.", done, err);
        }
    }
    progress_end(&prog);

    // Final checkpoint: at the end, on a signal, or at the time limit.
    long done = step;
    if ((done > start_step || !resume_path) &&
        save_checkpoint(run_dir, &cs, loader, cursor, done, epoch_now, &cfg, rank, err, sizeof err) != 0)
        fatal("final checkpoint at step %ld failed: %s\nThe previous checkpoint is kept.", done, err);
    char path[4096];
    checkpoint_path(path, sizeof path, run_dir, done);
    printf("stopped (%s) at step %ld after %.1f s; checkpoint %s\n", stop_reason, done, now_seconds() - t_start, path);
    for (int r = 0; r < SKIP_NUM_REASONS; r++)
        if (loader_skipped(loader, (SkipReason)r))
            printf("skipped samples (%s): %lld\n", loader_skip_reason_name((SkipReason)r),
                   (long long)loader_skipped(loader, (SkipReason)r));
    if (empty_batches) printf("empty batches passed over: %ld\n", empty_batches);

    if (finetune && cfg.data_val[0] && rank == 0) {
        double acc = classifier_top1(&vit, &cfg);
        JsonLine *m = runlog_metrics(rl);
        json_int(m, "step", done);
        json_num(m, "val_top1", acc);
        runlog_metrics_write(rl);
        printf("finetune: top-1 on %s: %.2f%%\n", cfg.data_val, 100 * acc);
    }
    spectrum_probe_free(&probe);
    xfree(probe_cls);
    xfree(cursor);
    xfree(cursors);
    adamw_free(&opt);
    loader_close(loader);
    if (rl) runlog_close(rl);
    xfree(yaml);
    dist_finalize();
    return 0;
}
