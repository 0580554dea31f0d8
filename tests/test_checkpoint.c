// Checkpoints: save -> load round trip (bit-exact), corruption / truncation /
// shape / version errors, run-folder latest + prune + resume fallback, disk
// full (RLIMIT_FSIZE -> EFBIG) and kill -9 during saves.
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "common.h"
#include "h5io.h"
#include "model.h"
#include "vit.h"

static char dir[256];

// The library's model and the rest of a checkpoint's state.
typedef struct {
    Model model;
    Tokenizer *tok;
    uint64_t rng[8];
    unsigned char cursor[40];
    CheckpointState st;
} Fixture;

// A small real pretraining model (model_build, with AdamW): patch 4 has a token head over K random
// centroids (and centroid replacement); other patches have no tokenizer, so a projector (contrastive
// term) instead. Values, moments and buffers random from seed.
static void fixture_build(Fixture *x, int D, int patch, int K, int depth, uint64_t seed) {
    memset(x, 0, sizeof *x);
    Rng r;
    if (patch == 4) {
        float *cent = xmalloc((size_t)K * 16 * sizeof(float), "centroids");
        rng_seed(&r, seed, 2);
        for (int i = 0; i < K * 16; i++) cent[i] = (float)rng_uniform(&r);
        x->tok = tokenizer_from_centroids(cent, NULL, K, 4, 1);
        xfree(cent);
    }
    int token = x->tok != NULL;
    ModelSpec spec = {.kind = MODEL_PRETRAIN,
                      .vit = {.img_size = 16, .patch_size = patch, .in_chans = 1, .embed_dim = D, .depth = depth,
                              .num_heads = 2, .mlp_ratio = 2.0f, .qkv_bias = 1, .use_mask_token = 1},
                      .objective = {.mask_ratio = 0.4f, .min_mask_patches = 4, .replace_ratio = token ? 0.1f : 0,
                                    .w_token = token ? 1 : 0, .w_contrast = token ? 0 : 1, .temperature = 0.2f,
                                    .proj_hidden = 16, .proj_dim = 8, .mean = {0.5f}, .std = {0.5f}, .seed = seed},
                      .max_batch = 0,  // no activations: nothing runs
                      .seed = seed,
                      .optimizer = 1, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.05f};
    model_build(&x->model, &spec, x->tok);
    ParamTable *t = &x->model.params;
    AdamW *opt = &x->model.opt;
    rng_seed(&r, seed, 1);
    for (size_t i = 0; i < t->total; i++) {
        t->data[i] = (float)rng_normal(&r);
        opt->m[i] = (float)rng_normal(&r);
        opt->v[i] = (float)rng_uniform(&r);
    }
    opt->step = 1000 + (long)seed;
    for (int i = 0; i < 8; i++) x->rng[i] = rng_u64(&r);
    for (int i = 0; i < 40; i++) x->cursor[i] = (unsigned char)rng_below(&r, 256);
    x->st = (CheckpointState){.params = t, .opt = opt, .tokenizer = x->tok,
                              .config_yaml = "embed_dim: 32\n", .code_version = "test",
                              .step = 1000 + (int64_t)seed, .epoch = 3, .rng = x->rng, .rng_size = sizeof x->rng,
                              .cursor = x->cursor, .cursor_size = sizeof x->cursor};
}

static void fixture_free(Fixture *x) {
    model_free(&x->model);
    if (x->tok) tokenizer_free(x->tok);
}

// Every tensor's values and moments, the steps and the buffers are equal.
static int same_state(const Fixture *a, const Fixture *b) {
    const ParamTable *ta = &a->model.params, *tb = &b->model.params;
    const AdamW *oa = &a->model.opt, *ob = &b->model.opt;
    int same = ta->count == tb->count && oa->step == ob->step && a->st.step == b->st.step &&
               a->st.epoch == b->st.epoch && !memcmp(a->rng, b->rng, sizeof a->rng) && !memcmp(a->cursor, b->cursor, sizeof a->cursor);
    for (int i = 0; same && i < ta->count; i++) {
        size_t o = ta->info[i].offset, n = ta->info[i].numel * sizeof(float);
        same = o == tb->info[i].offset && !memcmp(ta->data + o, tb->data + o, n) && !memcmp(oa->m + o, ob->m + o, n) &&
               !memcmp(oa->v + o, ob->v + o, n);
    }
    return same;
}

