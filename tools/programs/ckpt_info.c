// ckpt_info: a checkpoint's summary: step, versions, size on disk, every tensor
// with its shape, and the config it was trained with.
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "common.h"
#include "h5io.h"

typedef struct {
    long tensors;
    long long floats;
    int show;  // print each tensor (else only count)
} Walk;

static herr_t show_dataset(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;  // H5L_iterate2_t signature
    Walk *w = data;
    H5O_info_t oi;
    if (H5Oget_info_by_name(g, name, &oi, H5P_DEFAULT) < 0 || oi.type != H5O_TYPE_DATASET) return 0;
    hsize_t dims[8];
    char err[1024], shape[8 * 22 + 4] = "[";  // 8 dims of up to 20 digits, ", " each, brackets
    int rank = h5_try_shape(g, name, dims, 8, err, sizeof err);
    if (rank < 0) {
        printf("  %-52s %s\n", name, err);
        return 0;
    }
    long long n = 1;
    for (int i = 0; i < rank; i++) {
        n *= (long long)dims[i];
        size_t l = strlen(shape);
        snprintf(shape + l, sizeof shape - l, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    }
    size_t l = strlen(shape);
    snprintf(shape + l, sizeof shape - l, "]");
    w->tensors++;
    w->floats += n;
    if (w->show) printf("  %-52s %-22s %12lld\n", name, shape, n);
    return 0;
}

static void walk_group(hid_t f, const char *group, const char *title, int show) {
    if (!h5_exists(f, group)) return;
    Walk w = {0, 0, show};
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    if (show) printf("\n%s (/%s):\n", title, group);
    H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, show_dataset, &w);
    H5Gclose(g);
    printf("%s/%s: %ld tensors, %lld values\n", show ? "  total " : "", group, w.tensors, w.floats);
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int verify = 0, config = 0, all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: ckpt_info CHECKPOINT.h5 [--verify] [--config] [--all]\n"
                   "Step, epoch, versions, size on disk, the encoder and head tensors with their shapes.\n"
                   "  --verify  read every dataset back and check its Fletcher32 checksum\n"
                   "  --config  print the full effective config (YAML) it was trained with\n"
                   "  --all     also list the optimizer and tokenizer datasets\n"
                   "`h5ls -r FILE` and h5py read the same tensors by name.\n");
            return 0;
        } else if (!strcmp(argv[i], "--verify")) verify = 1;
        else if (!strcmp(argv[i], "--config")) config = 1;
        else if (!strcmp(argv[i], "--all")) all = 1;
        else if (!path && argv[i][0] != '-') path = argv[i];
        else fatal("unexpected argument '%s' (see --help)", argv[i]);
    }
    if (!path) fatal("give a checkpoint file (see --help)");
    char err[4096];
    CheckpointInfo info;
    if (checkpoint_read_info(path, &info, err, sizeof err)) fatal("%s", err);
    struct stat st;
    stat(path, &st);
    printf("checkpoint      %s\n", path);
    printf("size on disk    %.2f MiB (%lld bytes)\n", st.st_blocks * 512.0 / (1 << 20), (long long)st.st_size);
    printf("format version  %lld\n", (long long)info.format_version);
    printf("step / epoch    %lld / %lld\n", (long long)info.step, (long long)info.epoch);
    printf("optimizer       %s\n", info.has_optimizer ? "AdamW m, v" : "none (evaluation / fine-tuning only)");
    if (info.has_optimizer) printf("adamw step      %lld\n", (long long)info.adamw_step);
    printf("tokenizer       %s\n", info.has_tokenizer ? "embedded (/tokenizer)" : "none");
    printf("written by      %s at %s\n", info.code_version, info.created_utc);
    if (verify) {
        int rc = checkpoint_verify(path, err, sizeof err);
        printf("verify          %s\n", rc ? err : "every dataset reads back with a good checksum");
        if (rc) return 1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fatal("cannot open '%s' as HDF5 to list its tensors", path);
    walk_group(f, "encoder", "encoder", 1);
    walk_group(f, "pretrain_heads", "pretraining heads", 1);
    walk_group(f, "optimizer", "optimizer", all);
    walk_group(f, "tokenizer", "tokenizer", all);
    H5Fclose(f);
    if (config) printf("\nconfig:\n%s", info.config_yaml);
    else {
        // The model keys only; --config prints all.
        printf("\nconfig (model keys; --config for all):\n");
        const char *keys[] = {"model:", "img_size:", "patch_size:", "in_chans:", "embed_dim:", "depth:", "num_heads:",
                              "mlp_ratio:", "num_centroids:", "task:"};
        for (const char *line = info.config_yaml; line && *line;) {
            const char *end = strchr(line, '\n');
            size_t len = end ? (size_t)(end - line) : strlen(line);
            for (size_t k = 0; k < ARRAY_LEN(keys); k++)
                if (!strncmp(line, keys[k], strlen(keys[k]))) printf("  %.*s\n", (int)len, line);
            line = end ? end + 1 : NULL;
        }
    }
    checkpoint_info_free(&info);
    return 0;
}
