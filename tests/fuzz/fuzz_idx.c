// fuzz_idx: data_loaders/idx_reader.c, the Fashion-MNIST IDX reader of
// tools/programs/make_shards (idx_read_fashion_mnist), gzip'd or plain.
//
// Input: the image file's bytes, the separator "%%IDX%%", the label file's bytes.
#include "fuzz_common.h"
#include "idx_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *labels;
    size_t labels_n;
    size_t images_n = fuzz_split(data, size, "%%IDX%%", &labels, &labels_n);
    const char *ip = fuzz_path(0, data, images_n), *lp = fuzz_path(1, labels ? labels : data, labels_n);
    IdxImages d;
    int failed;
    FUZZ_TRY(failed, idx_read_fashion_mnist(&d, ip, lp));
    if (failed) return 0;
    if (d.n < 0 || d.rows < 1 || d.rows > 4096 || d.cols < 1 || d.cols > 4096) abort();
    unsigned sum = 0;
    for (int64_t i = 0; i < d.n; i++) {
        if (d.labels[i] < 0 || d.labels[i] > 9) abort();
        sum += d.pixels[(i + 1) * d.rows * d.cols - 1];  // each image's last byte is there
    }
    __asm__ volatile("" : : "r"(sum));
    idx_images_free(&d);
    return 0;
}
