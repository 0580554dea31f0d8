// model.c: register, allocate, bind, initialise, activations, optimiser.
#include "model.h"

#include <string.h>

#include "common.h"

static void model_register(Model *m, Tokenizer *tok) {
    const ModelSpec *s = &m->spec;
    vit_register(&m->vit, &m->params, &s->vit);
    if (s->kind == MODEL_PRETRAIN) objective_register(&m->obj, &m->vit, tok, &s->objective);
    if (s->kind == MODEL_CLASSIFY) objective_register_classifier(&m->obj, &m->vit, s->objective.seed);
}

static void model_init(Model *m) {
    const ModelSpec *s = &m->spec;
    vit_bind(&m->vit);
    if (s->kind != MODEL_ENCODER) objective_bind(&m->obj);
    vit_init_weights(&m->vit, s->seed);
    if (s->kind != MODEL_ENCODER) objective_init_weights(&m->obj, s->seed);
    if (s->kind == MODEL_CLASSIFY) {
        vit_set_regularisation(&m->vit, s->drop_path, s->label_smoothing);
        if (s->layer_decay > 0) vit_set_layer_decay(&m->vit, s->layer_decay);
        m->obj.mix = (MixConfig){.mixup_alpha = s->mixup, .cutmix_alpha = s->cutmix, .smoothing = s->label_smoothing,
                                 .num_classes = s->vit.num_classes, .seed = s->objective.seed};
        m->obj.reprob = s->reprob;
    }
    if (s->freeze_patch_embed) vit_freeze_patch_embed(&m->vit);
}

void model_build(Model *m, const ModelSpec *spec, Tokenizer *tok) {
    memset(m, 0, sizeof *m);
    m->spec = *spec;
    if (spec->kind == MODEL_CLASSIFY && spec->vit.num_classes < 1) fatal("model: classification needs num_classes >= 1");
    model_register(m, tok);
    params_allocate(&m->params);
    model_init(m);
    m->views = spec->kind == MODEL_PRETRAIN ? objective_views(&spec->objective) : 1;
    if (spec->max_batch > 0) {
        vit_allocate_activations(&m->vit, m->views * spec->max_batch);
        if (spec->kind != MODEL_ENCODER) objective_allocate(&m->obj, spec->max_batch);
    }
    if (spec->optimizer) adamw_init(&m->opt, &m->params, spec->beta1, spec->beta2, spec->eps, spec->weight_decay);
}

void model_free(Model *m) {
    if (m->spec.optimizer) adamw_free(&m->opt);
    if (m->spec.kind != MODEL_ENCODER) objective_release(&m->obj);
    vit_release(&m->vit);
    params_free(&m->params);
}

Vit *vit_create(const VitConfig *cfg, int max_batch, uint64_t seed) {
    Model *m = xcalloc(1, sizeof(Model), "model");
    ModelSpec spec = {.kind = MODEL_ENCODER, .vit = *cfg, .max_batch = max_batch, .seed = seed};
    model_build(m, &spec, NULL);
    m->vit.owner = m;
    return &m->vit;
}

void vit_destroy(Vit *vit) {
    if (!vit) return;
    Model *m = vit->owner;
    model_free(m);
    xfree(m);
}
