// idx_reader.c: IDX3 images + IDX1 labels (big-endian headers), through zlib's
// gzread, which reads plain files as they are.
#include "idx_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common.h"

// The whole (inflated) file, malloc'd; NULL with the message in err.
static uint8_t *gunzip_file(const char *path, size_t *len, char *err, size_t errlen) {
    gzFile g = gzopen(path, "rb");
    if (!g) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = xmalloc(cap, "IDX data");
    for (;;) {
        if (n == cap) {
            uint8_t *bigger = xmalloc(cap * 2, "IDX data");
            memcpy(bigger, buf, n);
            free(buf);
            buf = bigger;
            cap *= 2;
        }
        int got = gzread(g, buf + n, (unsigned)(cap - n));
        if (got < 0) {
            snprintf(err, errlen, "%s: corrupt gzip data", path);
            free(buf);
            gzclose(g);
            return NULL;
        }
        if (got == 0) break;
        n += got;
    }
    gzclose(g);
    *len = n;
    return buf;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

// 0, or -1 with the message in err (d's arrays may be partly filled: the caller frees them).
static int parse(IdxImages *d, const uint8_t *im, size_t ilen, const uint8_t *lb, size_t llen, const char *ip,
                 const char *lp, char *err, size_t errlen) {
    if (ilen < 16 || be32(im) != 0x803)
        return snprintf(err, errlen, "%s: not an IDX3 image file (magic %08x)", ip, ilen >= 4 ? be32(im) : 0), -1;
    if (llen < 8 || be32(lb) != 0x801) return snprintf(err, errlen, "%s: not an IDX1 label file", lp), -1;
    uint32_t rows = be32(im + 8), cols = be32(im + 12);
    if (rows < 1 || rows > 4096 || cols < 1 || cols > 4096)
        return snprintf(err, errlen, "%s: image size %u x %u outside 1..4096", ip, rows, cols), -1;
    d->n = be32(im + 4);
    d->rows = (int)rows;
    d->cols = (int)cols;
    if (be32(lb + 4) != d->n)
        return snprintf(err, errlen, "%s has %u labels for %lld images in %s", lp, be32(lb + 4), (long long)d->n, ip), -1;
    if (ilen < 16 + (size_t)d->n * d->rows * d->cols || llen < 8 + (size_t)d->n)
        return snprintf(err, errlen, "%s or %s is truncated", ip, lp), -1;
    d->pixels = xmalloc((size_t)d->n * d->rows * d->cols, "images");
    memcpy(d->pixels, im + 16, (size_t)d->n * d->rows * d->cols);
    d->labels = xmalloc(sizeof(int32_t) * d->n, "labels");
    for (int64_t i = 0; i < d->n; i++) {
        d->labels[i] = lb[8 + i];
        if (d->labels[i] > 9)
            return snprintf(err, errlen, "%s: label %d of image %lld is not a Fashion-MNIST class (0..9)", lp, d->labels[i],
                            (long long)i), -1;
    }
    return 0;
}

void idx_read_fashion_mnist(IdxImages *d, const char *ip, const char *lp) {
    memset(d, 0, sizeof *d);
    char err[8192 + 256];
    size_t ilen, llen;
    uint8_t *im = gunzip_file(ip, &ilen, err, sizeof err), *lb = im ? gunzip_file(lp, &llen, err, sizeof err) : NULL;
    int rc = im && lb ? parse(d, im, ilen, lb, llen, ip, lp, err, sizeof err) : -1;
    free(im);
    free(lb);
    if (rc != 0) {
        idx_images_free(d);
        fatal("%s", err);
    }
}

void idx_images_free(IdxImages *d) {
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}
