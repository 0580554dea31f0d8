// fuzz_tar: data_loaders/tar_reader.c (ustar, PAX x/g, GNU L, truncation, gzip)
// through tar_open / tar_next / tar_read_data, as webdataset.c calls them.
//
// Input: byte 0 is a mode, the rest the archive. Mode bit 0: gzip the rest
// before writing it (so mutations of the tar reach the .tar.gz path too);
// bits 1..7 (times 3): cut that many bytes off the gzip stream's end.
#include "fuzz_common.h"

#include <zlib.h>
#include "tar_reader.h"

// gzip (windowBits 31) of src; malloc'd, *n its length.
static uint8_t *gzip_bytes(const uint8_t *src, size_t len, size_t *n) {
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    size_t cap = deflateBound(&z, len) + 32;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
    *n = z.total_out;
    deflateEnd(&z);
    return out;
}

static void walk(const char *path) {
    TarReader t;
    if (tar_open(&t, path) != 0) return;
    const char *why = "";
    int st, entries = 0;
    while ((st = tar_next(&t, &why)) == 1 && entries++ < 100000) {
        if (!t.name || t.size < 0 || t.data_offset < 0 || t.data_left != t.size) abort();
        // webdataset.c reads entries up to 1 GiB; read the small ones, skip every third
        if (t.size <= (1 << 20) && entries % 3 != 0) {
            uint8_t *buf = malloc((size_t)t.size + 1);
            if (tar_read_data(&t, buf) != 0) (void)tar_cut_short(&t, "cut short");
            free(buf);
        }
    }
    if (st < 0 && (!why || !why[0])) abort();  // an error always says why
    tar_close(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (mode & 1) {
        size_t gn;
        uint8_t *gz = gzip_bytes(body, n, &gn);
        size_t cut = (size_t)(mode >> 1) * 3;
        walk(fuzz_path(0, gz, cut < gn ? gn - cut : 0));
        free(gz);
    } else {
        walk(fuzz_path(0, body, n));
    }
    return 0;
}
