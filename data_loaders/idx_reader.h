// idx_reader.h: the Fashion-MNIST IDX files (an IDX3 image file and its IDX1
// label file, gzip'd or plain), as tools/programs/make_shards reads them.
#pragma once
#include <stdint.h>

typedef struct {
    int64_t n;            // images
    int rows, cols;       // 1..4096 each
    uint8_t *pixels;      // [n, rows, cols] (malloc'd)
    int32_t *labels;      // [n], each 0..9 (malloc'd)
} IdxImages;

// fatal() naming the file when either is missing, not IDX, truncated, or holds
// a label outside 0..9; everything read so far is freed first.
void idx_read_fashion_mnist(IdxImages *d, const char *images_path, const char *labels_path);
void idx_images_free(IdxImages *d);
