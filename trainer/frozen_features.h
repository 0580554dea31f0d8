// frozen_features.h: frozen features of images from an encoder, as eval and the live
// kNN of pretraining take them: the CLS token and/or the mean of the patch
// tokens, after the final norm, of the last block or of the last n blocks
// concatenated (each block's tokens through the final norm, DINO's n = 4).
#pragma once
#include "vit.h"

typedef enum { FEAT_CLS, FEAT_MEAN, FEAT_BOTH } FeatureKind;

typedef struct {
    FeatureKind kind;
    int block;      // -1: the final tokens (n_blocks 1) or the last block (n_blocks > 1); else blocks.<block>
    int n_blocks;   // >= 1: the blocks ending at `block`, concatenated
} FeatureSpec;

typedef struct {
    float *normed, *mean, *rstd;   // n_blocks > 1: one block's tokens through the final norm
} FeatureScratch;

const char *feature_kind_name(FeatureKind kind);   // "cls", "mean", "both"
int features_dim(const Vit *vit, const FeatureSpec *f);
void features_scratch_alloc(FeatureScratch *s, const Vit *vit, int max_images, const FeatureSpec *f);
void features_scratch_free(FeatureScratch *s);
// images [n,C,H,W] (n <= the encoder's max_batch) through the encoder, unmasked; out: n rows
// of `stride` floats, the first features_dim of each written.
void features_forward(Vit *vit, const float *images, int n, const FeatureSpec *f, FeatureScratch *s, float *out,
                      size_t stride);
