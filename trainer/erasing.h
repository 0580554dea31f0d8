// erasing.h: random erasing for fine-tuning (timm's RandomErasing, mode 'pixel', one box).
//
// Each image, with probability prob, has one box replaced by N(0, 1) noise per value (the
// images are normalised, so the noise has the data's scale). The box: up to 10 attempts
// of area uniform in [0.02, 1/3] of the image and aspect exp(uniform(log 0.3, log 1/0.3)),
// sides rounded; the first that fits strictly inside the image is placed uniformly.
// Draws come from (seed, step, the image's global index), so R ranks holding slices of
// the global batch erase as one process does. Applied before mixup / cutmix, as in timm.
#pragma once
#include <stdint.h>

// images [B,C,H,W], in place. box [B,4] (y0, y1, x0, x1; all 0 when not erased), if
// non-NULL, receives each image's box (for tests).
void erase_batch(float *images, int32_t *box, int B, int C, int H, int W, float prob, uint64_t seed, int64_t step,
                 int64_t first_image);
