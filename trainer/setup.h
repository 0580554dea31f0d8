// setup.h: turns the trainer's Config into the settings of each part (model,
// data loader). The parts themselves never see the Config.
#pragma once
#include "config.h"
#include "loader.h"
#include "model.h"
#include "objective.h"
#include "vit.h"

// The encoder described by cfg; mask token and classification head as asked.
VitConfig vit_config_from(const Config *cfg, int use_mask_token, int num_classes);
// A loader over `source` (cfg->data_train or cfg->data_val) in the given mode.
// Train mode takes the augmentation keys; two_views adds the contrastive view.
LoaderConfig loader_config_from(const Config *cfg, const char *source, LoaderMode mode, int two_views);
// Stops with an error naming the split when any sample of its loader lacks a label: fine-tuning and
// evaluation need labels (loader_unlabeled_samples). split: "data_val", "--train", ...
void require_labelled(const Loader *l, const char *split, const char *source, const char *who);
// The objective's settings; mean/std are the loader's normalisation (lc).
ObjectiveConfig objective_config_from(const Config *cfg, const LoaderConfig *lc);
// The model a training run of this config builds (kind: MODEL_PRETRAIN or MODEL_CLASSIFY for
// fine-tuning, MODEL_ENCODER for eval), with activations for max_batch samples and AdamW.
ModelSpec model_spec_from(const Config *cfg, const LoaderConfig *lc, ModelKind kind, int max_batch);
