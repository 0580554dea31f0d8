// test_config.c: the config reader. Every error names the file (or the
// --key=value argument), the line and the key; defaults apply; overrides win
// over the file; YAML written by config_to_yaml reads back to the same config.
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "config.h"

static char tmpdir[] = "/tmp/test_config_XXXXXX";

static const char *write_tmp(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) fatal("cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

static bool has_all(const char *msg, const char *a, const char *b, const char *c) {
    return strstr(msg, a) && (!b || strstr(msg, b)) && (!c || strstr(msg, c));
}

// Run config_from_args in a child; return its exit status and its stderr + stdout.
static int run_child(int argc, char **argv, char *out, size_t n) {
    int fd[2];
    if (pipe(fd)) fatal("pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        check_death_child();
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        Config cfg;
        config_from_args(&cfg, argc, argv);
        _exit(0);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < n && (r = read(fd[0], out + len, n - 1 - len)) > 0) len += (size_t)r;
    out[len] = 0;
    char sink[4096];
    while (read(fd[0], sink, sizeof sink) > 0) {
    }
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct {
    const char *name, *yaml;
    const char *want[3];  // substrings the error must contain (besides the file name)
} ErrorCase;

static const ErrorCase FILE_ERRORS[] = {
    {"unknown_key", "lr: 0.001\nlr_min: 1e-6\n", {":2:1:", "'lr_min'", "did you mean 'min_lr'"}},
    {"unknown_key_typo", "# comment\nbatch_sise: 64\n", {":2:1:", "'batch_sise'", "did you mean 'batch_size'"}},
    {"wrong_type_int", "epochs: 3\nbatch_size: lots\n", {":2:13:", "'batch_size'", "expected an integer in [1, 65536]"}},
    {"wrong_type_float_int", "depth: 2.5\n", {":1:8:", "'depth'", "expected an integer"}},
    {"wrong_type_bool", "\n\nqkv_bias: maybe\n", {":3:11:", "'qkv_bias'", "true or false"}},
    {"quoted_number", "lr: \"0.1\"\n", {":1:5:", "'lr'", "quoted"}},
    {"list_for_scalar", "lr: [1, 2]\n", {":1:5:", "'lr'", "got a list"}},
    {"mapping_value", "lr:\n  a: 1\n", {":2:3:", "'lr'", "got a mapping"}},
    {"out_of_range", "lr: 0.001\nmask_ratio: 1.5\n", {":2:13:", "'mask_ratio'", "out of range [0, 1)"}},
    {"out_of_range_open", "lr: 0\n", {":1:5:", "'lr'", "out of range (0, 10]"}},
    {"int_overflow", "steps: 99999999999999\n", {":1:8:", "'steps'", "at most 2147483647"}},
    {"empty_value", "lr: 0.1\nwarmup_steps:\n", {":2:", "'warmup_steps'", "got no value"}},
    {"bad_enum", "interpolation: lanczos\n", {":1:16:", "'interpolation'", "bilinear|bicubic"}},
    {"list_length", "opt_betas: [0.9]\n", {":1:12:", "'opt_betas'", "a list of 2 numbers"}},
    {"list_too_long", "mean: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n", {":1:7:", "'mean'", "got 10 values"}},
    {"list_item_range", "scale: [0.5, 2]\n", {":1:8:", "'scale'", "item 2 (2) is out of range (0, 1]"}},
    {"list_item_type", "opt_betas: [0.9, x]\n", {":1:12:", "'opt_betas'", "got 'x' as item 2"}},
    {"duplicate_key", "lr: 0.001\ndepth: 4\nlr: 0.002\n", {":3:1:", "'lr'", "first at line 1"}},
    {"not_a_mapping", "- lr\n- depth\n", {":1:1:", "expected a mapping", "got a list"}},
    {"scalar_document", "just text\n", {":1:1:", "expected a mapping", "got a scalar"}},
    {"malformed_yaml", "lr: 0.001\nmean: [0.1\ndepth: 3\n", {"YAML syntax error", ":3:", "flow sequence at line 2"}},
    {"tab_indent", "lr: 0.1\n\tdepth: 3\n", {"YAML syntax error", ":2:", "tab"}},
    {"second_document", "lr: 0.1\n---\ndepth: 3\n", {":3:1:", "second YAML document", NULL}},
    {"empty_key", "{[1]: 2}\n", {":1:2:", "a key must be a name", NULL}},
};

static void test_file_errors(void) {
    char err[1024], name[96];
    for (size_t i = 0; i < ARRAY_LEN(FILE_ERRORS); i++) {
        const ErrorCase *e = &FILE_ERRORS[i];
        char fname[64];
        snprintf(fname, sizeof fname, "%s.yaml", e->name);
        const char *path = write_tmp(fname, e->yaml);
        Config cfg;
        config_defaults(&cfg);
        err[0] = 0;
        int rc = config_load_file(&cfg, path, err, sizeof err);
        snprintf(name, sizeof name, "config_file_error_%s", e->name);
        CHECK(name, rc == -1 && strstr(err, path) && has_all(err, e->want[0], e->want[1], e->want[2]),
              "rc %d, message: %s", rc, err);
    }
    Config cfg;
    config_defaults(&cfg);
    int rc = config_load_file(&cfg, "/nonexistent/x.yaml", err, sizeof err);
    CHECK("config_file_error_missing_file", rc == -1 && has_all(err, "/nonexistent/x.yaml", "No such file", NULL),
          "%s", err);
}

static void test_defaults_and_file(void) {
    char err[1024];
    Config cfg;
    config_defaults(&cfg);
    CHECK("config_defaults", cfg.lr == 5e-4 && cfg.batch_size == 256 && cfg.qkv_bias && cfg.mean.n == 1 &&
                                 cfg.opt_betas.n == 2 && cfg.opt_betas.v[1] == 0.999 &&
                                 strcmp(cfg.interpolation, "bicubic") == 0 && strcmp(cfg.output_dir, "checkpoints") == 0 &&
                                 cfg.origin[CFG_lr][0] == 0,
          "lr %g batch %d", cfg.lr, cfg.batch_size);
    CHECK("config_defaults_finalize", config_finalize(&cfg, err, sizeof err) == 0, "%s", err);

    const char *path = write_tmp("good.yaml",
                                 "# a comment line\n"
                                 "lr: 1e-3   # peak\n"
                                 "depth: 4\n"
                                 "hflip: 0\n"
                                 "qkv_bias: false\n"
                                 "tokenizer_path: ~\n"
                                 "run_name: 'my run: #1'\n"
                                 "ratio:\n  - 0.5\n  - 2\n"
                                 "interpolation: bilinear\n");
    config_defaults(&cfg);
    int rc = config_load_file(&cfg, path, err, sizeof err);
    CHECK("config_file_loads", rc == 0, "%s", err);
    CHECK("config_file_values", cfg.lr == 1e-3 && cfg.depth == 4 && cfg.hflip == 0 && !cfg.qkv_bias &&
                                    cfg.tokenizer_path[0] == 0 && strcmp(cfg.run_name, "my run: #1") == 0 &&
                                    cfg.ratio.n == 2 && cfg.ratio.v[0] == 0.5 && cfg.ratio.v[1] == 2 &&
                                    strcmp(cfg.interpolation, "bilinear") == 0,
          "lr %g depth %d run_name '%s'", cfg.lr, cfg.depth, cfg.run_name);
    CHECK("config_file_keeps_other_defaults", cfg.batch_size == 256 && cfg.num_centroids == 512, "batch %d",
          cfg.batch_size);
    CHECK("config_origin", strstr(cfg.origin[CFG_depth], "good.yaml:3") && cfg.origin[CFG_seed][0] == 0, "'%s'",
          cfg.origin[CFG_depth]);

    const char *empty = write_tmp("empty.yaml", "# only comments\n\n");
    config_defaults(&cfg);
    CHECK("config_empty_file_is_defaults", config_load_file(&cfg, empty, err, sizeof err) == 0 && cfg.lr == 5e-4, "%s",
          err);
}

static void test_overrides(void) {
    char err[1024];
    Config cfg;
    const char *path = write_tmp("base.yaml", "lr: 0.001\ndepth: 4\nmean: [0.5]\n");
    config_defaults(&cfg);
    config_load_file(&cfg, path, err, sizeof err);
    int rc = config_set(&cfg, "--lr=0.002", err, sizeof err) | config_set(&cfg, "--batch-size=64", err, sizeof err) |
             config_set(&cfg, "--mask_both_views", err, sizeof err) |
             config_set(&cfg, "--opt_betas=[0.8, 0.9]", err, sizeof err) |
             config_set(&cfg, "--mean=0.25", err, sizeof err) | config_set(&cfg, "--run_name=a=b", err, sizeof err);
    CHECK("config_override_applies", rc == 0, "%s", err);
    CHECK("config_override_wins", cfg.lr == 0.002 && cfg.depth == 4 && cfg.batch_size == 64 && cfg.mask_both_views &&
                                      cfg.opt_betas.v[0] == 0.8 && cfg.opt_betas.v[1] == 0.9 && cfg.mean.v[0] == 0.25 &&
                                      strcmp(cfg.run_name, "a=b") == 0,
          "lr %g batch %d", cfg.lr, cfg.batch_size);
    CHECK("config_override_origin", strcmp(cfg.origin[CFG_lr], "--lr=0.002") == 0, "'%s'", cfg.origin[CFG_lr]);

    static const struct {
        const char *arg, *want1, *want2;
    } bad[] = {
        {"--lr=abc", "'lr'", "expected a number in (0, 10]"},
        {"--lr", "'lr'", "needs a value"},
        {"--depth=0", "'depth'", "out of range [1, 64]"},
        {"--mixupp=0.2", "'mixupp'", "did you mean 'mixup'"},
        {"--data-formt=tar", "'data_formt'", "did you mean 'data_format'"},
        {"--sched=step", "'sched'", "cosine|linear|constant"},
        {"--opt_betas=0.9", "'opt_betas'", "a list of 2 numbers"},
        {"--opt_betas=0.9,1.5", "'opt_betas'", "item 2 (1.5) is out of range [0, 1)"},
        {"--qkv_bias=maybe", "'qkv_bias'", "true or false"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char name[96];
        snprintf(name, sizeof name, "config_override_error %s", bad[i].arg);
        Config c2 = cfg;
        err[0] = 0;
        rc = config_set(&c2, bad[i].arg, err, sizeof err);
        CHECK(name, rc == -1 && strncmp(err, bad[i].arg, strlen(bad[i].arg)) == 0 && has_all(err, bad[i].want1, bad[i].want2, NULL),
              "%s", err);
        CHECK("config_override_error_leaves_value", config_diff(&c2, &cfg, NULL, 0) == 0, "changed");
    }
}

static void test_finalize(void) {
    char err[1024];
    Config cfg;
    const char *path = write_tmp("rules.yaml", "lr: 0.001\nimg_size: 30\n");
    config_defaults(&cfg);
    config_load_file(&cfg, path, err, sizeof err);
    config_set(&cfg, "--patch_size=4", err, sizeof err);
    int rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_rule_patch_divides", rc == -1 && has_all(err, "img_size 30", "rules.yaml:2", "--patch_size=4"), "%s",
          err);

    config_defaults(&cfg);
    config_set(&cfg, "--in_chans=3", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_rule_mean_per_channel", rc == -1 && has_all(err, "mean", "in_chans is 3", "--in_chans=3"), "%s", err);

    // a time-limit-only config with a decaying schedule still reads back (eval opens the
    // checkpoints such runs stored); the trainer refuses to start one (tests/test_train.py)
    config_defaults(&cfg);
    config_set(&cfg, "--epochs=0", err, sizeof err);
    config_set(&cfg, "--time_limit_minutes=5", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_time_limit_only_cosine_reads_back", rc == 0, "%s", err);

    config_defaults(&cfg);
    config_set(&cfg, "--in_chans=2", err, sizeof err);
    config_set(&cfg, "--mean=0.5,0.5", err, sizeof err);
    config_set(&cfg, "--std=0.2,0.2", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_rule_grey_or_rgb", rc == -1 && has_all(err, "in_chans", "--in_chans=2", "1 (grey) or 3"), "%s", err);

    config_defaults(&cfg);
    config_set(&cfg, "--warmup_steps=10", err, sizeof err);
    config_set(&cfg, "--warmup_epochs=1", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_rule_one_warmup", rc == -1 && has_all(err, "warmup_steps", "warmup_epochs", NULL), "%s", err);

    config_defaults(&cfg);
    config_set(&cfg, "--model=vit_small", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_preset_sets_sizes", rc == 0 && cfg.embed_dim == 384 && cfg.depth == 12 && cfg.num_heads == 6, "%s",
          err);
    config_defaults(&cfg);
    config_set(&cfg, "--model=vit_tiny", err, sizeof err);
    config_set(&cfg, "--depth=6", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_preset_conflict", rc == -1 && has_all(err, "vit_tiny", "depth = 12", "--depth=6"), "%s", err);

    config_defaults(&cfg);
    config_set(&cfg, "--w_token=0", err, sizeof err);
    config_set(&cfg, "--w_pixel=0", err, sizeof err);
    config_set(&cfg, "--w_contrast=0", err, sizeof err);
    rc = config_finalize(&cfg, err, sizeof err);
    CHECK("config_rule_some_loss", rc == -1 && strstr(err, "w_contrast"), "%s", err);
}

// A pretraining config that sets fine-tune-only keys is told which, and where they were set;
// the same keys in a fine-tuning config, left unset, or set to their defaults, say nothing.
static void test_ignored_keys(void) {
    char msg[1024];
    Config cfg;
    const char *path = write_tmp("pre.yaml", "task: pretrain\nlayer_decay: 0.65\n");
    config_defaults(&cfg);
    CHECK("config_ignored_none_by_default", config_ignored_keys(&cfg, msg, sizeof msg) == 0 && !msg[0], "%s", msg);
    config_load_file(&cfg, path, msg, sizeof msg);
    config_set(&cfg, "--reprob=0.25", msg, sizeof msg);
    config_set(&cfg, "--lr=0.002", msg, sizeof msg);
    config_set(&cfg, "--num_classes=10", msg, sizeof msg);  // its default, as an effective config.yaml lists it
    int n = config_ignored_keys(&cfg, msg, sizeof msg);
    CHECK("config_ignored_names_keys_and_origin",
          n == 2 && has_all(msg, "layer_decay (", "pre.yaml:2)", "reprob (--reprob=0.25)") && !strstr(msg, "lr ("),
          "%d: %s", n, msg);
    config_set(&cfg, "--task=finetune", msg, sizeof msg);
    CHECK("config_ignored_none_when_finetuning", config_ignored_keys(&cfg, msg, sizeof msg) == 0, "%s", msg);
}

static void test_round_trip(void) {
    char err[1024];
    Config a, b;
    config_defaults(&a);
    const char *sets[] = {"--lr=0.1",
                          "--min_lr=3.3333333333333335e-07",
                          "--mlp_ratio=2.6666666666666665",
                          "--weight_decay=1e-300",
                          "--model=vit_tiny",
                          "--qkv_bias=false",
                          "--run_name=quote\" back\\slash: colon # hash \xc3\xa9t\xc3\xa9 'single'",
                          "--data_train=data/fmnist/train-{000000..000009}.tar",
                          "--mean=0.485,0.456,0.406",
                          "--std=[0.229, 0.224, 0.225]",
                          "--in_chans=3",
                          "--ratio=0.1,10",
                          "--resume=auto",
                          "--data_format=imagefolder",
                          "--time_limit_minutes=12.5",
                          "--seed=2147483647"};
    int rc = 0;
    for (size_t i = 0; i < ARRAY_LEN(sets); i++) rc |= config_set(&a, sets[i], err, sizeof err);
    rc |= config_finalize(&a, err, sizeof err);
    CHECK("config_round_trip_setup", rc == 0, "%s", err);

    char *yaml = config_to_yaml(&a);
    config_defaults(&b);
    rc = config_load_string(&b, yaml, "round trip", err, sizeof err) | config_finalize(&b, err, sizeof err);
    char diff[1024];
    int nd = config_diff(&a, &b, diff, sizeof diff);
    CHECK("config_round_trip_string", rc == 0 && nd == 0, "rc %d (%s), %d keys differ: %s", rc, err, nd, diff);
    char *yaml2 = config_to_yaml(&b);
    CHECK("config_round_trip_text_identical", strcmp(yaml, yaml2) == 0, "texts differ");

    // Through a file, on top of a different base: every key is written, so nothing of the base survives.
    const char *path = write_tmp("effective.yaml", yaml);
    Config c;
    config_defaults(&c);
    config_set(&c, "--depth=2", err, sizeof err);
    config_set(&c, "--hflip=0.1", err, sizeof err);
    rc = config_load_file(&c, path, err, sizeof err);
    nd = config_diff(&a, &c, diff, sizeof diff);
    CHECK("config_round_trip_file", rc == 0 && nd == 0, "%d keys differ: %s", nd, diff);

    size_t keys = 0;
    for (const char *p = yaml; (p = strchr(p, '\n')); p++)
        if (p[1] && p[1] != '#' && p[1] != '\n') keys++;
    CHECK("config_yaml_every_key", keys == CONFIG_NUM_KEYS, "%zu lines for %d keys", keys, CONFIG_NUM_KEYS);
    xfree(yaml);
    xfree(yaml2);

    config_defaults(&b);
    b.lr = 0.25;
    b.depth = 9;
    nd = config_diff(&a, &b, diff, sizeof diff);
    CHECK("config_diff_names_keys", nd > 2 && has_all(diff, "lr: 0.1 vs 0.25", "depth: 12 vs 9", NULL), "%d: %s", nd,
          diff);

    rc = config_load_string(&b, "lr: 0.1\nlr: 0.2\n", "checkpoint step_100.h5", err, sizeof err);
    CHECK("config_string_error_names_source", rc == -1 && has_all(err, "checkpoint step_100.h5:2:1:", "'lr'", NULL),
          "%s", err);
}

static void test_from_args(void) {
    char out[16384];
    char path[256];  // write_tmp's buffer is reused
    snprintf(path, sizeof path, "%s", write_tmp("args.yaml", "lr: 0.001\nepochs: 2\n"));
    char *ok[] = {"trainer", "--config", path, "--lr=0.003", NULL};
    CHECK("config_from_args_ok", run_child(4, ok, out, sizeof out) == 0, "%s", out);

    char *bad_file[] = {"trainer", "--config", (char *)write_tmp("bad.yaml", "lr: 0.001\nepochs: -1\n"), NULL};
    int st = run_child(3, bad_file, out, sizeof out);
    CHECK("config_from_args_file_error_exits", st == 1 && has_all(out, "error: ", "bad.yaml:2:9:", "'epochs'"),
          "status %d: %s", st, out);

    char *bad_arg[] = {"trainer", "--config=" /* joined below */, "--epochs=x", NULL};
    char joined[300];
    snprintf(joined, sizeof joined, "--config=%s", path);
    bad_arg[1] = joined;
    st = run_child(3, bad_arg, out, sizeof out);
    CHECK("config_from_args_override_error_exits", st == 1 && has_all(out, "error: --epochs=x:", "'epochs'", NULL),
          "status %d: %s", st, out);

    char *stray[] = {"trainer", "configs/x.yaml", NULL};
    st = run_child(2, stray, out, sizeof out);
    CHECK("config_from_args_stray_argument", st == 1 && strstr(out, "'configs/x.yaml'"), "status %d: %s", st, out);

    char *help[] = {"trainer", "--lr=bad", "--help", NULL};
    st = run_child(3, help, out, sizeof out);
    bool all = true;
    Config d;
    config_defaults(&d);
    const char *missing = "";
    char *yaml = config_to_yaml(&d);  // every key name, one per line
    for (char *line = strtok(yaml, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char key[64];
        snprintf(key, sizeof key, "  %.*s ", (int)(strchr(line, ':') - line), line);
        if (!strstr(out, key)) all = false, missing = line;
    }
    CHECK("config_help_lists_every_key", st == 0 && all && strstr(out, "usage:") && strstr(out, "(0, 10]"),
          "status %d, missing '%s'", st, missing);
    xfree(yaml);
}

int main(void) {
    if (!mkdtemp(tmpdir)) fatal("mkdtemp %s", tmpdir);
    test_defaults_and_file();
    test_file_errors();
    test_overrides();
    test_finalize();
    test_ignored_keys();
    test_round_trip();
    test_from_args();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) warn("could not remove %s", tmpdir);
    return check_exit();
}
