// fuzz_config: trainer/config.c (YAML through config_load_string, --key=value
// overrides through config_set, config_finalize) and
// data_loaders/shard_list.c (brace-expanded shard patterns).
//
// Input: three sections separated by a line "%%":
//   1. a YAML config;
//   2. overrides, one "--key=value" per line;
//   3. shard patterns for shard_list_expand (also data_train/data_val when
//      data_format is shards, as the trainer expands them).
// A config that loads and finalizes must write out (config_to_yaml) and read
// back to the same values (config_diff), the property --resume relies on.
#include "fuzz_common.h"

#include "config.h"
#include "shard_list.h"

static void expand(const char *patterns) {
    int n = 0, failed;
    char **volatile list = NULL;
    FUZZ_TRY(failed, list = shard_list_expand(patterns, &n));
    if (failed) return;
    for (int i = 0; i < n; i++)
        if (!list[i]) abort();
    shard_list_free(list, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16384) return 0;  // configs are small; long inputs only slow the fuzzer down
    const uint8_t *over, *shards;
    size_t over_n, shards_n;
    size_t yaml_n = fuzz_split(data, size, "\n%%\n", &over, &over_n);
    if (over) over_n = fuzz_split(over, over_n, "\n%%\n", &shards, &shards_n);
    else shards = NULL, shards_n = 0;

    char err[1024];
    Config *cfg = malloc(2 * sizeof(Config));
    config_defaults(&cfg[0]);
    char *yaml = fuzz_strndup(data, yaml_n);
    int ok = config_load_string(&cfg[0], yaml, "fuzz.yaml", err, sizeof err) == 0;
    if (!ok && !err[0]) abort();
    free(yaml);
    if (ok && over) {
        char *text = fuzz_strndup(over, over_n), *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line && ok; line = strtok_r(NULL, "\n", &save)) {
            ok = config_set(&cfg[0], line, err, sizeof err) == 0;
            if (!ok && !err[0]) abort();
        }
        free(text);
    }
    if (ok && config_finalize(&cfg[0], err, sizeof err) == 0) {
        (void)config_check_training(&cfg[0], err, sizeof err);
        char *back = config_to_yaml(&cfg[0]);
        config_defaults(&cfg[1]);
        char diff[400];
        if (config_load_string(&cfg[1], back, "written", err, sizeof err) != 0) {
            fprintf(stderr, "config_to_yaml output does not load back: %s\n%s\n", err, back);
            abort();
        }
        if (config_finalize(&cfg[1], err, sizeof err) != 0) {
            fprintf(stderr, "config_to_yaml output does not finalize: %s\n%s\n", err, back);
            abort();
        }
        if (config_diff(&cfg[0], &cfg[1], diff, sizeof diff)) {
            fprintf(stderr, "config_to_yaml round trip changes: %s\n%s\n", diff, back);
            abort();
        }
        free(back);
        if (!strcmp(cfg[0].data_format, "shards")) {
            expand(cfg[0].data_train);
            expand(cfg[0].data_val);
        }
    }
    free(cfg);
    if (shards) {
        char *pat = fuzz_strndup(shards, shards_n);
        expand(pat);
        free(pat);
    }
    return 0;
}
