// fuzz_webdataset: data_loaders/webdataset.c's grouping of tar entries into
// samples (keys, image extensions, .cls labels, truncation) through wds_open /
// wds_next / wds_count_labelled, as the loader calls them.
//
// Input: byte 0 is a mode, the rest a tar archive. Mode bit 0: lazy images
// (offsets only, as the shuffle buffer reads them); bit 1: count only.
#include "fuzz_common.h"
#include "loader.h"
#include "webdataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    const char *path = fuzz_path(0, data + 1, size - 1);
    WdsReader r;
    if (wds_open(&r, path) != 0) return 0;
    r.lazy_images = mode & 1;
    r.count_only = (mode >> 1) & 1;
    WdsSample s = {0};
    int64_t n = 0;
    while (wds_next(&r, &s) == 1 && n < 100000) {
        n++;
        if (!s.key) abort();
        if (s.skip >= SKIP_NUM_REASONS || s.skip < -1) abort();
        if (!r.count_only && s.has_label && s.label < 0) abort();  // count_only: names alone
        if (s.image && s.image_len) (void)image_sniff(s.image, s.image_len);
    }
    wds_sample_clear(&s);
    wds_close(&r);
    int64_t l2 = 0, n2 = wds_count_labelled(path, &l2);
    if (n2 < 0 || l2 > n2) abort();
    return 0;
}
