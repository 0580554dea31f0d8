// objective.h: the CCViT pretraining objective, with an optional contrastive
// term, on top of the ViT encoder.
//
//   view1 --(blockwise mask + centroid replacement)--> encoder --+--> final norm --> token head (D->K): CE vs clean ids
//                                                                 +--> [CLS of last block | patches of block depth-3]
//                                                                 |      --> 2 blocks --> LN --> Linear(D->P*P*C): MSE vs per-patch normalised clean pixels
//   view2 (clean) --------------------------------> encoder --> final norm CLS --+--> projector (D->hidden->out, GELU), L2 --> NT-Xent
//   view1's final norm CLS ------------------------------------------------------+
//
// Both views run through the encoder as one batch of 2B. The token and pixel
// losses are taken over masked U replaced positions. A loss weight of 0 removes
// its head, its parameters and its compute (w_contrast 0: no second view).
//
// Multi-crop (local_crops L > 0, DINO's local views): L windows of local_crop_size
// pixels, on the patch grid, cut from the views (NT-Xent: alternately from view2 and
// view1; with the teacher: from view1), run through the same encoder at their size
// (vit_share: the window's rows of pos_embed) and the projector. Each is one more
// anchor of the contrastive term, whose positive is the other view's projection (the
// teacher's key) of its image; the term is the mean over all anchors.
//
// With teacher_momentum > 0 (MoCo v3 / MSN style) view2 goes instead through a
// frozen copy of the encoder and projector ("pretrain.teacher.*", an EMA of the
// student updated after each step, objective_teacher_update), forward only, and
// the contrastive term is InfoNCE of view1's projection (query) against the B
// teacher keys: the student encoder runs on view1 alone.
#pragma once
#include <stdint.h>

#include "heads/contrastive_head.h"
#include "heads/ema_teacher.h"
#include "heads/pixel_head.h"
#include "heads/token_head.h"
#include "mixing.h"
#include "params.h"
#include "tokenizer.h"
#include "vit.h"

typedef struct {
    float mask_ratio;          // share of patches masked (blockwise), exact count
    int min_mask_patches;      // smallest block
    float replace_ratio;       // share of all patches replaced by their centroid's pixels
    float w_token, w_pixel, w_contrast;
    float temperature;         // NT-Xent
    int negatives_global;      // 1: every rank's embeddings are negatives (all-gathered); 0: this rank's
    int proj_hidden, proj_dim;
    int mask_both_views;       // corrupt view2 as well (its own mask)
    float mean[3], std[3];     // the loader's normalisation, to normalise centroid pixels
    uint64_t seed;             // masking draws come from (seed, step, image)
    float teacher_momentum;    // > 0: view2 through the EMA teacher (see above); 0: NT-Xent over both views
    int local_crops;           // multi-crop: local views per image (0: none), contrastive anchors only
    int local_crop_size;       // their side in pixels: a window of whole patches of a view
} ObjectiveConfig;

typedef struct {
    double token, pixel, contrast, total;  // unweighted terms and the weighted total
    int scored;                            // positions in the token / pixel losses
} ObjectiveLosses;

typedef struct {
    ObjectiveConfig cfg;
    Vit *vit;
    Tokenizer *tok;
    ParamTable *params;
    int K, patch_dim, n_mask, n_replace, views, depth;
    int use_token, use_pixel, use_contrast, use_teacher, corrupt;
    int max_batch;

    // the heads, each with its weights, gradients and activations (in the arenas below)
    TokenHead token;
    PixelHead pixel;
    ContrastiveHead contrast;
    EmaTeacher *teacher;       // NULL without teacher_momentum
    Vit *local;                // multi-crop: the encoder at local_crop_size (vit_share); NULL without
    int n_local;               // local views per image

    Arena acts, grads;
    // inputs and targets
    float *images;             // [V*B,C,H,W] encoder input (view1 corrupted, view2)
    float *clean_patches;      // [B,N,d] view1's clean crop, [0,1]
    int32_t *ids;              // [B,N] clean patch -> centroid id (-1 where not scored: only those are tokenised)
    uint8_t *mask;             // [V*B,N] mask-token positions
    uint8_t *replaced;         // [B,N] centroid-replaced positions
    int32_t *scored;           // [B*N] flat b*N+n of masked U replaced (view1), ascending
    int32_t *scored_ids;       // [B*N] their centroid ids
    float *pix_target;         // [B*N,d] their per-patch normalised clean pixels
    // Rows the losses read (dead work skipped): the encoder's last block keeps
    // CLS (+ view1's scored patches for the token head); the pixel head's second
    // block keeps the scored patches.
    int *enc_row_start, *ph_row_start;        // [V*B+1], [B+1]
    int32_t *enc_row_index, *ph_row_index;    // [V*B*T], [B*T]
    RowSet enc_rows, ph_rows;
    float *d_final;            // [V*B,T,D] into the encoder
    // multi-crop, local view i = k*B + b (crop k of image b)
    float *local_images;       // [L*B,C,S,S]
    int32_t *local_pos_rows;   // [L*B,Nl] each token's row of pos_embed
    int *local_pos_col;        // [L*B] its positive column in the contrastive head
    int *local_row_start;      // [L*B+1] the last block keeps CLS alone
    int32_t *local_row_index;  // [L*B]
    RowSet local_rows;
    float *d_local_final;      // [L*B,Tl,D]

    int classify;              // fine-tuning: the encoder's classification head on labelled images
    MixConfig mix;             // classify: mixup / cutmix (off unless an alpha is set)
    float *mixed, *mix_targets;  // classify with mixing: [B,C,H,W] the encoder's input, [B,K] its targets
    float reprob;              // classify: random erasing's probability (erasing.h)
    float *erased;             // classify with erasing: [B,C,H,W] the erased images
    const int32_t *labels;     // classify: the last forward's labels
    void *owner;               // objective_create's Model

    // This rank's first image in the global batch: masks and drop path are drawn per
    // (step, global image), so R ranks draw what one process holding the batch would.
    int64_t first_image;

    ObjectiveLosses last;
    int last_batch;
    float w_contrast_step;     // the contrastive weight of the last forward (phase-in)
} Objective;

