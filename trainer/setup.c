// setup.c: Config -> VitConfig / LoaderConfig.
#include "setup.h"

#include <string.h>

#include "common.h"

VitConfig vit_config_from(const Config *cfg, int use_mask_token, int num_classes) {
    VitConfig v = {
        .img_size = cfg->img_size,
        .patch_size = cfg->patch_size,
        .in_chans = cfg->in_chans,
        .embed_dim = cfg->embed_dim,
        .depth = cfg->depth,
        .num_heads = cfg->num_heads,
        .mlp_ratio = (float)cfg->mlp_ratio,
        .qkv_bias = cfg->qkv_bias,
        .layer_scale_init = (float)cfg->layer_scale_init,
        .num_classes = num_classes,
        .use_mask_token = use_mask_token,
    };
    const char *err = vit_config_error(&v);
    if (err) fatal("config: %s", err);
    return v;
}

LoaderConfig loader_config_from(const Config *cfg, const char *source, LoaderMode mode, int two_views) {
    LoaderConfig l;
    loader_config_defaults(&l);
    if (!source || !source[0]) fatal("config: no data given (set data_train, e.g. --data_train=data/fashion-mnist/train-{000000..000005}.tar)");
    if (!strcmp(cfg->data_format, "imagefolder") || !strcmp(cfg->data_format, "folder"))
        l.image_folder = source, l.folder_flat = !strcmp(cfg->data_format, "folder");
    else if (!strcmp(cfg->data_format, "list"))
        l.image_list = source;
    else
        l.shards = source;
    l.mode = mode;
    l.batch_size = cfg->batch_size;
    l.image_size = cfg->img_size;
    l.channels = cfg->in_chans;
    l.two_views = mode == LOADER_TRAIN && two_views;
    l.interp = !strcmp(cfg->interpolation, "bilinear") ? INTERP_BILINEAR : INTERP_BICUBIC;
    for (int c = 0; c < 3; c++) {
        l.mean[c] = (float)cfg->mean.v[c < cfg->mean.n ? c : 0];
        l.std[c] = (float)cfg->std.v[c < cfg->std.n ? c : 0];
    }
    l.num_threads = cfg->num_workers;
    l.seed = (uint64_t)cfg->seed;
    if (mode == LOADER_TRAIN) {
        l.crop_scale[0] = (float)cfg->scale.v[0];
        l.crop_scale[1] = (float)cfg->scale.v[1];
        l.crop_ratio[0] = (float)cfg->ratio.v[0];
        l.crop_ratio[1] = (float)cfg->ratio.v[1];
        l.flip_p = (float)cfg->hflip;
        l.shuffle_bytes = (size_t)cfg->shuffle_buffer_mb << 20;
        l.jitter_p = (float)cfg->color_jitter_prob;
        l.brightness = l.contrast = l.saturation = (float)cfg->color_jitter;
        l.hue = (float)cfg->color_jitter / 4;
        l.grayscale_p = (float)cfg->grayscale_prob;
        l.blur_p = (float)cfg->blur_prob;
        l.solarize_p = (float)cfg->solarize_prob;
    } else {
        l.shuffle_bytes = 0;
        l.flip_p = 0;
    }
    return l;
}

void require_labelled(const Loader *l, const char *split, const char *source, const char *who) {
    int64_t missing = loader_unlabeled_samples(l), total = loader_num_samples(l);
    if (missing > 0)
        fatal("%s: %lld of %lld samples of %s (%s) have no label; %s needs a class for every image (pretraining "
              "does not: task: pretrain reads unlabeled data)",
              who, (long long)missing, (long long)total, split, source, who);
}

ObjectiveConfig objective_config_from(const Config *cfg, const LoaderConfig *lc) {
    ObjectiveConfig oc = {
        .mask_ratio = (float)cfg->mask_ratio, .min_mask_patches = cfg->min_mask_patches,
        .replace_ratio = (float)cfg->replace_ratio, .w_token = (float)cfg->w_token, .w_pixel = (float)cfg->w_pixel,
        .w_contrast = (float)cfg->w_contrast, .temperature = (float)cfg->temperature, .proj_hidden = cfg->proj_hidden,
        .negatives_global = !strcmp(cfg->contrast_negatives, "global"),
        .proj_dim = cfg->proj_dim, .mask_both_views = cfg->mask_both_views, .seed = (uint64_t)cfg->seed,
        .teacher_momentum = (float)cfg->teacher_momentum, .local_crops = (int)cfg->local_crops,
        .local_crop_size = (int)cfg->local_crop_size};
    for (int c = 0; c < 3; c++) oc.mean[c] = lc->mean[c], oc.std[c] = lc->std[c];
    return oc;
}

ModelSpec model_spec_from(const Config *cfg, const LoaderConfig *lc, ModelKind kind, int max_batch) {
    ObjectiveConfig oc = objective_config_from(cfg, lc);
    int corrupt = cfg->w_token > 0 || cfg->w_pixel > 0;
    int mask_token = kind == MODEL_PRETRAIN && (corrupt || cfg->mask_both_views);
    ModelSpec s = {.kind = kind,
                   .vit = vit_config_from(cfg, mask_token, kind == MODEL_CLASSIFY ? cfg->num_classes : 0),
                   .objective = oc,
                   .max_batch = max_batch,
                   .seed = (uint64_t)cfg->seed,
                   .freeze_patch_embed = cfg->freeze_patch_embed,
                   .optimizer = 1,
                   .beta1 = (float)cfg->opt_betas.v[0],
                   .beta2 = (float)cfg->opt_betas.v[1],
                   .eps = (float)cfg->opt_eps,
                   .weight_decay = (float)cfg->weight_decay};
    if (kind == MODEL_CLASSIFY) {
        s.drop_path = (float)cfg->drop_path;
        s.label_smoothing = (float)cfg->smoothing;
        s.layer_decay = cfg->layer_decay;
        s.mixup = (float)cfg->mixup;
        s.cutmix = (float)cfg->cutmix;
        s.reprob = (float)cfg->reprob;
    }
    return s;
}
