// tar_writer.h: minimal ustar writer for shards (names up to 100 bytes, or
// 255 with the ustar prefix field).
#pragma once
#include <stddef.h>
#include <stdio.h>

// The archive is written to "<path>.tmp.<pid>" and renamed to path by tar_writer_close, so an
// interrupted writer never leaves a truncated shard under the final name.
typedef struct { FILE *f; const char *path; char *tmp; } TarWriter;

void tar_writer_open(TarWriter *w, const char *path);   // fatal on failure
void tar_writer_add(TarWriter *w, const char *name, const void *data, size_t len);
void tar_writer_close(TarWriter *w);                    // the two zero blocks, fsync, rename
void tar_header_seal(unsigned char h[512]);            // fill a 512-byte header's checksum field
