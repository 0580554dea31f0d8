// checkpoint.c: HDF5 checkpoints (see checkpoint.h for the layout).
//
// Saving builds the whole file in memory (HDF5 core driver, no backing file),
// then writes it with plain write() to a temporary name, so every disk error
// surfaces here with its errno, the partial file can be removed, and HDF5 is
// never left holding a half-written file. Loading stages every tensor before
// touching the caller's state, so a failed load changes nothing.
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "code_version.h"  // generated: build/gen
#include "common.h"
#include "config.h"
#include "h5io.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

// ---- names --------------------------------------------------------------------

static int is_head(const char *name) { return !strcmp(name, "mask_token") || !strncmp(name, "pretrain.", 9); }

// Group and dataset name of a table tensor.
static const char *group_of(const char *name) { return is_head(name) ? "pretrain_heads" : "encoder"; }
static const char *dataset_of(const char *name) { return !strncmp(name, "pretrain.", 9) ? name + 9 : name; }

// Where a load in this mode reads a table tensor from: CKPT_LOAD_TEACHER reads
// the encoder tensors from the EMA teacher's copies, /pretrain_heads/teacher.<name>.
static const char *source_group(const char *name, CheckpointLoadMode mode) {
    return mode == CKPT_LOAD_TEACHER ? "pretrain_heads" : group_of(name);
}
static const char *source_dataset(const char *name, CheckpointLoadMode mode, char *buf, size_t n) {
    if (mode != CKPT_LOAD_TEACHER) return dataset_of(name);
    snprintf(buf, n, "teacher.%s", name);
    return buf;
}

static int loaded_in_mode(const char *name, CheckpointLoadMode mode) {
    return mode == CKPT_LOAD_FULL || (!is_head(name) && strncmp(name, "head.", 5) != 0);
}

static void dims_of(const ParamInfo *p, hsize_t *dims) {
    for (int d = 0; d < p->ndim; d++) dims[d] = (hsize_t)p->shape[d];
}

