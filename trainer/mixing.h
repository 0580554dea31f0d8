// mixing.h: mixup and cutmix for fine-tuning (timm's Mixup, per pair of images).
//
// Images are paired (0,1), (2,3), ...: a rank's slice of the global batch (an even
// number of images) then holds whole pairs, so R ranks mix as one process does. Each
// pair draws from (seed, step, its first global image): cutmix or mixup (with both
// on, cutmix with probability 1/2), and lambda ~ Beta(alpha, alpha).
//   mixup:  a' = lambda a + (1 - lambda) b,  b' = lambda b + (1 - lambda) a
//   cutmix: a box of side sqrt(1 - lambda) of the image (centre uniform, clipped to the
//           image) is swapped between a and b; lambda becomes 1 - box area / image area
// Targets: t_a = lambda q(y_a) + (1 - lambda) q(y_b), and t_b likewise, q the one-hot
// smoothed by eps (q = (1 - eps) onehot + eps / K). An unpaired last image is kept.
#pragma once
#include <stdint.h>

#include "common.h"

typedef struct {
    float mixup_alpha, cutmix_alpha;  // Beta(alpha, alpha) for lambda; 0: that kind off
    float smoothing;                  // label smoothing of the targets
    int num_classes;
    uint64_t seed;
} MixConfig;

int mix_enabled(const MixConfig *m);
// images, out [B,C,H,W]; labels [B]; targets [B,K]. lam [B] and box [B,4] (y0, y1, x0, x1;
// all 0 for mixup), if non-NULL, receive each image's draws (for tests).
void mix_batch(float *out, float *targets, float *lam, int32_t *box, const float *images, const int32_t *labels, int B,
               int C, int H, int W, const MixConfig *m, int64_t step, int64_t first_image);
// Beta(a, a) from r (Marsaglia-Tsang gamma draws); exposed for tests.
double rng_beta_symmetric(Rng *r, double a);
