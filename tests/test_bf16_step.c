// One training step in bf16 against the same step in fp32, for the ViT alone
// (classification) and for the whole pretraining objective (token CE, pixel
// MSE, NT-Xent): every parameter gradient, tensor by tensor, must point the
// same way (cosine >= 0.999) and have a relative error norm
// |g_bf16 - g_fp32| / |g_fp32| <= 0.045. That is the error cos 0.999 allows
// between two vectors of equal length (sqrt(2 (1 - 0.999))); the bound on the
// norm also catches a gradient of the right direction but wrong length. Each
// product's operands carry up to 2^-8 relative error, and a gradient passes a
// chain of them; the observed worst cases print beside the bounds.
#include <math.h>
#include <string.h>

#include "check.h"
#include "common.h"
#include "gemm_tiles.h"
#include "objective.h"
#include "tokenizer.h"
#include "model.h"
#include "vit.h"

#define COS_MIN 0.999
#define REL_MAX 0.045

// grads of one step in `precision`, copied out of the table (caller frees)
typedef float *(*StepFn)(void *model, int precision);

static void compare_grads(const char *what, ParamTable *t, const float *g32, const float *g16) {
    double worst_cos = 1, worst_rel = 0;
    const char *worst_name = "";
    int bad = 0;
    for (int i = 0; i < t->count; i++) {
        const ParamInfo *p = &t->info[i];
        double dot = 0, n32 = 0, n16 = 0, nd = 0;
        for (size_t j = 0; j < p->numel; j++) {
            double a = g32[p->offset + j], b = g16[p->offset + j];
            dot += a * b, n32 += a * a, n16 += b * b, nd += (a - b) * (a - b);
        }
        if (n32 == 0 && n16 == 0) continue;  // a tensor this step does not train (frozen patch embedding)
        double cos = dot / sqrt(n32 * n16), rel = sqrt(nd / n32);
        if (!(cos >= COS_MIN && rel <= REL_MAX)) {
            if (!bad++) printf("  %s %s: cos %.6f rel %.4f\n", what, p->name, cos, rel);
        }
        if (cos < worst_cos) worst_cos = cos;
        if (rel > worst_rel) worst_rel = rel, worst_name = p->name;
    }
    printf("  %s: worst cosine %.6f, worst relative error norm %.4f (%s), %d tensors\n", what, worst_cos, worst_rel,
           worst_name, t->count);
    char name[128];
    snprintf(name, sizeof name, "%s: bf16 step's gradients match fp32's (cos >= %.3f, rel <= %.3f)", what, COS_MIN, REL_MAX);
    CHECK(name, bad == 0, "%d tensors outside the bounds", bad);
}

enum { B_VIT = 16, B_OBJ = 16 };

static float *vit_step(Vit *vit, const float *img, const int32_t *labels, int precision) {
    gemm_set_precision(precision);
    ParamTable *t = vit_params(vit);
    params_zero_grad(t);
    vit_forward(vit, img, NULL, B_VIT);
    vit_head_forward(vit, labels, B_VIT, 1);
    vit_head_backward(vit, labels, B_VIT, 1, 1.0f);
    vit_backward(vit, vit_head_dfinal(vit), NULL, B_VIT);
    gemm_set_precision(GEMM_FP32);
    float *g = xmalloc(t->total * sizeof(float), "grads");
    memcpy(g, t->grad, t->total * sizeof(float));
    return g;
}

static void vit_case(void) {
    VitConfig cfg = {.img_size = 28, .patch_size = 4, .in_chans = 1, .embed_dim = 96, .depth = 4, .num_heads = 3,
                     .mlp_ratio = 4.0f, .qkv_bias = 1, .layer_scale_init = 0.0f, .num_classes = 10, .use_mask_token = 0};
    Vit *vit = vit_create(&cfg, B_VIT, 7);
    float *img = xmalloc(sizeof(float) * B_VIT * 28 * 28, "images");
    int32_t labels[B_VIT];
    Rng r;
    rng_seed(&r, 3, 0);
    for (int i = 0; i < B_VIT * 28 * 28; i++) img[i] = (float)rng_normal(&r);
    for (int b = 0; b < B_VIT; b++) labels[b] = rng_below(&r, 10);
    float *g32 = vit_step(vit, img, labels, GEMM_FP32), *g16 = vit_step(vit, img, labels, GEMM_BF16);
    compare_grads("ViT classification step", vit_params(vit), g32, g16);
    // a model laid out under bf16 keeps qkv, the attention output and the norm and GELU outputs in bf16: the same bits
    gemm_set_precision(GEMM_BF16);
    Vit *vit16 = vit_create(&cfg, B_VIT, 7);
    gemm_set_precision(GEMM_FP32);
    float *g16s = vit_step(vit16, img, labels, GEMM_BF16);
    size_t n = vit_params(vit)->total;
    CHECK("ViT: qkv, attention output, norm and GELU outputs stored in bf16 give the same gradients, bit for bit",
          vit16->blocks[0].qkv16 && !vit16->blocks[0].qkv && memcmp(g16, g16s, n * sizeof(float)) == 0,
          "the bf16-stored model's gradients differ");
    printf("  ViT activations: %.2f MB laid out for fp32, %.2f MB for bf16\n", vit_activation_bytes(vit) / 1e6,
           vit_activation_bytes(vit16) / 1e6);
    CHECK("ViT: bf16 storage takes less activation memory", vit_activation_bytes(vit16) < vit_activation_bytes(vit),
          "%zu vs %zu bytes", vit_activation_bytes(vit16), vit_activation_bytes(vit));
    xfree(g32), xfree(g16), xfree(g16s), xfree(img);
    vit_destroy(vit);
    vit_destroy(vit16);
}

