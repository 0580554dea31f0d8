// gen_h5_seeds: writes the HDF5 seeds of fuzz_checkpoint and fuzz_tokenizer
// (`make fuzz-h5-seeds`): a checkpoint of the tiny model in fuzz_h5.h with an
// embedded 4-centroid tokenizer, and the tokenizer alone, a few KB each. Also
// the hand-made regression regress/tokenizer/huge_k: a tokenizer whose k says
// 2^24 centroids of 4096 floats but whose dataset holds 4.
#include <string.h>

#include "common.h"
#include "config.h"
#include "fuzz_h5.h"

static Tokenizer *tiny_tokenizer(int k) {
    float c[4 * 16];
    for (int i = 0; i < 4 * 16; i++) c[i] = (float)(i % 7) / 7.0f;
    int32_t counts[4] = {3, 1, 4, 1};
    Tokenizer *t = tokenizer_from_centroids(c, counts, 4, 4, 1);
    t->k = k;
    return t;
}

int main(int argc, char **argv) {
    if (argc != 2) fatal("usage: gen_h5_seeds tests/fuzz");
    char path[4096];
    Vit *vit = vit_create(&FUZZ_VIT, 0, 1);
    Tokenizer *tok = tiny_tokenizer(4);
    Config cfg;
    config_defaults(&cfg);
    char err[1024];
    if (config_set(&cfg, "--img_size=8", err, sizeof err) || config_set(&cfg, "--patch_size=4", err, sizeof err) ||
        config_set(&cfg, "--embed_dim=4", err, sizeof err) || config_set(&cfg, "--depth=1", err, sizeof err) ||
        config_set(&cfg, "--num_heads=1", err, sizeof err))
        fatal("%s", err);
    char *yaml = config_to_yaml(&cfg);
    unsigned char rng[FUZZ_RNG_BYTES] = {1, 2, 3}, cursor[FUZZ_CURSOR_BYTES] = {4, 5, 6};
    CheckpointState s = {.params = vit->params, .tokenizer = tok, .config_yaml = yaml, .code_version = "fuzz-seed",
                         .step = 1, .epoch = 0, .rng = rng, .rng_size = sizeof rng, .cursor = cursor,
                         .cursor_size = sizeof cursor};
    snprintf(path, sizeof path, "%s/corpus/checkpoint/tiny.h5", argv[1]);
    if (checkpoint_save(path, &s, err, sizeof err)) fatal("%s", err);
    s.tokenizer = NULL;
    snprintf(path, sizeof path, "%s/corpus/checkpoint/no_tokenizer.h5", argv[1]);
    if (checkpoint_save(path, &s, err, sizeof err)) fatal("%s", err);
    snprintf(path, sizeof path, "%s/corpus/tokenizer/tiny.h5", argv[1]);
    tokenizer_save(tok, path);
    tokenizer_free(tok);
    // k = 2^24, patch 16 with 16 channels (d = 4096): 256 GiB of centroids if believed
    tok = tiny_tokenizer(4);
    tok->k = 1 << 24;
    tok->patch = 16;
    tok->channels = 16;
    tok->d = 16;  // what the datasets' shapes follow (4 x 16)
    H5Image img;
    hid_t f = h5_create_in_memory(&img);
    hid_t g = h5_group_create(f, "tokenizer");
    int k = tok->k;
    tok->k = 4;
    tokenizer_save_group(tok, g);
    h5_attr_write_i64(g, "k", k);
    h5_group_close(g);
    h5_close_in_memory(f, &img);
    snprintf(path, sizeof path, "%s/regress/tokenizer/huge_k.h5", argv[1]);
    if (file_write_atomic(path, img.data, img.size, "tokenizer", err, sizeof err)) fatal("%s", err);
    h5_image_free(&img);
    tok->k = 4, tok->patch = 4, tok->channels = 1, tok->d = 16;
    tokenizer_free(tok);
    free(yaml);
    vit_destroy(vit);
    return 0;
}
