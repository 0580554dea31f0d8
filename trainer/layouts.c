// layouts.c: sizeof and offsetof of the structs the Python tests mirror with
// ctypes, by name, so that each binding checks its own layout at load and
// fails loudly when a C field moves, changes or is added (tests/cbind.py).
#include "layouts.h"

#include <stddef.h>
#include <string.h>

#include "augment.h"
#include "checkpoint.h"
#include "kernels.h"
#include "loader.h"
#include "mixing.h"
#include "objective.h"
#include "optim.h"
#include "vit.h"

typedef struct {
    const char *type, *field;
    size_t offset;
} FieldOffset;

#define F(type, field) {#type, #field, offsetof(type, field)}
static const FieldOffset fields[] = {
    F(VitConfig, img_size), F(VitConfig, patch_size), F(VitConfig, in_chans), F(VitConfig, embed_dim), F(VitConfig, depth), F(VitConfig, num_heads), F(VitConfig, mlp_ratio), F(VitConfig, qkv_bias), F(VitConfig, layer_scale_init), F(VitConfig, num_classes), F(VitConfig, use_mask_token),
    F(AdamW, beta1), F(AdamW, beta2), F(AdamW, eps), F(AdamW, weight_decay), F(AdamW, m), F(AdamW, v), F(AdamW, step), F(AdamW, total), F(AdamW, norm_partials), F(AdamW, norm_chunks),
    F(ObjectiveConfig, mask_ratio), F(ObjectiveConfig, min_mask_patches), F(ObjectiveConfig, replace_ratio), F(ObjectiveConfig, w_token), F(ObjectiveConfig, w_pixel), F(ObjectiveConfig, w_contrast), F(ObjectiveConfig, temperature), F(ObjectiveConfig, negatives_global), F(ObjectiveConfig, proj_hidden), F(ObjectiveConfig, proj_dim), F(ObjectiveConfig, mask_both_views), F(ObjectiveConfig, mean), F(ObjectiveConfig, std), F(ObjectiveConfig, seed), F(ObjectiveConfig, teacher_momentum), F(ObjectiveConfig, local_crops), F(ObjectiveConfig, local_crop_size),
    F(ObjectiveLosses, token), F(ObjectiveLosses, pixel), F(ObjectiveLosses, contrast), F(ObjectiveLosses, total), F(ObjectiveLosses, scored),
    F(CheckpointState, params), F(CheckpointState, opt), F(CheckpointState, tokenizer), F(CheckpointState, config_yaml), F(CheckpointState, code_version), F(CheckpointState, step), F(CheckpointState, epoch), F(CheckpointState, rng), F(CheckpointState, rng_size), F(CheckpointState, cursor), F(CheckpointState, cursor_size), F(CheckpointState, mode),
    F(RowSet, start), F(RowSet, index), F(RowSet, total),
    F(MixConfig, mixup_alpha), F(MixConfig, cutmix_alpha), F(MixConfig, smoothing), F(MixConfig, num_classes), F(MixConfig, seed),
    F(Batch, n), F(Batch, channels), F(Batch, height), F(Batch, width), F(Batch, view1), F(Batch, view2), F(Batch, clean1), F(Batch, clean2), F(Batch, labels), F(Batch, epoch), F(Batch, step),
    F(ViewParams, x), F(ViewParams, y), F(ViewParams, w), F(ViewParams, h), F(ViewParams, flip), F(ViewParams, jitter), F(ViewParams, jitter_order), F(ViewParams, bright_f), F(ViewParams, contrast_f), F(ViewParams, sat_f), F(ViewParams, hue_f), F(ViewParams, grayscale), F(ViewParams, blur), F(ViewParams, solarize), F(ViewParams, blur_sigma),
};
#undef F

#define S(type) {#type, sizeof(type)}
static const struct {
    const char *type;
    size_t size;
} sizes[] = {S(VitConfig), S(AdamW), S(ObjectiveConfig), S(ObjectiveLosses), S(CheckpointState), S(RowSet), S(MixConfig), S(Batch),
             S(ViewParams)};
#undef S

long ccvit_sizeof(const char *type) {
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(sizes[i].type, type)) return (long)sizes[i].size;
    return -1;
}

long ccvit_offsetof(const char *type, const char *field) {
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(fields[i].type, type) && !strcmp(fields[i].field, field)) return (long)fields[i].offset;
    return -1;
}
