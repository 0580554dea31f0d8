// erasing.c: random erasing (erasing.h).
#include "erasing.h"

#include <math.h>
#include <string.h>

#include "common.h"

#define ERASE_STREAM_SALT 0x6572617365000000ULL  // "erase": its own draws

// timm's attempts: returns 1 with the box set, 0 when no attempt fits.
static int draw_erase_box(int32_t *box, Rng *r, int H, int W) {
    const double area = (double)H * W, log_lo = log(0.3), log_hi = log(1 / 0.3);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = rng_uniform_range(r, 0.02, 1.0 / 3.0) * area;
        double aspect = exp(rng_uniform_range(r, log_lo, log_hi));
        int h = (int)lround(sqrt(target * aspect)), w = (int)lround(sqrt(target / aspect));
        if (w < W && h < H) {
            int top = (int)rng_below(r, (uint32_t)(H - h + 1)), left = (int)rng_below(r, (uint32_t)(W - w + 1));
            box[0] = top, box[1] = top + h, box[2] = left, box[3] = left + w;
            return 1;
        }
    }
    return 0;
}

void erase_batch(float *images, int32_t *box, int B, int C, int H, int W, float prob, uint64_t seed, int64_t step,
                 int64_t first_image) {
    if (box) memset(box, 0, sizeof(int32_t) * 4 * (size_t)B);
    for (int i = 0; i < B; i++) {
        Rng r;
        rng_seed_image(&r, seed ^ ERASE_STREAM_SALT, step, first_image + i);
        int32_t bx[4] = {0, 0, 0, 0};
        if (rng_uniform(&r) >= prob || !draw_erase_box(bx, &r, H, W)) continue;
        float *img = images + (long)i * C * H * W;
        for (int c = 0; c < C; c++)
            for (int y = bx[0]; y < bx[1]; y++)
                for (int x = bx[2]; x < bx[3]; x++) img[((long)c * H + y) * W + x] = (float)rng_normal(&r);
        if (box) memcpy(box + 4L * i, bx, sizeof bx);
    }
}
