// tokenizer_sample.h: patches for building the tokenizer, drawn through the
// data loader (eval mode: shorter side resized, centre crop, clean [0,1] pixels).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "loader.h"

typedef struct {
    int patch;                 // patch size P; d = channels * P * P
    int images_per_class;      // at most this many images of each label (0: no cap)
    int64_t max_samples;       // keep a seeded uniform subset of this many patches (0: all)
    uint64_t seed;
} PatchSampleOptions;

// `source` supplies the source (shards or image_folder), image_size, channels,
// num_threads and eval_resize (0 -> image_size: resize to the training
// resolution, then centre crop); everything else is set here. Returns
// patches [*n, d] in (c, y, x) order, xmalloc'd; *images counts the images used.
float *tokenizer_sample_patches(const LoaderConfig *source, const PatchSampleOptions *o, size_t *n, int64_t *images);
