// tar_reader.h: sequential reader of tar archives (ustar, PAX x/g, GNU long
// names), plain or gzip-compressed (.tar.gz / .tgz, found by the gzip magic
// bytes, inflated by zlib as it is read). Only regular files come out;
// everything else is skipped.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <zlib.h>

typedef struct {
    FILE *f;              // a plain tar, or
    gzFile gz;            // a gzip stream (data_offset then counts inflated bytes)
    const char *path;
    char *name;           // current entry's full path (owned)
    size_t name_cap;
    int64_t size;         // current entry's data size
    int64_t data_offset;  // file offset of the current entry's data
    int64_t data_left;    // bytes of the current entry not yet consumed
    int64_t pad_left;     // padding to the next 512-byte boundary
    char *global_path;    // a PAX 'g' path, kept but not used for entry names
} TarReader;

// Open path for reading; returns 0, or -1 with errno set (reader untouched).
int tar_open(TarReader *t, const char *path);
void tar_close(TarReader *t);

// Advance to the next regular file. Returns 1 (t->name, t->size set), 0 at a
// clean end of archive (zero blocks or EOF on a block boundary), -1 when the
// archive is truncated or a header is corrupt, -2 when the file is not a tar
// archive at all (*why says which).
int tar_next(TarReader *t, const char **why);

// Why a read came up short: `plain`, or that the gzip stream ended early or is corrupt.
const char *tar_cut_short(TarReader *t, const char *plain);

// Read the current entry's data into buf (size t->size). Returns 0, or -1 if
// the file ends first (truncated).
int tar_read_data(TarReader *t, void *buf);
