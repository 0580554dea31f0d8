// resample.h: PIL's separable resampling (ImagingResample): bilinear or
// bicubic (a = -0.5), antialiased when downscaling (the filter widens by the
// scale), 22-bit fixed-point weights, horizontal pass first, uint8 between
// passes. Given the same box it reproduces PIL's Image.resize bit for bit.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "loader.h"

typedef struct {
    int *bounds;       // [out][2]: first input index, count
    int32_t *weights;  // [out][ksize]
    int ksize, cap_out, cap_k;
    uint8_t *tmp;      // horizontal-pass result
    size_t tmp_cap;
    int *bounds_v;
    int32_t *weights_v;
    int ksize_v, cap_out_v, cap_k_v;
} ResampleScratch;

// Input pixels that output pixels [o0, o1) of an axis read, for box
// [in0, in1) of an axis of in_size resized to out_size: [*lo, *hi).
void resample_input_range(int in_size, double in0, double in1, int out_size, int o0, int o1, Interpolation f,
                          int *lo, int *hi);

// Resize box (bx0,by0)-(bx1,by1) of src (w x h x ch, rows `stride` bytes apart) to a
// full output of out_w x out_h and write its window [ox, ox+dw) x [oy, oy+dh)
// to dst (dw*ch bytes per row). src may be a region of a larger image: pass
// the region and a box in region coordinates; the caller keeps enough margin.
void resample_u8(const uint8_t *src, int w, int h, int ch, size_t stride, double bx0, double by0, double bx1, double by1, int out_w,
                 int out_h, int ox, int oy, int dw, int dh, Interpolation f, uint8_t *dst, ResampleScratch *s);
void resample_scratch_free(ResampleScratch *s);