static void shape_text(char *buf, size_t n, int rank, const hsize_t *dims) {
    size_t o = snprintf(buf, n, "[");
    for (int i = 0; i < rank && o < n; i++) o += snprintf(buf + o, n - o, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

// ---- saving ---------------------------------------------------------------------

// `git describe --always --dirty` of the tree this binary was built from
// (Makefile: build/gen/code_version.h).
static const char *default_code_version(void) { return CCVIT_CODE_VERSION; }

static void write_tensors(hid_t loc, const ParamTable *t, const float *base, int by_group) {
    hid_t enc = by_group ? h5_group_create(loc, "encoder") : loc, heads = by_group ? h5_group_create(loc, "pretrain_heads") : loc;
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->info[i];
        hsize_t dims[PARAM_MAX_DIMS];
        dims_of(p, dims);
        hid_t g = by_group ? (is_head(p->name) ? heads : enc) : loc;
        h5_write_f32(g, by_group ? dataset_of(p->name) : p->name, base + p->offset, p->ndim, dims);
    }
    if (by_group) {
        h5_group_close(enc);
        h5_group_close(heads);
    }
}

int checkpoint_save(const char *path, const CheckpointState *s, char *err, size_t errlen) {
    if (!s->params || !s->params->data) return ERR("checkpoint_save '%s': no parameters given", path);
    H5Image img;
    hid_t f = h5_create_in_memory(&img);
    write_tensors(f, s->params, s->params->data, 1);
    if (s->opt) {
        hid_t o = h5_group_create(f, "optimizer");
        hid_t m = h5_group_create(o, "m"), v = h5_group_create(o, "v");
        write_tensors(m, s->params, s->opt->m, 0);
        write_tensors(v, s->params, s->opt->v, 0);
        h5_group_close(m);
        h5_group_close(v);
        h5_attr_write_i64(o, "step", s->opt->step);
        h5_group_close(o);
        h5_attr_write_i64(f, "adamw_step", s->opt->step);
        h5_attr_write_f64(f, "adamw_beta1", s->opt->beta1);
        h5_attr_write_f64(f, "adamw_beta2", s->opt->beta2);
        h5_attr_write_f64(f, "adamw_eps", s->opt->eps);
        h5_attr_write_f64(f, "adamw_weight_decay", s->opt->weight_decay);
    }
    if (s->tokenizer) {
        hid_t g = h5_group_create(f, "tokenizer");
        tokenizer_save_group(s->tokenizer, g);
        h5_group_close(g);
    }
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    h5_attr_write_i64(f, "format_version", CHECKPOINT_FORMAT_VERSION);
    h5_attr_write_i64(f, "step", s->step);
    h5_attr_write_i64(f, "epoch", s->epoch);
    h5_attr_write_str(f, "config_yaml", s->config_yaml ? s->config_yaml : "");
    h5_attr_write_str(f, "code_version", s->code_version ? s->code_version : default_code_version());
    h5_attr_write_str(f, "created_utc", created);
    h5_attr_write_bytes(f, "rng_states", s->rng, s->rng ? s->rng_size : 0);
    h5_attr_write_bytes(f, "loader_cursor", s->cursor, s->cursor ? s->cursor_size : 0);
    h5_close_in_memory(f, &img);
    int rc = file_write_atomic(path, img.data, img.size, "checkpoint", err, errlen);
    h5_image_free(&img);
    return rc;
}

// ---- opening and checking -------------------------------------------------------

static hid_t open_checked(const char *path, int64_t *version, char *err, size_t errlen) {
    hid_t f = h5_try_open(path, err, errlen);
    if (f < 0) return -1;
    int64_t v = 0;
    char why[512];
    if (h5_try_attr_i64(f, "format_version", &v, why, sizeof why) < 0) {
        H5Fclose(f);
        return ERR("'%s' is not a checkpoint: %s", path, why);
    }
    if (v != CHECKPOINT_FORMAT_VERSION) {
        H5Fclose(f);
        return ERR("'%s' has checkpoint format version %lld, but this build reads version %d only; use the trainer "
                   "version that wrote it", path, (long long)v, CHECKPOINT_FORMAT_VERSION);
    }
    if (version) *version = v;
    return f;
}

// Adds " (config differs: embed_dim: 128 vs 192; ...)" when both configs parse.
static void config_hint(hid_t f, const char *model_yaml, char *buf, size_t n) {
    buf[0] = 0;
    if (!model_yaml) return;
    char why[256];
    char *file_yaml = h5_try_attr_str(f, "config_yaml", why, sizeof why);
    if (!file_yaml) return;
    Config *a = xcalloc(2, sizeof(Config), "configs");
    config_defaults(&a[0]);
    config_defaults(&a[1]);
    char diff[400];
    if (config_load_string(&a[0], file_yaml, "checkpoint", why, sizeof why) == 0 &&
        config_load_string(&a[1], model_yaml, "model", why, sizeof why) == 0 && config_diff(&a[0], &a[1], diff, sizeof diff))
        snprintf(buf, n, " (config differs, checkpoint vs this run: %s)", diff);
    xfree(a);
    xfree(file_yaml);
}

typedef struct {
    const ParamTable *t;
    const char *group;
    const char *extra;   // first file tensor the table lacks
    char name[PARAM_NAME_MAX + 16];
} ExtraScan;

static herr_t find_extra(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g, (void)info;  // H5L_iterate2_t signature
    ExtraScan *x = data;
    char full[PARAM_NAME_MAX + 16];
    snprintf(full, sizeof full, "%s%s", (!strcmp(x->group, "pretrain_heads") && strcmp(name, "mask_token")) ? "pretrain." : "", name);
    if (params_find(x->t, full) < 0) {
        snprintf(x->name, sizeof x->name, "%s/%s", x->group, name);
        x->extra = x->name;
        return 1;
    }
    return 0;
}

// Every tensor the mode loads is present with the table's shape; in FULL mode
// the file has no tensor the table lacks.
static int check_tensors(hid_t f, const char *path, const CheckpointState *s, char *err, size_t errlen) {
    const ParamTable *t = s->params;
    char hint[512];
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->info[i];
        if (!loaded_in_mode(p->name, s->mode)) continue;
        char dsbuf[192];
        const char *group = source_group(p->name, s->mode), *ds = source_dataset(p->name, s->mode, dsbuf, sizeof dsbuf);
        hid_t g = h5_exists(f, group) ? H5Gopen2(f, group, H5P_DEFAULT) : -1;
        hsize_t got[8], want[PARAM_MAX_DIMS];
        char why[512];
        int rank = g >= 0 && h5_exists(g, ds) ? h5_try_shape(g, ds, got, 8, why, sizeof why) : -2;
        if (g >= 0) H5Gclose(g);
        if (rank == -2) {
            config_hint(f, s->config_yaml, hint, sizeof hint);
            return ERR("checkpoint '%s' lacks tensor '%s' (/%s/%s) that this model has%s%s", path, p->name, group, ds,
                       s->mode == CKPT_LOAD_TEACHER || !strncmp(p->name, "pretrain.teacher.", 17)
                           ? " (an EMA teacher: was it trained with teacher_momentum > 0?)"
                           : "",
                       hint);
        }
        if (rank < 0) return ERR("checkpoint '%s': %s", path, why);
        dims_of(p, want);
        int same = rank == p->ndim;
        for (int d = 0; same && d < rank; d++) same = got[d] == want[d];
        if (!same) {
            char a[96], b[96];
            shape_text(a, sizeof a, rank, got);
            shape_text(b, sizeof b, p->ndim, want);
            config_hint(f, s->config_yaml, hint, sizeof hint);
            return ERR("checkpoint '%s': tensor '%s' has shape %s in the file but %s in this model%s", path, p->name, a, b, hint);
        }
    }
    if (s->mode == CKPT_LOAD_FULL) {
        const char *groups[2] = {"encoder", "pretrain_heads"};
        for (int k = 0; k < 2; k++) {
            if (!h5_exists(f, groups[k])) continue;
            ExtraScan x = {.t = t, .group = groups[k]};
            hid_t g = H5Gopen2(f, groups[k], H5P_DEFAULT);
            H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, find_extra, &x);
            H5Gclose(g);
            if (x.extra) {
                config_hint(f, s->config_yaml, hint, sizeof hint);
                return ERR("checkpoint '%s' has tensor '%s' that this model lacks%s", path, x.extra, hint);
            }
        }
        if (s->opt && !h5_exists(f, "optimizer"))
            return ERR("checkpoint '%s' has no optimizer state (/optimizer); it cannot be resumed, only evaluated or fine-tuned", path);
    }
    return 0;
}

