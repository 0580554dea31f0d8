// The FLOP counts behind the benchmarks' utilisation figures, checked by
// counting: this binary defines cblas_sgemm, so every product the library
// code issues to OpenBLAS during one pretraining step comes through the wrapper
// below, which adds 2*M*N*K and calls OpenBLAS's; the products on our own
// tiles (gemm_tiles.c) are added from their running total. The step's total must equal
// objective_step_flops (forward + backward of the kept rows, no input
// gradient for the patch embedding, the tokenizer's nearest-centroid
// product), and 3 x objective_forward_flops once those two corrections are
// taken out.
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common.h"
#include "gemm_tiles.h"
#include "objective.h"

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                         const blasint, const blasint, const blasint, const float, const float *, const blasint,
                         const float *, const blasint, const float, float *, const blasint);
static double counted;
static int counting;

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C, const blasint ldc) {
    static sgemm_fn real;
    if (!real) real = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (!real) fatal("test_flop_count: OpenBLAS's cblas_sgemm not found");
    if (counting) {
#pragma omp atomic
        counted += 2.0 * M * N * K;
    }
    real(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// One step of the objective with these loss weights; returns counted / expected - 1.
static double step_ratio(const char *name, float w_tok, float w_pix, float w_con, int freeze, float teacher,
                         int local_crops, double *fwd_check) {
    enum { B = 6, K = 64 };
    VitConfig vc = {.img_size = 32, .patch_size = 8, .in_chans = 3, .embed_dim = 48, .depth = 4, .num_heads = 3,
                    .mlp_ratio = 4.0f, .qkv_bias = 1, .layer_scale_init = 0.0f, .num_classes = 0,
                    .use_mask_token = 1};
    int d = 3 * 8 * 8;  // 192 > the register kernel's d: the tokenizer takes the sgemm path
    Rng r;
    rng_seed(&r, 7, 0);
    float *cents = xmalloc(sizeof(float) * K * d, "centroids");
    for (int i = 0; i < K * d; i++) cents[i] = (float)rng_uniform(&r);
    Tokenizer *tok = tokenizer_from_centroids(cents, NULL, K, 8, 3);
    ObjectiveConfig oc = {.mask_ratio = 0.4f, .min_mask_patches = 2, .replace_ratio = 0.1f, .w_token = w_tok,
                          .w_pixel = w_pix, .w_contrast = w_con, .temperature = 0.2f, .proj_hidden = 64,
                          .proj_dim = 32, .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0.25f, 0.25f}, .seed = 3,
                          .teacher_momentum = teacher, .local_crops = local_crops, .local_crop_size = 16};
    Objective *o = objective_create(&vc, &oc, tok, B, 1);
    o->vit->freeze_patch_embed = freeze;
    size_t n = (size_t)B * 3 * 32 * 32;
    float *clean = xmalloc(n * 4, "clean"), *v1 = xmalloc(n * 4, "view1"), *v2 = xmalloc(n * 4, "view2");
    for (size_t i = 0; i < n; i++) {
        clean[i] = (float)rng_uniform(&r);
        v1[i] = (clean[i] - 0.5f) / 0.25f;
        v2[i] = (float)rng_normal(&r);
    }
    counted = 0;
    counting = 1;
    double tiles_before = gemm_tiles_flops_issued();
    objective_forward(o, v1, clean, w_con > 0 ? v2 : NULL, B, 0, -1);
    objective_backward(o, 1.0f);
    counting = 0;
    counted += gemm_tiles_flops_issued() - tiles_before;  // the linear layers' products on our own tiles
    double expected = objective_step_flops(o, B);
    // 3 x forward, less the patch embedding's missing backward terms, plus the tokenizer's product
    double patch = 2.0 * o->vit->N * o->vit->D * d, views = o->views;
    double tokenizer = o->corrupt ? 2.0 * B * (o->n_mask + o->n_replace) * K * d : 0;
    // multi-crop: the local views' patch embedding has the same missing terms; against the
    // teacher's keys their backward is one product too
    double LB = (double)local_crops * B, local_patch = o->local ? 2.0 * o->local->N * o->vit->D * d : 0;
    double local_terms = LB * local_patch * (freeze ? 2 : 1) + (o->use_teacher ? 2.0 * LB * B * oc.proj_dim : 0);
    // the EMA teacher's forward (no backward) on view2; InfoNCE's backward against
    // constant keys is one B x B x proj_dim product, not two
    *fwd_check = (3 * objective_forward_flops(o, B) - views * B * patch * (freeze ? 2 : 1) + tokenizer +
                  objective_teacher_flops(o, B) - (o->use_teacher ? 2.0 * B * B * oc.proj_dim : 0) - local_terms) /
                    counted - 1;
    printf("%s: counted %.0f FLOPs, objective_step_flops %.0f\n", name, counted, expected);
    objective_destroy(o);
    tokenizer_free(tok);
    xfree(cents), xfree(clean), xfree(v1), xfree(v2);
    return counted / expected - 1;
}

int main(void) {
    struct {
        const char *name;
        float t, p, c;
        int freeze;
        float teacher;
        int local_crops;
    } cases[] = {{"all three losses", 1, 1, 1, 0, 0, 0}, {"all three, frozen patch embedding", 1, 1, 1, 1, 0, 0},
                 {"pure CCViT", 1, 1, 0, 0, 0, 0}, {"token CE only", 1, 0, 0, 0, 0, 0}, {"pixel MSE only", 0, 1, 0, 0, 0, 0},
                 {"pure NT-Xent", 0, 0, 1, 0, 0, 0}, {"all three, EMA teacher", 1, 1, 1, 1, 0.99f, 0},
                 {"pure InfoNCE against the EMA teacher", 0, 0, 1, 0, 0.99f, 0},
                 {"all three, 3 local views", 1, 1, 1, 1, 0, 3}, {"pure NT-Xent, 2 local views", 0, 0, 1, 0, 0, 2},
                 {"all three, EMA teacher, 2 local views", 1, 1, 1, 1, 0.99f, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double fwd;
        double e = step_ratio(cases[i].name, cases[i].t, cases[i].p, cases[i].c, cases[i].freeze, cases[i].teacher,
                              cases[i].local_crops, &fwd);
        char label[128];
        snprintf(label, sizeof label, "flop count: %s", cases[i].name);
        CHECK(label, fabs(e) < 1e-12 && fabs(fwd) < 1e-12, "counted/expected - 1 = %.3e (forward-based %.3e)", e, fwd);
    }
    return check_exit();
}
