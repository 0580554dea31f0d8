// params.h: the parameter arena. Every trainable tensor (encoder and heads) is
// registered by name and shape, then one allocation holds all values and one
// holds all gradients, so the optimiser and checkpoints walk a flat buffer.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define PARAM_NAME_MAX 96
#define PARAM_MAX_DIMS 4

typedef struct {
    char name[PARAM_NAME_MAX];   // timm's name, e.g. "blocks.3.attn.qkv.weight"
    int ndim;
    int shape[PARAM_MAX_DIMS];
    size_t offset, numel;        // in floats, into data / grad
    int weight_decay;            // 1: AdamW decays it; 0: 1-D tensors, pos_embed, cls/mask tokens
    int frozen;                  // 1: the optimiser leaves it alone
    float lr_scale;              // its lr = schedule lr * lr_scale (layer-wise decay); 1 by default
} ParamInfo;

typedef struct {
    ParamInfo *info;
    int count, capacity;
    size_t total;                // floats
    float *data, *grad;          // one arena each, allocated by params_allocate
} ParamTable;

// Register a tensor before allocation; returns its index. Shapes are given as
// up to 4 ints, unused ones 0. The decay rule follows timm: ndim >= 2 and not a
// position embedding or token.
int params_add(ParamTable *t, const char *name, int d0, int d1, int d2, int d3);
void params_allocate(ParamTable *t);          // zeroed values and gradients
void params_free(ParamTable *t);
float *params_data(const ParamTable *t, int index);
float *params_grad(const ParamTable *t, int index);
int params_find(const ParamTable *t, const char *name);  // -1 if absent
void params_zero_grad(ParamTable *t);
size_t params_bytes(const ParamTable *t);
void params_set_lr_scale(ParamTable *t, int index, float scale);
float params_lr_scale(const ParamTable *t, int index);

// Accessors for ctypes (the Python tests) and generic walkers.
int params_count(const ParamTable *t);
const char *params_name(const ParamTable *t, int index);
int params_ndim(const ParamTable *t, int index);
int params_dim(const ParamTable *t, int index, int axis);
size_t params_numel(const ParamTable *t, int index);

// Initialisers. Each tensor draws from its own stream keyed by its name, so
// adding a head never changes how the encoder is initialised.
uint64_t params_name_hash(const char *name);
// Truncated normal N(0, std) cut at [-2, 2] (timm's trunc_normal_(std=...)).
void params_init_trunc_normal(float *x, const ParamTable *t, int index, uint64_t seed, double std);
void params_fill_floats(float *x, size_t n, float value);
