// webdataset.h: group tar entries into samples by key, and the shard manifest
// that tools/programs/make_shards writes.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "image_decode.h"
#include "tar_reader.h"

// One sample: entries sharing a key (path up to the first dot of the last
// component) in consecutive order. skip >= 0 is a SkipReason.
typedef struct {
    char *key;             // owned
    uint8_t *image;        // owned; NULL if the sample has none, or when lazy
    size_t image_len;
    int has_image;
    int64_t image_offset;  // where the image's bytes sit in the shard
    ImageFormat image_ext; // what the extension promises
    int32_t label;         // -1 without .cls
    int has_label;
    int skip;              // -1 or SkipReason
    char detail[96];
} WdsSample;

typedef struct {
    TarReader tar;
    int state;             // 0 open, 1 entry pending (name read, data not), 2 done
    int count_only;        // group by key without reading data (wds_count_samples)
    int lazy_images;       // record image offsets instead of reading images (may change between calls)
} WdsReader;

int wds_open(WdsReader *r, const char *path);   // 0, or -1 (errno) if unreadable
void wds_close(WdsReader *r);
// Next sample (1) or end of shard (0). A truncated tar ends the shard with a
// final sample whose skip is SKIP_TRUNCATED_TAR.
int wds_next(WdsReader *r, WdsSample *s);
void wds_sample_clear(WdsSample *s);
// Samples wds_next would return, from the headers alone (data is seeked
// over); -1 if unreadable.
int64_t wds_count_samples(const char *path);
// The same, and *labelled (if not NULL) gets how many of them have a .cls entry.
int64_t wds_count_labelled(const char *path, int64_t *labelled);

// Manifest, a small text file:
//   ccvit-manifest 1 / samples N / classes K / class <name> (K lines) /
//   shard <file name> <samples> (one per shard)
typedef struct {
    int64_t samples;
    int num_classes;
    char **class_names;
    int num_shards;
    char **shard_names;    // base names
    int64_t *shard_samples;
} Manifest;

int manifest_read(const char *path, Manifest *m);  // 0, or -1 if missing; fatal on a malformed line (names it)
void manifest_write(const char *path, const Manifest *m);  // fatal on failure
void manifest_free(Manifest *m);
// Samples of the shard whose base name matches, or -1.
int64_t manifest_shard_samples(const Manifest *m, const char *shard_path);