static float *objective_step(Objective *o, const float *v1, const float *c1, const float *v2, int precision,
                             float *loss) {
    gemm_set_precision(precision);
    ParamTable *t = objective_params(o);
    params_zero_grad(t);
    *loss = objective_forward(o, v1, c1, v2, B_OBJ, 0, -1).total;
    objective_backward(o, 1.0f);
    gemm_set_precision(GEMM_FP32);
    float *g = xmalloc(t->total * sizeof(float), "grads");
    memcpy(g, t->grad, t->total * sizeof(float));
    return g;
}

static void objective_case(void) {
    VitConfig vc = {28, 4, 1, 96, 4, 3, 4.0f, 1, 0.0f, 0, 1};
    int K = 64, d = 16;
    Rng r;
    rng_seed(&r, 5, 0);
    float *cents = xmalloc(sizeof(float) * K * d, "centroids");
    for (int i = 0; i < K * d; i++) cents[i] = (float)rng_uniform(&r);
    Tokenizer *tok = tokenizer_from_centroids(cents, NULL, K, 4, 1);
    ObjectiveConfig oc = {.mask_ratio = 0.4f, .min_mask_patches = 4, .replace_ratio = 0.1f, .w_token = 1,
                          .w_pixel = 1, .w_contrast = 1, .temperature = 0.2f, .proj_hidden = 128, .proj_dim = 64,
                          .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0.25f, 0.25f}, .seed = 0};
    Objective *o = objective_create(&vc, &oc, tok, B_OBJ, 0);
    size_t n = (size_t)B_OBJ * 28 * 28;
    float *c1 = xmalloc(n * 4, "clean1"), *v1 = xmalloc(n * 4, "view1"), *v2 = xmalloc(n * 4, "view2");
    for (size_t i = 0; i < n; i++) {
        c1[i] = (float)rng_uniform(&r);
        v1[i] = (c1[i] - 0.5f) / 0.25f;
        v2[i] = (float)rng_normal(&r);
    }
    float l32, l16, l32b;
    float *g32 = objective_step(o, v1, c1, v2, GEMM_FP32, &l32), *g16 = objective_step(o, v1, c1, v2, GEMM_BF16, &l16);
    float *again = objective_step(o, v1, c1, v2, GEMM_FP32, &l32b);
    ParamTable *t = objective_params(o);
    CHECK("objective step is repeatable (the comparison sees precision alone)",
          l32 == l32b && memcmp(g32, again, t->total * sizeof(float)) == 0, "two fp32 steps differ");
    printf("  objective loss: fp32 %.6f, bf16 %.6f\n", l32, l16);
    CHECK("objective loss in bf16 within 1% of fp32", fabs(l16 - l32) <= 0.01 * fabs(l32), "%.6f vs %.6f", l16, l32);
    compare_grads("pretraining objective step", t, g32, g16);
    gemm_set_precision(GEMM_BF16);  // the encoder, pixel head and teacher laid out with bf16 qkv and attention output
    Objective *o16 = objective_create(&vc, &oc, tok, B_OBJ, 0);
    gemm_set_precision(GEMM_FP32);
    float l16s, *g16s = objective_step(o16, v1, c1, v2, GEMM_BF16, &l16s);
    CHECK("objective: bf16-stored activations give the same loss and gradients, bit for bit",
          l16s == l16 && memcmp(g16, g16s, t->total * sizeof(float)) == 0, "loss %.9g vs %.9g", l16s, l16);
    xfree(g32), xfree(g16), xfree(g16s), xfree(again), xfree(c1), xfree(v1), xfree(v2), xfree(cents);
    objective_destroy(o);
    objective_destroy(o16);
    tokenizer_free(tok);
}

int main(void) {
    vit_case();
    objective_case();
    return check_exit();
}