static int read_tensor(hid_t f, const char *group, const char *ds, const ParamInfo *p, float *out, const char *path, char *err,
                       size_t errlen) {
    hsize_t dims[PARAM_MAX_DIMS];
    dims_of(p, dims);
    char why[1536];
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    int rc = g < 0 ? -1 : h5_try_read(g, ds, H5T_NATIVE_FLOAT, out, p->ndim, dims, why, sizeof why);
    if (g < 0) snprintf(why, sizeof why, "cannot open group /%s", group);
    else H5Gclose(g);
    return rc < 0 ? ERR("checkpoint '%s', tensor '%s': %s", path, p->name, why) : 0;
}

static int read_bytes_attr(hid_t f, const char *name, void *out, size_t n, const char *path, char *err, size_t errlen) {
    char why[1024];
    if (h5_try_attr_bytes(f, name, out, n, why, sizeof why) < 0)
        return ERR("checkpoint '%s': %s (this run expects %zu bytes: a different number of ranks, or another code version?)", path, why, n);
    return 0;
}

static int load_from(hid_t f, const char *path, CheckpointState *s, char *err, size_t errlen) {
    ParamTable *t = s->params;
    if (check_tensors(f, path, s, err, errlen) < 0) return -1;
    int64_t step = 0, epoch = 0, adam_step = 0;
    char why[1024];
    if (h5_try_attr_i64(f, "step", &step, why, sizeof why) < 0 || h5_try_attr_i64(f, "epoch", &epoch, why, sizeof why) < 0)
        return ERR("checkpoint '%s': %s", path, why);
    int with_opt = s->opt && s->mode == CKPT_LOAD_FULL;
    if (with_opt && h5_try_attr_i64(f, "adamw_step", &adam_step, why, sizeof why) < 0) return ERR("checkpoint '%s': %s", path, why);

    // Stage everything, then commit.
    size_t planes = with_opt ? 3 : 1;
    float *stage = xmalloc(t->total * planes * sizeof(float) + 1, "checkpoint staging");
    unsigned char *rng = s->rng ? xmalloc(s->rng_size + 1, "rng staging") : NULL;
    unsigned char *cur = s->cursor ? xmalloc(s->cursor_size + 1, "cursor staging") : NULL;
    int rc = 0;
    for (int i = 0; i < t->count && rc == 0; i++) {
        const ParamInfo *p = &t->info[i];
        if (!loaded_in_mode(p->name, s->mode)) continue;
        char dsbuf[192];
        rc = read_tensor(f, source_group(p->name, s->mode), source_dataset(p->name, s->mode, dsbuf, sizeof dsbuf), p,
                         stage + p->offset, path, err, errlen);
        if (rc == 0 && with_opt) rc = read_tensor(f, "optimizer/m", p->name, p, stage + t->total + p->offset, path, err, errlen);
        if (rc == 0 && with_opt) rc = read_tensor(f, "optimizer/v", p->name, p, stage + 2 * t->total + p->offset, path, err, errlen);
    }
    if (rc == 0 && rng) rc = read_bytes_attr(f, "rng_states", rng, s->rng_size, path, err, errlen);
    if (rc == 0 && cur) rc = read_bytes_attr(f, "loader_cursor", cur, s->cursor_size, path, err, errlen);
    if (rc == 0) {
        for (int i = 0; i < t->count; i++) {
            const ParamInfo *p = &t->info[i];
            if (!loaded_in_mode(p->name, s->mode)) continue;
            memcpy(t->data + p->offset, stage + p->offset, p->numel * sizeof(float));
            if (with_opt) {
                memcpy(s->opt->m + p->offset, stage + t->total + p->offset, p->numel * sizeof(float));
                memcpy(s->opt->v + p->offset, stage + 2 * t->total + p->offset, p->numel * sizeof(float));
            }
        }
        if (with_opt) s->opt->step = adam_step;
        if (rng) memcpy(s->rng, rng, s->rng_size);
        if (cur) memcpy(s->cursor, cur, s->cursor_size);
        s->step = step;
        s->epoch = epoch;
    }
    xfree(stage);
    xfree(rng);
    xfree(cur);
    return rc;
}

