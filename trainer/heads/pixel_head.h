// pixel_head.h: CCViT's pixel head. Its input is the encoder's CLS from the last
// block and its patch tokens from block depth-3; two transformer blocks, then at
// the scored positions LayerNorm and Linear(D -> P*P*C). The loss is the MSE
// against each clean patch normalised by its own mean and variance.
#pragma once
#include <stdint.h>

#include "common.h"
#include "params.h"
#include "vit.h"

typedef struct {
    int D, patch_dim, depth, mid_block;   // mid_block = depth - 3: where the patch tokens come from
    BlockDims dims;
    int block_first[2], norm_first, proj_first;  // indices in the table
    BlockWeights w[2], g[2];
    float *norm_w, *norm_b, *proj_w, *proj_b;
    float *gnorm_w, *gnorm_b, *gproj_w, *gproj_b;
    float *x;                          // [B,T,D] input
    BlockActs blocks[2];
    float *sel, *norm, *mean, *rstd, *pred;  // [M,D] [M,D] [M] [M] [M,d]
    float *d_x, *d_sel, *d_norm, *d_pred;    // [B,T,D] [M,D] [M,D] [M,d]
    float *d_last, *d_mid;             // [V*B,T,D] into the encoder's last and mid blocks
} PixelHead;

void pixel_head_register(PixelHead *h, ParamTable *t, const Vit *vit);
void pixel_head_bind(PixelHead *h, const ParamTable *t);
void pixel_head_init(PixelHead *h, const ParamTable *t, uint64_t seed, float layer_scale_init);
// B images of T tokens, up to M scored rows; the encoder runs V*B images.
void pixel_head_layout(PixelHead *h, Arena *acts, Arena *grads, int B, int T, long M, int V);
// rows: the scored patches its second block keeps (CLS is not read). Returns the MSE
// of pred against target [M,d].
double pixel_head_forward(PixelHead *h, Vit *vit, const RowSet *rows, const int32_t *scored, const float *target,
                          int M, int B);
// Fills d_last / d_mid and points dblock[depth-1], dblock[mid_block] at them.
void pixel_head_backward(PixelHead *h, Vit *vit, const RowSet *rows, const int32_t *scored, const float *target, int M,
                         int B, int V, float dloss, float **dblock);
// Its two blocks (the second on S kept rows per image) and the projection of B*S rows.
double pixel_head_forward_flops(const PixelHead *h, double B, double T, double S);
