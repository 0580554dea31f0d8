// masking.c: blockwise masking and centroid-replacement selection.
#include "masking.h"

#include <math.h>
#include <string.h>

// One block placement (BEiT's _mask): up to 10 attempts; returns patches added.
static int place_block(uint8_t *mask, int gh, int gw, int max_patches, int min_block, Rng *r) {
    const double log_lo = log(0.3), log_hi = log(1.0 / 0.3);
    int added = 0;
    for (int attempt = 0; attempt < 10; attempt++) {
        double area = rng_uniform_range(r, min_block, max_patches);
        double aspect = exp(rng_uniform_range(r, log_lo, log_hi));
        int h = (int)lround(sqrt(area * aspect)), w = (int)lround(sqrt(area / aspect));
        if (w < gw && h < gh) {
            int top = (int)rng_below(r, gh - h + 1), left = (int)rng_below(r, gw - w + 1);
            int already = 0;
            for (int y = top; y < top + h; y++)
                for (int x = left; x < left + w; x++) already += mask[y * gw + x];
            int fresh = h * w - already;
            if (fresh > 0 && fresh <= max_patches)
                for (int y = top; y < top + h; y++)
                    for (int x = left; x < left + w; x++)
                        if (!mask[y * gw + x]) {
                            mask[y * gw + x] = 1;
                            added++;
                        }
        }
        if (added > 0) break;
    }
    return added;
}

// Flip exactly `count` randomly chosen positions whose value is `from`.
static void flip_random(uint8_t *mask, int n, uint8_t from, int count, Rng *r) {
    // Partial Fisher-Yates over the candidate positions; n is a patch grid
    // (at most a few thousand), so a local array is fine.
    int idx[n];  // NOLINT(clang-analyzer-core.VLASize): n is the patch count of a grid, >= 1
    int m = 0;
    for (int i = 0; i < n; i++)
        if (mask[i] == from) idx[m++] = i;
    for (int k = 0; k < count && k < m; k++) {
        int j = k + (int)rng_below(r, (uint32_t)(m - k));
        int t = idx[k];
        idx[k] = idx[j];
        idx[j] = t;
        mask[idx[k]] = !from;
    }
}

void block_mask_generate(uint8_t *mask, int gh, int gw, int num_masked, int min_block, Rng *r) {
    int n = gh * gw;
    memset(mask, 0, (size_t)n);
    int count = 0;
    while (count < num_masked) {
        int added = place_block(mask, gh, gw, num_masked - count, min_block, r);
        if (added == 0) break;
        count += added;
    }
    // CCViT keeps the number of masked patches fixed: top up or trim at random.
    if (count < num_masked) flip_random(mask, n, 0, num_masked - count, r);
    if (count > num_masked) flip_random(mask, n, 1, count - num_masked, r);
}

void replacement_generate(uint8_t *replaced, const uint8_t *mask, int n, int num_replaced, Rng *r) {
    // Candidates are the unmasked positions; mark them 0 in a scratch copy of
    // the mask's complement, then flip num_replaced of them to 1.
    for (int i = 0; i < n; i++) replaced[i] = mask[i] ? 2 : 0;  // 2: not a candidate
    flip_random(replaced, n, 0, num_replaced, r);
    for (int i = 0; i < n; i++) replaced[i] = replaced[i] == 1;
}
