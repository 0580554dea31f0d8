// sample_transform.h: one encoded image -> its views (normalised and clean
// float CHW). Pure function of (config, bytes, rng): what makes the loader
// deterministic whatever thread runs it.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "augment.h"
#include "image_decode.h"
#include "loader.h"
#include "resample.h"

// Per-thread buffers, reused from sample to sample.
typedef struct {
    DecodedImage img;
    ResampleScratch rs;
    uint8_t *crop;        // S*S*C
    float *hwc, *tmp;     // S*S*C each, colour ops
    float norm_lut[3][256], clean_lut[256];
    int luts_ready;
} TransformScratch;

// The checks of an image's bytes before any pixel is decoded, as transform_sample makes them: the
// format against its extension (ext IMG_UNKNOWN: any), the header, the pixel limit. Returns -1 with
// *W, *H set, or the SkipReason with a message in detail.
int sample_check_header(const uint8_t *data, size_t len, ImageFormat ext, int64_t max_pixels, int *W, int *H,
                        char *detail, size_t detail_len);

// Decode and augment. Train: draws every view's parameters from rng (view 1
// then view 2); eval: resize + centre crop. out_norm[v] / out_clean[v] receive
// C*S*S floats for view v < nviews. Returns -1, or the SkipReason with a
// message in detail.
int transform_sample(const LoaderConfig *cfg, const uint8_t *data, size_t len, ImageFormat ext, Rng *rng, int nviews,
                     float *out_norm[2], float *out_clean[2], TransformScratch *ts, char *detail, size_t detail_len);
void transform_scratch_free(TransformScratch *ts);
