// fuzz_h5.h: what fuzz_checkpoint, fuzz_tokenizer and gen_h5_seeds.c share: the
// tiny model the seed checkpoint was saved from (so checkpoint_load gets a table
// that matches it), and the cleanup after a fatal() inside the HDF5 readers.
#include <stdlib.h>

#include "checkpoint.h"
#include "h5io.h"
#include "model.h"
#include "tokenizer.h"
#include "vit.h"

static const VitConfig FUZZ_VIT = {.img_size = 8, .patch_size = 4, .in_chans = 1, .embed_dim = 4, .depth = 1,
                                   .num_heads = 1, .mlp_ratio = 1.0f, .qkv_bias = 1, .use_mask_token = 1};
enum { FUZZ_RNG_BYTES = 32, FUZZ_CURSOR_BYTES = 16 };

// fatal() jumped out of tokenizer_load / tokenizer_load_group: close the HDF5
// objects it left open, so the next input's H5Fopen starts afresh.
__attribute__((unused)) static void fuzz_h5_close_all(void) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n <= 0) return;
    hid_t *ids = malloc(n * sizeof *ids);
    n = H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_ALL, n, ids);
    for (ssize_t i = 0; i < n; i++) {  // everything but the files, then the files
        H5I_type_t t = H5Iget_type(ids[i]);
        if (t == H5I_GROUP) H5Gclose(ids[i]);
        else if (t == H5I_DATASET) H5Dclose(ids[i]);
        else if (t == H5I_ATTR) H5Aclose(ids[i]);
        else if (t == H5I_DATATYPE) H5Tclose(ids[i]);
    }
    for (ssize_t i = 0; i < n; i++)
        if (H5Iget_type(ids[i]) == H5I_FILE) H5Fclose(ids[i]);
    free(ids);
}