// Register the heads' tensors ("pretrain.*") in the table the encoder uses.
void objective_register(Objective *o, Vit *vit, Tokenizer *tok, const ObjectiveConfig *cfg);
// The classification mode (fine-tuning): the encoder's head (vit num_classes > 0),
// with drop path drawn from (seed, stream). Registers nothing of its own.
void objective_register_classifier(Objective *o, Vit *vit, uint64_t seed);
void objective_bind(Objective *o);                    // after params_allocate
void objective_init_weights(Objective *o, uint64_t seed);
void objective_allocate(Objective *o, int max_batch);  // arenas; the Vit needs views*max_batch
int objective_views(const ObjectiveConfig *cfg);       // images per sample through the student encoder: 2 with
                                                       // NT-Xent, else 1 (the teacher takes view2)
int objective_loader_views(const ObjectiveConfig *cfg);  // views the loader makes: 2 with any contrastive term
// After each optimiser step: teacher = momentum * teacher + (1 - momentum) * student
// (momentum 0 copies the student). No-op without a teacher.
void objective_teacher_update(Objective *o, float momentum);

// Forward and loss for one batch: view1 [B,C,H,W] normalised, clean1 [B,C,H,W]
// in [0,1], view2 [B,C,H,W] (contrastive only). step picks the masking draws.
// w_contrast_now overrides cfg.w_contrast for this step (phase-in); < 0 keeps it.
ObjectiveLosses objective_forward(Objective *o, const float *view1, const float *clean1, const float *view2,
                                  int B, int64_t step, float w_contrast_now);
// Classification mode: images [B,C,H,W] normalised, labels [B] in [0, num_classes);
// stream picks the drop-path and mixing draws. With mixup / cutmix the loss is against the
// mixed targets (mixing.h). The loss is reported as .token and .total.
ObjectiveLosses objective_classify_forward(Objective *o, const float *images, const int32_t *labels, int B,
                                           int64_t stream);
// Backward of the last forward (either mode); parameter gradients accumulate (scaled by dloss).
void objective_backward(Objective *o, float dloss);
// The objective's own memory (arenas, teacher), not the encoder nor the table.
void objective_release(Objective *o);

// Forward FLOPs of one step's encoder passes and heads, for MFU figures
// (model FLOPs: a training step counts 3x these, plus the teacher's forward).
double objective_forward_flops(const Objective *o, int B);
// The EMA teacher's forward (encoder on view2, CLS only in its last block, and
// projector); 0 without a teacher. It has no backward.
double objective_teacher_flops(const Objective *o, int B);
// The FLOPs one training step executes: forward and backward (the patch
// embedding has no input gradient, nor a weight gradient when frozen) plus
// the tokenizer's nearest-centroid product over the scored patches.
double objective_step_flops(const Objective *o, int B);

// The last forward's CLS rows after the final norm, [rows, D] into dst: the student's
// views, then (EMA teacher) the teacher's view2. Returns the rows; the collapse probe
// reads them. objective_cls_rows_max: the most it writes.
int objective_cls_rows(const Objective *o, float *dst);
int objective_cls_rows_max(const Objective *o);
// The table's floats that are trained, from its start: all but the EMA teacher's
// tail (frozen), whose gradients stay zero and need no reduction across ranks.
size_t objective_trained_floats(const Objective *o);

// For tests: a standalone objective with its own table.
Objective *objective_create(const VitConfig *vcfg, const ObjectiveConfig *ocfg, Tokenizer *tok, int max_batch,
                            uint64_t seed);
void objective_destroy(Objective *o);
ParamTable *objective_params(Objective *o);
Vit *objective_vit(Objective *o);
uint8_t *objective_mask(Objective *o);       // [V*B,N] of the last forward
uint8_t *objective_replaced(Objective *o);   // [B,N]
int32_t *objective_ids(Objective *o);        // [B,N], -1 at positions that are not scored
float *objective_images(Objective *o);       // [V*B,C,H,W] the encoder's input
float *objective_local_images(Objective *o); // [L*B,C,S,S] multi-crop's local views of the last forward
int32_t *objective_local_pos_rows(Objective *o);  // [L*B,Nl] their pos_embed rows
