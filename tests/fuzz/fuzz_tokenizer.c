// fuzz_tokenizer: trainer/tokenizer.c's tokenizer_load (the standalone
// centroids file of tokenizer_path) on mutated real files (gen_h5_seeds.c).
// It answers a bad file with fatal(): what it held then is left behind by design
// (the process would exit), so LSan ignores the call's allocations and the HDF5
// objects it left open are closed here.
#include "fuzz_common.h"

#include <sanitizer/lsan_interface.h>

#include "fuzz_h5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    h5_quiet();
    const char *path = fuzz_real_path(data, size, "h5");
    int failed;
    Tokenizer *volatile tok = NULL;
    __lsan_disable();
    FUZZ_TRY(failed, tok = tokenizer_load(path));
    __lsan_enable();
    if (failed) {
        fuzz_h5_close_all();
        return 0;
    }
    if (tok->k < 1 || tok->d != tok->channels * tok->patch * tok->patch) abort();
    float patch[4096] = {0};
    int32_t id = -1;
    if (tok->d <= 4096) {
        tokenizer_assign(tok, patch, 1, &id, NULL);
        if (id < 0 || id >= tok->k) abort();
    }
    tokenizer_free(tok);
    return 0;
}
