// config_check: validate a trainer config without training. Reads it exactly
// as the trainer does (--config FILE, --key=value overrides, --help) and
// prints the effective config as YAML, or the error and exit status 1.
#include "common.h"
#include "config.h"

int main(int argc, char **argv) {
    Config cfg;
    config_from_args(&cfg, argc, argv);
    char err[1024];
    if (config_check_training(&cfg, err, sizeof err) != 0) fatal("%s", err);
    if (config_ignored_keys(&cfg, err, sizeof err))
        fprintf(stderr, "warning: %s\n", err);
    char *yaml = config_to_yaml(&cfg);
    fputs(yaml, stdout);
    xfree(yaml);
    return 0;
}
