// bench_pretrain: times one full pretraining step (both views, token CE, pixel
// MSE, NT-Xent: forward, backward, clipping, AdamW) on random data, including
// the tokenizer assignment and the masking; prints key=value lines for
// tools/bench/bench_pretrain.py, which runs the PyTorch twin beside it.
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm_tiles.h"
#include "kernels.h"
#include "objective.h"
#include "optim.h"
#include "perf.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Fashion-MNIST at 256: the batch of the PyTorch measurement; at 64: what
// configs/fashion_mnist_full.yaml trains with. ViT-S/16 and ViT-B/16: how the step scales with
// the model, at batches that leave ours and the PyTorch twin well inside 24 GiB.
static const struct {
    const char *name;
    VitConfig vc;
    int K, batch;
} CONFIGS[] = {
    {"fmnist_28", {28, 4, 1, 192, 6, 3, 4.0f, 1, 0.0f, 0, 1}, 512, 256},
    {"fmnist_28_b64", {28, 4, 1, 192, 6, 3, 4.0f, 1, 0.0f, 0, 1}, 512, 64},
    {"vit_ti_224", {224, 16, 3, 192, 12, 3, 4.0f, 1, 0.0f, 0, 1}, 8192, 32},
    {"vit_s_224", {224, 16, 3, 384, 12, 6, 4.0f, 1, 0.0f, 0, 1}, 8192, 32},
    {"vit_b_224", {224, 16, 3, 768, 12, 12, 4.0f, 1, 0.0f, 0, 1}, 8192, 16},
};
#define CONFIG_NAMES "fmnist_28|fmnist_28_b64|vit_ti_224|vit_s_224|vit_b_224"

int main(int argc, char **argv) {
    const char *name = NULL;
    int steps = 5, warmup = 2, batch = 0, precision = GEMM_FP32;
    float w_tok = 1, w_pix = 1, w_con = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc) sscanf(argv[++i], "%f,%f,%f", &w_tok, &w_pix, &w_con);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = precision_from_name(argv[++i]);
        else {
            printf("usage: bench_pretrain --config " CONFIG_NAMES " [--steps N] [--warmup N] [--batch N]\n"
                   "                      [--weights tok,pix,con] [--precision fp32|bf16|bf16_emulated]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (!name) fatal("--config is required (" CONFIG_NAMES ")");
    int c = 0, n_configs = sizeof CONFIGS / sizeof CONFIGS[0];
    while (c < n_configs && strcmp(name, CONFIGS[c].name)) c++;
    if (c == n_configs) fatal("--config: unknown '%s' (allowed: " CONFIG_NAMES ")", name);
    VitConfig vc = CONFIGS[c].vc;
    int K = CONFIGS[c].K;
    if (!batch) batch = CONFIGS[c].batch;
    gemm_set_precision(precision);  // before the objective is built, in case its buffers follow it
    HwPeaks hw = hw_peaks_measure();
    double peak_before = sgemm_peak_gflops(2048, 3);  // and again after the timed steps: sgemm_peak_recheck
    int d = vc.in_chans * vc.patch_size * vc.patch_size;
    Rng r;
    rng_seed(&r, 1, 0);
    float *cents = xmalloc(sizeof(float) * K * d, "centroids");
    for (long i = 0; i < (long)K * d; i++) cents[i] = (float)rng_uniform(&r);
    Tokenizer *tok = tokenizer_from_centroids(cents, NULL, K, vc.patch_size, vc.in_chans);
    ObjectiveConfig oc = {.mask_ratio = 0.4f, .min_mask_patches = 4, .replace_ratio = 0.1f, .w_token = w_tok,
                          .w_pixel = w_pix, .w_contrast = w_con, .temperature = 0.2f, .proj_hidden = 1024,
                          .proj_dim = 256, .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0.25f, 0.25f}, .seed = 0};
    Objective *o = objective_create(&vc, &oc, tok, batch, 0);
    ParamTable *t = objective_params(o);
    AdamW opt;
    adamw_init(&opt, t, 0.9f, 0.999f, 1e-8f, 0.05f);
    size_t n_img = (size_t)batch * vc.in_chans * vc.img_size * vc.img_size;
    float *clean1 = xmalloc(n_img * 4, "clean1"), *view1 = xmalloc(n_img * 4, "view1"), *view2 = xmalloc(n_img * 4, "view2");
    for (size_t i = 0; i < n_img; i++) {
        clean1[i] = (float)rng_uniform(&r);
        view1[i] = (clean1[i] - 0.5f) / 0.25f;
        view2[i] = (float)rng_normal(&r);
    }
    double *times = xcalloc(steps, sizeof(double), "times");
    ObjectiveLosses L = {0};
    FILE *ctl = perf_ctl_open();
    long switches_before = 0;  // over the timed steps only
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) switches_before = involuntary_switches(), perf_ctl_send(ctl, "enable");
        double t0 = now_seconds();
        params_zero_grad(t);
        L = objective_forward(o, view1, clean1, view2, batch, s, -1);
        objective_backward(o, 1.0f);
        clip_grad_norm(&opt, t, 3.0);
        adamw_step(&opt, t, 1e-4f);
        if (s >= warmup) times[s - warmup] = now_seconds() - t0;
    }
    perf_ctl_send(ctl, "disable");
    double total = 0;
    for (int i = 0; i < steps; i++) total += times[i];
    qsort(times, steps, sizeof(double), cmp_double);
    double step = times[steps / 2];
    double flops = 3.0 * objective_forward_flops(o, batch);  // model FLOPs (MFU)
    double executed = objective_step_flops(o, batch);        // with the tokenizer's product
    printf("config=%s batch=%d threads=%d K=%d\n", name, batch, kernel_max_threads(), K);
    double peak = sgemm_peak_recheck(peak_before, 2048, 3);
    printf("step_ms=%.1f images_per_s=%.2f gflops=%.1f sgemm_peak_gflops=%.1f mfu=%.3f loss=%.4f\n", step * 1e3,
           batch / step, flops / step * 1e-9, peak, flops / step * 1e-9 / peak, L.total);
    printf("executed_gflops=%.1f flop_util=%.3f\n", executed / step * 1e-9, executed / step * 1e-9 / peak);
    printf("images_per_s_mean=%.2f\n", batch * steps / total);  // every timed step counted, as a trainer's throughput
    print_hw_report(hw, flops / step * 1e-9);
    printf("peak_rss_bytes=%zu\n", peak_rss_bytes());
    print_thread_report(switches_before, steps);
    return 0;
}
