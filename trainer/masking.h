// masking.h: CCViT's input corruption. Blockwise masking is BEiT's generator
// (blocks of area in [min_block, remaining], aspect log-uniform in [0.3, 1/0.3],
// 10 attempts per block, accepted when they add patches without overshooting),
// followed by CCViT's fix to the exact count. Centroid replacement then picks a
// fixed number of the *unmasked* patches at random.
#pragma once
#include <stdint.h>

#include "common.h"

// mask [gh*gw]: 1 where masked. Exactly num_masked patches are set.
void block_mask_generate(uint8_t *mask, int gh, int gw, int num_masked, int min_block, Rng *r);
// replaced [gh*gw]: 1 at num_replaced positions chosen among mask == 0.
void replacement_generate(uint8_t *replaced, const uint8_t *mask, int n, int num_replaced, Rng *r);