int checkpoint_load(const char *path, CheckpointState *s, char *err, size_t errlen) {
    if (!s->params || !s->params->data) return ERR("checkpoint_load '%s': the parameter table is not allocated", path);
    hid_t f = open_checked(path, NULL, err, errlen);
    if (f < 0) return -1;
    int rc = load_from(f, path, s, err, errlen);
    H5Fclose(f);
    return rc;
}

// ---- integrity ------------------------------------------------------------------------

typedef struct {
    char *err;
    size_t errlen;
    int bad;
} VerifyScan;

// Reads one dataset whole (in its file type), which checks its Fletcher32 sums.
static herr_t verify_object(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
    (void)info;  // H5L_iterate2_t signature
    VerifyScan *x = data;
    H5O_info_t oi;
    if (H5Oget_info_by_name(loc, name, &oi, H5P_DEFAULT) < 0) {
        snprintf(x->err, x->errlen, "cannot read the header of '/%s' (corrupt metadata)", name);
        x->bad = 1;
        return 1;
    }
    if (oi.type != H5O_TYPE_DATASET) return 0;
    hsize_t dims[8];
    char why[1536];
    int rank = h5_try_shape(loc, name, dims, 8, why, sizeof why);
    if (rank >= 0) {
        hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
        hid_t type = H5Dget_type(ds);
        size_t bytes = H5Tget_size(type);
        for (int d = 0; d < rank; d++) bytes *= dims[d];
        void *buf = xmalloc(bytes + 1, "checkpoint verify");
        if (h5_try_read(loc, name, type, buf, rank, dims, why, sizeof why) < 0) rank = -1;
        xfree(buf);
        H5Tclose(type);
        H5Dclose(ds);
    }
    if (rank < 0) {
        snprintf(x->err, x->errlen, "%s", why);
        x->bad = 1;
        return 1;
    }
    return 0;
}