static void path_in(char *out, const char *name) { snprintf(out, 512, "%s/%s", dir, name); }

static int copy_file(const char *from, const char *to, long limit) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) return -1;
    char buf[65536];
    size_t n;
    long done = 0;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0 && (limit < 0 || done < limit)) {
        if (limit >= 0 && done + (long)n > limit) n = limit - done;
        fwrite(buf, 1, n, b);
        done += n;
    }
    fclose(a);
    fclose(b);
    return 0;
}

// File offset of the middle of a dataset's data: found by searching the file
// for the dataset's first 32 bytes (random floats, so unique).
static long data_offset(const char *path, const char *ds_path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, ds_path, H5P_DEFAULT);
    hid_t space = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(space);
    float *x = xmalloc(n * sizeof(float), "dataset");
    H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Sclose(space);
    H5Dclose(ds);
    H5Fclose(f);
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp), found = -1;
    unsigned char *buf = xmalloc(size, "file");
    fseek(fp, 0, SEEK_SET);
    if (fread(buf, 1, size, fp) != (size_t)size) size = 0;
    fclose(fp);
    size_t key = n * sizeof(float) < 32 ? n * sizeof(float) : 32;
    for (long i = 0; i + (long)key <= size && found < 0; i++)
        if (!memcmp(buf + i, x, key)) found = i + (long)(n * sizeof(float)) / 2;
    xfree(buf);
    xfree(x);
    return found;
}

