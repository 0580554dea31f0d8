// Determinism of the ViT step, in fp32 and in bf16: two runs with the same seed give identical
// bits, and so do runs on 1 and on 2 threads (every parallel loop writes a
// disjoint slice and reduces in a fixed order; OpenBLAS's sgemm splits the
// output, never the reduction dimension).
#include <string.h>

#include "check.h"
#include "common.h"
#include "gemm_tiles.h"
#include "kernels.h"
#include "optim.h"
#include "model.h"
#include "vit.h"

enum { MAX_BATCH = 64, STEPS = 3 };

// Runs STEPS AdamW steps of the classification loss from seed; returns the
// final parameters (caller frees) and the last loss.
// batch 64 makes 64*65 = 4160 tokens: the weight gradients take the chunked
// (split-token) path; batch 6 takes the row-block path.
static float *run(int threads, uint64_t seed, int BATCH, float *last_loss, size_t *count) {
    kernel_set_threads(threads);  // the precision is the caller's (gemm_set_precision)
    VitConfig cfg = {.img_size = 32, .patch_size = 4, .in_chans = 3, .embed_dim = 48, .depth = 2,
                     .num_heads = 3, .mlp_ratio = 4.0f, .qkv_bias = 1, .layer_scale_init = 0.1f,
                     .num_classes = 5, .use_mask_token = 1};
    Vit *vit = vit_create(&cfg, BATCH, seed);
    ParamTable *t = vit_params(vit);
    AdamW opt;
    adamw_init(&opt, t, 0.9f, 0.999f, 1e-8f, 0.05f);
    size_t n_img = (size_t)BATCH * 3 * 32 * 32;
    float *img = xmalloc(n_img * sizeof(float), "images");
    uint8_t mask[MAX_BATCH * 64];
    int32_t labels[MAX_BATCH];
    Rng r;
    rng_seed(&r, seed, 99);
    for (int s = 0; s < STEPS; s++) {
        for (size_t i = 0; i < n_img; i++) img[i] = (float)rng_normal(&r);
        for (int i = 0; i < BATCH * 64; i++) mask[i] = rng_uniform(&r) < 0.4;
        for (int b = 0; b < BATCH; b++) labels[b] = rng_below(&r, 5);
        params_zero_grad(t);
        vit_forward(vit, img, mask, BATCH);
        *last_loss = vit_head_forward(vit, labels, BATCH, 1);
        vit_head_backward(vit, labels, BATCH, 1, 1.0f);
        vit_backward(vit, vit_head_dfinal(vit), NULL, BATCH);
        clip_grad_norm(&opt, t, 1.0);
        adamw_step(&opt, t, 1e-3f);
    }
    *count = t->total;
    float *out = xmalloc(t->total * sizeof(float), "copy");
    memcpy(out, t->data, t->total * sizeof(float));
    adamw_free(&opt);
    xfree(img);
    vit_destroy(vit);
    return out;
}

int main(void) {
    float l1, l2, l3, l4;
    size_t n1, n2, n3, n4;
    const int batches[2] = {6, MAX_BATCH};
    for (int k = 0; k < 4; k++) {
        int B = batches[k % 2], bf16 = k >= 2;
        gemm_set_precision(bf16 ? GEMM_BF16 : GEMM_FP32);
        const char *prec = bf16 ? "bf16" : "fp32";
        char name[96];
        float *a = run(2, 42, B, &l1, &n1);
        float *b = run(2, 42, B, &l2, &n2);
        snprintf(name, sizeof name, "vit %s batch %d same seed same bits", prec, B);
        CHECK(name, n1 == n2 && memcmp(a, b, n1 * sizeof(float)) == 0 && l1 == l2,
              "two runs with seed 42 differ (loss %.9g vs %.9g)", l1, l2);
        float *c = run(1, 42, B, &l3, &n3);
        size_t diff = 0;
        for (size_t i = 0; i < n1; i++) diff += a[i] != c[i];
        snprintf(name, sizeof name, "vit %s batch %d 1 vs 2 threads same bits", prec, B);
        CHECK(name, n1 == n3 && diff == 0 && l1 == l3,
              "%zu of %zu parameters differ between 1 and 2 threads (loss %.9g vs %.9g)", diff, n1, l1, l3);
        float *d = run(2, 43, B, &l4, &n4);
        snprintf(name, sizeof name, "vit %s batch %d different seed differs", prec, B);
        CHECK(name, memcmp(a, d, n1 * sizeof(float)) != 0, "seeds 42 and 43 gave identical weights");
        xfree(a); xfree(b); xfree(c); xfree(d);
    }
    return check_exit();
}