static int verify_group(hid_t f, const char *group, const char *path, char *err, size_t errlen) {
    VerifyScan x = {err, errlen, 0};
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (g < 0) return ERR("checkpoint '%s': cannot open group '%s'", path, group);
    herr_t r = H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, verify_object, &x);
    H5Gclose(g);
    if (x.bad) {
        char why[1600];
        snprintf(why, sizeof why, "%s", err);
        return ERR("checkpoint '%s': %s", path, why);
    }
    if (r < 0) return ERR("checkpoint '%s': cannot walk its objects (corrupt metadata)", path);
    return 0;
}

int checkpoint_verify_in_process(const char *path, char *err, size_t errlen) {
    hid_t f = open_checked(path, NULL, err, errlen);
    if (f < 0) return -1;
    int64_t step;
    char why[512];
    int rc = h5_try_attr_i64(f, "step", &step, why, sizeof why) < 0 ? ERR("checkpoint '%s': %s", path, why)
                                                                      : verify_group(f, "/", path, err, errlen);
    H5Fclose(f);
    return rc;
}

// libhdf5 itself can crash on a damaged file (fuzzing found a SEGV in H5Lvisit that its
// own metadata checksums let through): the verification runs in a child process, so
// that a crash there is a failed verification, not a dead trainer. A file the child
// read whole without a crash is then safe to read in this process.
int checkpoint_verify(const char *path, char *err, size_t errlen) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return checkpoint_verify_in_process(path, err, errlen);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]), close(pipefd[1]);
        return checkpoint_verify_in_process(path, err, errlen);
    }
    if (pid == 0) {
        close(pipefd[0]);
        if (getenv("CCVIT_FAULT_VERIFY_CRASH")) raise(SIGSEGV);  // tests: libhdf5 dying on a file
        int rc = checkpoint_verify_in_process(path, err, errlen);
        if (rc != 0) (void)!write(pipefd[1], err, strnlen(err, errlen));
        _exit(rc == 0 ? 0 : 1);  // no atexit handlers, no buffers of the parent's flushed twice
    }
    close(pipefd[1]);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < errlen && (n = read(pipefd[0], err + got, errlen - 1 - got)) > 0) got += (size_t)n;
    if (errlen) err[got] = 0;
    close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status))
        return ERR("checkpoint '%s': reading it crashed libhdf5 (signal %d, in a child process): the file is damaged",
                   path, WTERMSIG(status));
    if (!got) return ERR("checkpoint '%s': verification failed (exit status %d)", path, WEXITSTATUS(status));
    return -1;
}

Tokenizer *checkpoint_load_tokenizer(const char *path, char *err, size_t errlen) {
    hid_t f = open_checked(path, NULL, err, errlen);
    if (f < 0) return NULL;
    Tokenizer *tok = NULL;
    if (!h5_exists(f, "tokenizer")) snprintf(err, errlen, "checkpoint '%s' holds no tokenizer (/tokenizer)", path);
    else if (verify_group(f, "tokenizer", path, err, errlen) == 0) {
        hid_t g = h5_group_open(f, "tokenizer");
        tok = tokenizer_load_group(g);
        h5_group_close(g);
    }
    H5Fclose(f);
    return tok;
}