static void flip_byte(const char *path, long offset) {
    FILE *f = fopen(path, "r+b");
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int count_tmp_files(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '\\.tmp\\.' ", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p && fscanf(p, "%d", &n) != 1) n = 0;
    if (p) pclose(p);
    return n;
}

static void test_round_trip(void) {
    Fixture a, b;
    fixture_build(&a, 32, 4, 8, 2, 1);
    fixture_build(&b, 32, 4, 8, 2, 2);
    char p[512], err[2048];
    path_in(p, "rt.h5");
    int rc = checkpoint_save(p, &a.st, err, sizeof err);
    CHECK("save succeeds", rc == 0, "%s", err);
    rc = checkpoint_load(p, &b.st, err, sizeof err);
    CHECK("round trip bit-exact (params, m, v, steps, rng, cursor)", rc == 0 && same_state(&a, &b), "rc %d: %s step %lld/%lld opt %ld/%ld", rc, rc ? err : "state differs", (long long)a.st.step, (long long)b.st.step, a.model.opt.step, b.model.opt.step);

    CheckpointInfo info;
    rc = checkpoint_read_info(p, &info, err, sizeof err);
    CHECK("read_info: step, config, code version", rc == 0 && info.step == 1001 && info.epoch == 3 && info.adamw_step == 1001 &&
          !strcmp(info.config_yaml, "embed_dim: 32\n") && !strcmp(info.code_version, "test") && info.has_optimizer &&
          info.has_tokenizer, "rc %d %s", rc, err);
    if (rc == 0) checkpoint_info_free(&info);

    Tokenizer *tok = checkpoint_load_tokenizer(p, err, sizeof err);
    CHECK("tokenizer round trip", tok && tok->k == 8 && !memcmp(tok->centroids, a.tok->centroids, 8 * 16 * sizeof(float)),
          "%s", tok ? "centroids differ" : err);
    if (tok) tokenizer_free(tok);
    CHECK("verify passes on a good file", checkpoint_verify(p, err, sizeof err) == 0, "%s", err);

    // Layout: encoder under timm names, heads stripped, moments by full name.
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    int layout = H5Lexists(f, "encoder", 0) > 0 && H5Lexists(f, "encoder/blocks.1.attn.qkv.weight", 0) > 0 &&
                 H5Lexists(f, "pretrain_heads/token_head.weight", 0) > 0 && H5Lexists(f, "pretrain_heads/mask_token", 0) > 0 &&
                 H5Lexists(f, "optimizer/m/pretrain.token_head.weight", 0) > 0 && H5Lexists(f, "optimizer/v/cls_token", 0) > 0;
    hsize_t dims[4] = {0};
    h5_shape(f, "encoder/patch_embed.proj.weight", dims, 4);
    hid_t ds = H5Dopen2(f, "encoder/pos_embed", H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(ds);
    int filters = H5Pget_nfilters(dcpl), chunked = H5Pget_layout(dcpl) == H5D_CHUNKED;
    unsigned flags;
    size_t nelem = 0;
    unsigned cd[4];
    char fname[64];
    H5Z_filter_t fid = filters > 0 ? H5Pget_filter2(dcpl, 0, &flags, &nelem, cd, sizeof fname, fname, NULL) : -1;
    H5Pclose(dcpl);
    H5Dclose(ds);
    H5Fclose(f);
    CHECK("layout: timm names, real shapes, chunked + Fletcher32",
          layout && dims[0] == 32 && dims[1] == 1 && dims[2] == 4 && dims[3] == 4 && chunked && fid == H5Z_FILTER_FLETCHER32,
          "layout %d dims [%llu %llu %llu %llu] chunked %d filter %d", layout, (unsigned long long)dims[0],
          (unsigned long long)dims[1], (unsigned long long)dims[2], (unsigned long long)dims[3], chunked, (int)fid);

    // Encoder-only load into a table without heads.
    Vit v2;
    ParamTable t2 = {0};
    VitConfig cfg = {.img_size = 16, .patch_size = 4, .in_chans = 1, .embed_dim = 32, .depth = 2, .num_heads = 2,
                     .mlp_ratio = 2.0f, .qkv_bias = 1, .num_classes = 10};
    vit_register(&v2, &t2, &cfg);
    params_allocate(&t2);
    CheckpointState s2 = {.params = &t2, .mode = CKPT_LOAD_ENCODER};
    rc = checkpoint_load(p, &s2, err, sizeof err);
    int qi = params_find(&t2, "blocks.1.mlp.fc2.weight"), qa = params_find(&a.model.params, "blocks.1.mlp.fc2.weight");
    int hi = params_find(&t2, "head.weight");
    int ok = rc == 0 && !memcmp(params_data(&t2, qi), params_data(&a.model.params, qa), params_numel(&t2, qi) * sizeof(float)) &&
             params_data(&t2, hi)[0] == 0.0f;
    CHECK("encoder-only load (eval / fine-tune) leaves the head alone", ok, "rc %d: %s", rc, err);
    s2.mode = CKPT_LOAD_FULL;
    rc = checkpoint_load(p, &s2, err, sizeof err);
    CHECK("full load into a model without heads is refused", rc < 0 && strstr(err, "lacks"), "rc %d: %s", rc, err);
    vit_release(&v2);
    params_free(&t2);
    fixture_free(&a);
    fixture_free(&b);
}

static void test_corruption(void) {
    Fixture a, b;
    fixture_build(&a, 32, 4, 8, 2, 1);
    fixture_build(&b, 32, 4, 8, 2, 2);
    Fixture b0;
    fixture_build(&b0, 32, 4, 8, 2, 2);
    char p[512], q[512], err[2048];
    path_in(p, "good.h5");
    checkpoint_save(p, &a.st, err, sizeof err);

    path_in(q, "flipped.h5");
    copy_file(p, q, -1);
    flip_byte(q, data_offset(q, "/encoder/blocks.0.attn.qkv.weight"));
    int rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("flipped byte in a tensor: load fails naming it", rc < 0 && strstr(err, "blocks.0.attn.qkv.weight") && strstr(err, "checksum"),
          "rc %d: %s", rc, err);
    CHECK("failed load leaves the model untouched", same_state(&b, &b0), "state changed");
    rc = checkpoint_verify(q, err, sizeof err);
    CHECK("flipped byte: verify fails naming the dataset", rc < 0 && strstr(err, "blocks.0.attn.qkv.weight"), "rc %d: %s", rc, err);

    copy_file(p, q, -1);
    flip_byte(q, data_offset(q, "/optimizer/v/norm.weight"));
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("flipped byte in an AdamW moment is found", rc < 0 && strstr(err, "norm.weight") && strstr(err, "optimizer/v"), "rc %d: %s", rc, err);

    // Metadata is checksummed too: a flipped byte in an attribute (the config text).
    copy_file(p, q, -1);
    FILE *fp = fopen(q, "rb");
    static unsigned char whole[1 << 21];
    size_t got = fread(whole, 1, sizeof whole, fp);
    fclose(fp);
    long at = -1;
    for (size_t i = 0; i + 13 <= got && at < 0; i++)
        if (!memcmp(whole + i, "embed_dim: 32", 13)) at = (long)i + 3;
    if (at >= 0) flip_byte(q, at);
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    int vr = checkpoint_verify(q, err + 1024, sizeof err - 1024);
    CHECK("flipped byte in an attribute (object header checksum) is found", at >= 0 && rc < 0 && vr < 0, "at %ld rc %d: %s", at, rc, err);

    struct stat st;
    stat(p, &st);
    path_in(q, "truncated.h5");
    copy_file(p, q, st.st_size / 2);
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("truncated file: clear error", rc < 0 && strstr(err, "truncated"), "rc %d: %s", rc, err);
    copy_file(p, q, 100);
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("file cut to 100 bytes: clear error", rc < 0 && (strstr(err, "truncated") || strstr(err, "not an HDF5")), "rc %d: %s", rc, err);

    path_in(q, "text.h5");
    FILE *f = fopen(q, "w");
    fputs("step: 1000\nthis is not a checkpoint\n", f);
    fclose(f);
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("not an HDF5 file: clear error", rc < 0 && strstr(err, "not an HDF5 file"), "rc %d: %s", rc, err);
    path_in(q, "missing.h5");
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("missing file: clear error", rc < 0 && strstr(err, "No such file"), "rc %d: %s", rc, err);

    path_in(q, "version.h5");
    copy_file(p, q, -1);
    hid_t h = H5Fopen(q, H5F_ACC_RDWR, H5P_DEFAULT);
    h5_attr_write_i64(h, "format_version", 99);
    H5Fclose(h);
    rc = checkpoint_load(q, &b.st, err, sizeof err);
    CHECK("unknown format version: refused naming it", rc < 0 && strstr(err, "format version 99"), "rc %d: %s", rc, err);

    path_in(q, "tokenizer.h5");
    rc = checkpoint_save(q, &b.st, err, sizeof err);  // no error expected, b has a tokenizer
    CHECK("still usable after errors", rc == 0 && checkpoint_verify(q, err, sizeof err) == 0, "%s", err);
    CHECK("no crash, state intact after all failed loads", same_state(&b, &b0) || b.st.step == b0.st.step, "state changed");
    fixture_free(&a);
    fixture_free(&b);
    fixture_free(&b0);
}

static void test_mismatch(void) {
    Fixture a;
    fixture_build(&a, 32, 4, 8, 2, 1);
    char p[512], err[2048];
    path_in(p, "shape.h5");
    a.st.config_yaml = "embed_dim: 32\npatch_size: 4\nnum_centroids: 8\n";
    checkpoint_save(p, &a.st, err, sizeof err);
    struct { int D, patch, K, depth; const char *tensor, *got, *want, *name; } cases[] = {
        {48, 4, 8, 2, "cls_token", "[1, 1, 32]", "[1, 1, 48]", "shape mismatch: different D names tensor and shapes"},
        {32, 2, 8, 2, "pos_embed", "[1, 17, 32]", "[1, 65, 32]", "shape mismatch: different patch size"},
        {32, 4, 16, 2, "pretrain.token_head.weight", "[8, 32]", "[16, 32]", "shape mismatch: different K"},
        {32, 4, 8, 3, "blocks.2.", "lacks", "", "missing tensor: deeper model"},
        {32, 4, 8, 1, "blocks.1.", "lacks", "", "extra tensor: shallower model"},
    };
    for (int i = 0; i < (int)ARRAY_LEN(cases); i++) {
        Fixture b;
        fixture_build(&b, cases[i].D, cases[i].patch, cases[i].K, cases[i].depth, 5);
        char yaml[128];
        snprintf(yaml, sizeof yaml, "embed_dim: %d\npatch_size: %d\nnum_centroids: %d\n", cases[i].D, cases[i].patch, cases[i].K);
        b.st.config_yaml = yaml;
        int rc = checkpoint_load(p, &b.st, err, sizeof err);
        CHECK(cases[i].name, rc < 0 && strstr(err, cases[i].tensor) && strstr(err, cases[i].got) && strstr(err, cases[i].want),
              "rc %d: %s", rc, err);
        if (i == 0) CHECK("mismatch names the config key that differs", strstr(err, "embed_dim") != NULL, "%s", err);
        fixture_free(&b);
    }
    fixture_free(&a);
}

static void test_run_folder(void) {
    char run[512], p[700], err[2048];
    path_in(run, "run");
    mkdir(run, 0755);
    Fixture a;
    fixture_build(&a, 32, 4, 8, 2, 1);
    for (int s = 100; s <= 1000; s += 100) {
        a.st.step = s;
        int rc = checkpoint_save_step(run, &a.st, 2, 500, err, sizeof err);
        if (rc) CHECK("save_step", 0, "%s", err);
    }
    int kept = 1;
    for (int s = 100; s <= 1000; s += 100) {
        checkpoint_path(p, sizeof p, run, s);
        kept &= file_exists(p) == (s == 500 || s == 900 || s == 1000);
    }
    CHECK("prune keeps the last 2 and every 500th", kept, "wrong set of files kept");
    char link[600], target[256] = "";
    snprintf(link, sizeof link, "%s/latest", run);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n > 0) target[n] = 0;
    CHECK("latest points at the newest", !strcmp(target, "ckpt_step00001000.h5"), "latest -> '%s'", target);

    int rc = checkpoint_find_resume(run, p, sizeof p, err, sizeof err);
    CHECK("find_resume: newest good", rc == 1 && strstr(p, "ckpt_step00001000.h5"), "rc %d %s %s", rc, p, err);
    checkpoint_path(p, sizeof p, run, 1000);
    flip_byte(p, data_offset(p, "/encoder/norm.bias"));
    fprintf(stderr, "(the next warning is expected)\n");
    rc = checkpoint_find_resume(run, p, sizeof p, err, sizeof err);
    CHECK("find_resume: a corrupt newest falls back to the previous one", rc == 1 && strstr(p, "ckpt_step00000900.h5"), "rc %d %s %s",
          rc, p, err);
    char empty[512];
    path_in(empty, "empty_run");
    mkdir(empty, 0755);
    rc = checkpoint_find_resume(empty, p, sizeof p, err, sizeof err);
    CHECK("find_resume: empty folder -> 0", rc == 0, "rc %d", rc);

    // A stale temporary of a dead process is removed by prune; ours is not.
    snprintf(p, sizeof p, "%s/ckpt_step00001100.h5.tmp.999999", run);
    FILE *f = fopen(p, "w");
    fputs("partial", f);
    fclose(f);
    checkpoint_prune(run, 2, 500);
    CHECK("prune removes temporaries of dead processes", !file_exists(p), "%s still there", p);
    fixture_free(&a);
}

// Disk full: a small checkpoint is saved in folder `where`, then a child process
// tries to save a bigger one (about 3 MB) over it, with its file size limited to
// fsize_limit bytes (0: none; SIGXFSZ ignored, so writes fail with EFBIG).
static void disk_full_case(const char *name, const char *where, long fsize_limit, const char *expect) {
    char p[600], err[2048], label[160];
    snprintf(p, sizeof p, "%s/full.h5", where);
    Fixture small, big;
    fixture_build(&small, 32, 4, 8, 2, 1);
    fixture_build(&big, 96, 4, 64, 4, 3);
    int rc = checkpoint_save(p, &small.st, err, sizeof err);
    snprintf(label, sizeof label, "%s: first save fits", name);
    CHECK(label, rc == 0, "%s", err);
    int fds[2];
    if (pipe(fds)) return;
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        if (fsize_limit) {
            struct rlimit rl = {fsize_limit, fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        int r = checkpoint_save(p, &big.st, err, sizeof err);
        char msg[2100];
        snprintf(msg, sizeof msg, "%d %s", r, err);
        if (write(fds[1], msg, strlen(msg) + 1) < 0) _exit(2);
        _exit(0);
    }
    close(fds[1]);
    char msg[2100] = "";
    ssize_t n = read(fds[0], msg, sizeof msg - 1);
    if (n > 0) msg[n] = 0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    snprintf(label, sizeof label, "%s: save reports it", name);
    CHECK(label, !strncmp(msg, "-1 ", 3) && strstr(msg, expect) && strstr(msg, "previous"), "child said '%s'", msg);
    Fixture b;
    fixture_build(&b, 32, 4, 8, 2, 2);
    rc = checkpoint_load(p, &b.st, err, sizeof err);
    snprintf(label, sizeof label, "%s: previous checkpoint kept and loadable", name);
    CHECK(label, rc == 0 && same_state(&small, &b), "rc %d: %s", rc, err);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '\\.tmp\\.'", where);
    FILE *f = popen(cmd, "r");
    int tmps = -1;
    if (f && fscanf(f, "%d", &tmps) != 1) tmps = -1;
    if (f) pclose(f);
    snprintf(label, sizeof label, "%s: partial file removed", name);
    CHECK(label, tmps == 0, "%d temporary files left in %s", tmps, where);
    fixture_free(&small);
    fixture_free(&big);
    fixture_free(&b);
}

static void test_disk_full(void) {
    disk_full_case("file size limit hit at create (EFBIG)", dir, 200000, "too large");
    disk_full_case("file size limit hit while writing (EFBIG)", dir, 1500000, "too large");
    // A real full file system: a 2 MiB tmpfs (needs root; the limit cases above always run).
    char mnt[512], cmd[600];
    path_in(mnt, "tmpfs");
    mkdir(mnt, 0755);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=2m tmpfs %s 2>/dev/null", mnt);
    if (system(cmd) == 0) {
        disk_full_case("full tmpfs (ENOSPC)", mnt, 0, "disk full");
        // In this process: fail, then succeed once there is room, then exit normally
        // (HDF5 must not be left holding a half-closed file).
        Fixture small, big;
        fixture_build(&small, 32, 4, 8, 2, 1);
        fixture_build(&big, 96, 4, 64, 4, 3);
        char p[600], err[2048];
        snprintf(p, sizeof p, "%s/again.h5", mnt);
        int r1 = checkpoint_save(p, &big.st, err, sizeof err);
        int r2 = checkpoint_save(p, &small.st, err, sizeof err);
        int r3 = checkpoint_save(p, &big.st, err, sizeof err);
        CHECK("full tmpfs: the same process fails, then saves once there is room", r1 < 0 && r2 == 0 && r3 < 0 &&
              checkpoint_verify(p, err, sizeof err) == 0, "%d %d %d: %s", r1, r2, r3, err);
        fixture_free(&small);
        fixture_free(&big);
        snprintf(cmd, sizeof cmd, "umount %s", mnt);
        if (system(cmd)) printf("  could not unmount %s\n", mnt);
    } else {
        CHECK("full tmpfs (ENOSPC)", 0, "could not mount a 2 MiB tmpfs at %s: the disk-full case needs root "
              "(run the tests as root, as CI does)", mnt);
    }
}

// kill -9 a child that saves in a loop, after delays spread over a save; the
// file must always load and hold one of the saved steps.
static void test_kill9(void) {
    char p[512], err[2048];
    path_in(p, "kill.h5");
    Fixture a;
    fixture_build(&a, 96, 4, 64, 4, 1);  // a few MB, so kills land mid-write
    a.st.step = 0;
    checkpoint_save(p, &a.st, err, sizeof err);
    double t0 = now_seconds();
    checkpoint_save(p, &a.st, err, sizeof err);
    double save_s = now_seconds() - t0;
    int good = 0, trials = 0, mid = 0;
    Rng r;
    rng_seed(&r, 7, 0);
    // 12 kills, more (up to 48) until one lands mid-write: under ASan the write is a
    // smaller part of a save, so 12 can all miss it.
    for (int k = 0; k < 12 || (mid == 0 && k < 48); k++, trials++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int s = 1;; s++) {
                a.st.step = s;
                checkpoint_save(p, &a.st, err, sizeof err);
            }
        }
        double delay = save_s * (0.5 + 3.0 * rng_uniform(&r));
        struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        mid += count_tmp_files() > 0;
        Fixture b;
        fixture_build(&b, 96, 4, 64, 4, 2);
        int rc = checkpoint_load(p, &b.st, err, sizeof err);
        // Same weights as saved (only step differs).
        b.st.step = a.st.step;
        good += rc == 0 && same_state(&a, &b);
        if (rc) printf("  kill %d: %s\n", k, err);
        fixture_free(&b);
        checkpoint_prune(dir, 1000, 0);  // clears the dead child's temporary
    }
    printf("  (save takes %.1f ms; %d of %d kills left a partial temporary file)\n", save_s * 1e3, mid, trials);
    CHECK("kill -9 during saves: previous checkpoint always loadable", good == trials, "%d of %d loads good", good, trials);
    CHECK("kill -9: some kills landed mid-write", mid > 0, "no kill hit a write (timing)");
    CHECK("kill -9: prune removes the dead writers' temporaries", count_tmp_files() == 0, "left over");
    fixture_free(&a);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ccvit-test-ckpt-%d", (int)getpid());
    mkdir(dir, 0755);
    h5_quiet();
    test_round_trip();
    test_corruption();
    test_mismatch();
    test_run_folder();
    test_disk_full();
    test_kill9();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return 1;
    return check_exit();
}
