// frozen_features.c: frozen features of an encoder (frozen_features.h).
#include "frozen_features.h"

#include <string.h>

#include "common.h"
#include "kernels.h"

const char *feature_kind_name(FeatureKind kind) { return kind == FEAT_CLS ? "cls" : kind == FEAT_MEAN ? "mean" : "both"; }

int features_dim(const Vit *vit, const FeatureSpec *f) { return f->n_blocks * (f->kind == FEAT_BOTH ? 2 * vit->D : vit->D); }

void features_scratch_alloc(FeatureScratch *s, const Vit *vit, int max_images, const FeatureSpec *f) {
    memset(s, 0, sizeof *s);
    if (f->n_blocks <= 1) return;
    size_t rows = (size_t)max_images * vit->T;
    s->normed = xmalloc(rows * vit->D * sizeof(float), "normed tokens");
    s->mean = xmalloc(rows * sizeof(float), "norm mean");
    s->rstd = xmalloc(rows * sizeof(float), "norm rstd");
}

void features_scratch_free(FeatureScratch *s) {
    xfree(s->normed), xfree(s->mean), xfree(s->rstd);
    memset(s, 0, sizeof *s);
}

// CLS and/or mean of the patch tokens of each image: tokens [n,T,D] -> out rows of `stride` floats.
static void pool_tokens(float *out, size_t stride, const float *tokens, FeatureKind kind, int n, int T, int D) {
    for (int i = 0; i < n; i++) {
        const float *tok = tokens + (size_t)i * T * D;
        float *o = out + (size_t)i * stride;
        if (kind != FEAT_MEAN) memcpy(o, tok, D * sizeof(float));
        if (kind != FEAT_CLS) {
            float *m = o + (kind == FEAT_BOTH ? D : 0);
            for (int j = 0; j < D; j++) {
                double acc = 0;
                for (int t = 1; t < T; t++) acc += tok[(size_t)t * D + j];
                m[j] = (float)(acc / (T - 1));
            }
        }
    }
}

void features_forward(Vit *vit, const float *images, int n, const FeatureSpec *f, FeatureScratch *s, float *out,
                      size_t stride) {
    vit_forward(vit, images, NULL, n);
    int T = vit->T, D = vit->D;
    if (f->n_blocks <= 1) {
        pool_tokens(out, stride, f->block >= 0 ? vit_block_output(vit, f->block) : vit_final_tokens(vit), f->kind, n, T, D);
        return;
    }
    int last = f->block >= 0 ? f->block : vit->cfg.depth - 1, part = features_dim(vit, f) / f->n_blocks;
    for (int k = 0; k < f->n_blocks; k++) {
        layernorm_forward(s->normed, s->mean, s->rstd, vit_block_output(vit, last - f->n_blocks + 1 + k), vit->w.norm_w,
                          vit->w.norm_b, n * T, D);
        pool_tokens(out + (size_t)k * part, stride, s->normed, f->kind, n, T, D);
    }
}