int checkpoint_read_info(const char *path, CheckpointInfo *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    hid_t f = open_checked(path, &info->format_version, err, errlen);
    if (f < 0) return -1;
    char why[1024];
    int rc = 0;
    if (h5_try_attr_i64(f, "step", &info->step, why, sizeof why) < 0 || h5_try_attr_i64(f, "epoch", &info->epoch, why, sizeof why) < 0 ||
        !(info->config_yaml = h5_try_attr_str(f, "config_yaml", why, sizeof why)) ||
        !(info->code_version = h5_try_attr_str(f, "code_version", why, sizeof why)) ||
        !(info->created_utc = h5_try_attr_str(f, "created_utc", why, sizeof why)))
        rc = ERR("checkpoint '%s': %s", path, why);
    info->has_optimizer = h5_exists(f, "optimizer");
    info->has_tokenizer = h5_exists(f, "tokenizer");
    if (info->has_optimizer && h5_try_attr_i64(f, "adamw_step", &info->adamw_step, why, sizeof why) < 0)
        rc = ERR("checkpoint '%s': %s", path, why);
    H5Fclose(f);
    if (rc) checkpoint_info_free(info);
    return rc;
}

void checkpoint_info_free(CheckpointInfo *info) {
    xfree(info->config_yaml);
    xfree(info->code_version);
    xfree(info->created_utc);
    info->config_yaml = info->code_version = info->created_utc = NULL;
}

// ---- run folders ------------------------------------------------------------------------

void checkpoint_path(char *out, size_t n, const char *run_dir, int64_t step) {
    snprintf(out, n, "%s/ckpt_step%08lld.h5", run_dir, (long long)step);
}

// Step of a checkpoint file name, or -1 if the name is not one.
static int64_t step_of(const char *name) {
    if (strncmp(name, "ckpt_step", 9)) return -1;
    char *end;
    long long v = strtoll(name + 9, &end, 10);
    return (end != name + 9 && !strcmp(end, ".h5") && v >= 0) ? v : -1;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Steps of the checkpoints in run_dir, ascending (xmalloc'd); count in *n.
static int64_t *list_steps(const char *run_dir, int *n) {
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d) return NULL;
    int cap = 16;
    int64_t *steps = xmalloc(cap * sizeof(int64_t), "checkpoint list");
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = step_of(e->d_name);
        if (s < 0) continue;
        if (*n == cap) {
            int64_t *bigger = xmalloc(2 * cap * sizeof(int64_t), "checkpoint list");
            memcpy(bigger, steps, cap * sizeof(int64_t));
            xfree(steps);
            steps = bigger;
            cap *= 2;
        }
        steps[(*n)++] = s;
    }
    closedir(d);
    qsort(steps, *n, sizeof(int64_t), cmp_i64);
    return steps;
}

static int64_t latest_step(const char *run_dir) {
    char link[PATH_MAX], target[PATH_MAX];
    snprintf(link, sizeof link, "%s/latest", run_dir);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return -1;
    target[n] = 0;
    const char *base = strrchr(target, '/');
    return step_of(base ? base + 1 : target);
}

static int point_latest(const char *run_dir, int64_t step, char *err, size_t errlen) {
    char link[PATH_MAX], tmp[PATH_MAX + 32], target[64];
    snprintf(link, sizeof link, "%s/latest", run_dir);
    snprintf(tmp, sizeof tmp, "%s/latest.tmp.%d", run_dir, (int)getpid());
    snprintf(target, sizeof target, "ckpt_step%08lld.h5", (long long)step);
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
        int e = errno;
        unlink(tmp);
        return file_error(err, errlen, "cannot update the 'latest' link", link, e);
    }
    fsync_folder_of(link);
    return 0;
}

int checkpoint_save_step(const char *run_dir, const CheckpointState *s, int keep_last, int keep_every, char *err,
                         size_t errlen) {
    char path[PATH_MAX];
    checkpoint_path(path, sizeof path, run_dir, s->step);
    if (checkpoint_save(path, s, err, errlen) < 0) return -1;
    if (point_latest(run_dir, s->step, err, errlen) < 0) return -1;
    checkpoint_prune(run_dir, keep_last, keep_every);
    return 0;
}

