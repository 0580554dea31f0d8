// fuzz_checkpoint: trainer/checkpoint.c and trainer/h5io.c on mutated real
// checkpoints (seeds: gen_h5_seeds.c): checkpoint_read_info + checkpoint_config
// (what --resume and the tools read first), checkpoint_verify,
// checkpoint_load_tokenizer and checkpoint_load into the tiny model of fuzz_h5.h.
// checkpoint_load must leave the model untouched when it fails.
//
// HDF5 checksums its metadata (libver >= 1.8) and every dataset (Fletcher32), and
// there is no whole-file pre-check of our own to switch off, so most mutations end
// at libhdf5's checksum test; what gets through exercises our checks.
#include "fuzz_common.h"

#include <sanitizer/lsan_interface.h>

#include "fuzz_h5.h"

static Vit *vit;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!vit) {
        h5_quiet();
        vit = vit_create(&FUZZ_VIT, 0, 1);
    }
    const char *path = fuzz_real_path(data, size, "h5");
    char err[4096];
    CheckpointInfo info;
    if (checkpoint_read_info(path, &info, err, sizeof err) == 0) {
        Config *cfg = malloc(sizeof *cfg);
        (void)checkpoint_config(&info, path, cfg, err, sizeof err);
        free(cfg);
        checkpoint_info_free(&info);
    } else if (!err[0]) {
        abort();
    }
    (void)checkpoint_verify_in_process(path, err, sizeof err);

    // tokenizer_load_group ends in fatal() on a bad tokenizer; what it held then is
    // left behind by design (the process would exit), so LSan ignores this call's
    // allocations and the HDF5 objects it left open are closed here.
    int failed;
    Tokenizer *volatile tok = NULL;
    __lsan_disable();
    FUZZ_TRY(failed, tok = checkpoint_load_tokenizer(path, err, sizeof err));
    __lsan_enable();
    if (failed) fuzz_h5_close_all();
    tokenizer_free(tok);

    ParamTable *t = vit->params;
    float *before = malloc(t->total * sizeof(float));
    memcpy(before, t->data, t->total * sizeof(float));
    unsigned char rng[FUZZ_RNG_BYTES], cursor[FUZZ_CURSOR_BYTES];
    CheckpointState s = {.params = t, .config_yaml = "img_size: 8\n", .rng = rng, .rng_size = sizeof rng,
                         .cursor = cursor, .cursor_size = sizeof cursor, .mode = size & 1 ? CKPT_LOAD_ENCODER : CKPT_LOAD_FULL};
    if (checkpoint_load(path, &s, err, sizeof err) != 0) {
        if (!err[0] || memcmp(before, t->data, t->total * sizeof(float))) abort();  // failed: untouched
    }
    memcpy(t->data, before, t->total * sizeof(float));
    free(before);
    ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_ids != 0) {  // our code left an HDF5 object open
        fprintf(stderr, "%zd HDF5 objects left open\n", open_ids);
        abort();
    }
    return 0;
}
