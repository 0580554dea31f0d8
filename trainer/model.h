// model.h: the one place a model is put together. model_build registers the
// encoder's and the objective's tensors in one table, allocates it, binds and
// initialises every part, sizes the activations and sets up the optimiser, in
// the order every program relies on (the table's order is the checkpoint's).
//
//   pretraining:  encoder (+ mask token) + the objective's heads (token, pixel,
//                 projector, EMA teacher), as the loss weights ask
//   classify:     encoder + classification head (fine-tuning: the objective's
//                 classification mode)
//   encoder only: neither (eval, export); max_batch 0 allocates no activations
#pragma once
#include <stdint.h>

#include "objective.h"
#include "optim.h"
#include "params.h"
#include "tokenizer.h"
#include "vit.h"

typedef enum { MODEL_ENCODER = 0, MODEL_PRETRAIN = 1, MODEL_CLASSIFY = 2 } ModelKind;

typedef struct {
    ModelKind kind;
    VitConfig vit;               // num_classes > 0 with MODEL_CLASSIFY
    ObjectiveConfig objective;   // MODEL_PRETRAIN (its seed also draws the classifier's drop path)
    int max_batch;               // samples per micro-batch the activations hold; 0: no activations
    uint64_t seed;               // weight initialisation
    int freeze_patch_embed;
    float drop_path, label_smoothing;  // MODEL_CLASSIFY
    double layer_decay;                // MODEL_CLASSIFY; 1 (or 0): none
    float mixup, cutmix;               // MODEL_CLASSIFY: Beta alphas of mixup and cutmix (mixing.h); 0: off
    float reprob;                      // MODEL_CLASSIFY: random erasing's probability (erasing.h); 0: off
    int optimizer;                     // 1: AdamW state for every trained tensor
    float beta1, beta2, eps, weight_decay;
} ModelSpec;

typedef struct {
    ModelSpec spec;
    ParamTable params;
    Vit vit;
    Objective obj;   // the heads (pretraining) or the classifier mode; unused for MODEL_ENCODER
    AdamW opt;       // when spec.optimizer
    int views;       // images per sample through the encoder
} Model;

// tok: the centroids (pretraining with a token loss or replacement), else NULL.
void model_build(Model *m, const ModelSpec *spec, Tokenizer *tok);
void model_free(Model *m);

// For tests and benchmarks: a standalone encoder (MODEL_ENCODER, no optimiser) with its own
// table, and its release.
Vit *vit_create(const VitConfig *cfg, int max_batch, uint64_t seed);
void vit_destroy(Vit *vit);