// "<anything>.tmp.<pid>" left by a process that no longer runs.
static int stale_temporary(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t) return 0;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    if (*end || pid <= 0 || pid == getpid()) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int checkpoint_prune(const char *run_dir, int keep_last, int keep_every) {
    int n, removed = 0;
    int64_t *steps = list_steps(run_dir, &n);
    int64_t keep_latest = latest_step(run_dir);
    char path[PATH_MAX];
    for (int i = 0; i < n; i++) {
        int64_t st = steps[i];
        if (i >= n - keep_last || (keep_every > 0 && st % keep_every == 0) || st == keep_latest) continue;
        checkpoint_path(path, sizeof path, run_dir, st);
        if (unlink(path) == 0) removed++;
        else warn("cannot remove old checkpoint '%s': %s", path, strerror(errno));
    }
    xfree(steps);
    DIR *d = opendir(run_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!stale_temporary(e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", run_dir, e->d_name);
        if (unlink(path) == 0) removed++;
    }
    if (d) closedir(d);
    return removed;
}

int checkpoint_config(const CheckpointInfo *info, const char *path, Config *out, char *err, size_t errlen) {
    config_defaults(out);
    if (!info->config_yaml || !info->config_yaml[0]) return ERR("%s stores no config", path);
    char why[1024];
    if (config_load_string(out, info->config_yaml, path, why, sizeof why) || config_finalize(out, why, sizeof why))
        return ERR("the config stored in %s does not read back: %s", path, why);
    return 0;
}

int checkpoint_set_aside_after(const char *run_dir, int64_t step, char *folder, size_t folder_len) {
    int n, moved = 0;
    int64_t *steps = list_steps(run_dir, &n);
    if (n == 0 || steps[n - 1] <= step) {
        xfree(steps);
        return 0;
    }
    // a fresh folder per resume: an earlier set-aside of the same step is not overwritten
    snprintf(folder, folder_len, "%s/set_aside_after_step%08lld", run_dir, (long long)step);
    for (int k = 2; mkdir(folder, 0777) != 0; k++) {
        if (errno != EEXIST) fatal("cannot create '%s': %s", folder, strerror(errno));
        snprintf(folder, folder_len, "%s/set_aside_after_step%08lld.%d", run_dir, (long long)step, k);
    }
    char from[PATH_MAX], to[PATH_MAX + 64];
    for (int i = 0; i < n; i++) {
        if (steps[i] <= step) continue;
        checkpoint_path(from, sizeof from, run_dir, steps[i]);
        snprintf(to, sizeof to, "%s/%s", folder, strrchr(from, '/') + 1);
        if (rename(from, to) != 0) fatal("cannot move '%s' to '%s': %s", from, to, strerror(errno));
        moved++;
    }
    // `latest` named one of them: point it at the newest checkpoint left, or remove it
    char link[PATH_MAX], err[512];
    snprintf(link, sizeof link, "%s/latest", run_dir);
    int64_t newest_left = -1;
    for (int i = 0; i < n; i++)
        if (steps[i] <= step) newest_left = steps[i];
    xfree(steps);
    if (latest_step(run_dir) > step) {
        if (newest_left >= 0 && point_latest(run_dir, newest_left, err, sizeof err) != 0) fatal("%s", err);
        if (newest_left < 0) unlink(link);
    }
    fsync_folder_of(link);
    return moved;
}

int checkpoint_find_resume(const char *run_dir, char *out, size_t n, char *err, size_t errlen) {
    int count;
    int64_t *steps = list_steps(run_dir, &count);
    int found = 0;
    char why[2048];
    for (int i = count - 1; i >= 0 && !found; i--) {
        checkpoint_path(out, n, run_dir, steps[i]);
        if (checkpoint_verify(out, why, sizeof why) == 0) found = 1;
        else warn("%s fails verification: %s; %s", out, why, i ? "falling back to the previous one" : "no older checkpoint left");
    }
    xfree(steps);
    if (found) return 1;
    if (count == 0) return 0;
    return ERR("none of the %d checkpoints in '%s' passes verification (see the warnings above); start fresh or give a "
               "checkpoint with --resume PATH", count, run_dir);
}
