// bench_vit: times one full ViT training step (forward, backward, clipping,
// AdamW) on random data, and a large sgemm for the machine's peak, and prints
// key=value lines for tools/bench/bench_vit.py, which runs the PyTorch twin beside it.
#include <cblas.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gemm_tiles.h"
#include "kernels.h"
#include "optim.h"
#include "perf.h"
#include "model.h"
#include "vit.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(void) {
    printf("usage: bench_vit --config vit_ti_224|fmnist_28 [--steps N] [--warmup N] [--batch N]\n"
           "                 [--precision fp32|bf16|bf16_emulated]\n"
           "  Times forward+backward+AdamW of the ViT on random data; prints key=value lines.\n");
}

int main(int argc, char **argv) {
    const char *name = NULL;
    int steps = 5, warmup = 2, batch = 0, precision = GEMM_FP32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = precision_from_name(argv[++i]);
        else { usage(); return strcmp(argv[i], "--help") ? 2 : 0; }
    }
    if (!name) { usage(); return 2; }
    VitConfig cfg;
    if (!strcmp(name, "vit_ti_224")) {
        cfg = (VitConfig){224, 16, 3, 192, 12, 3, 4.0f, 1, 0.0f, 1000, 0};
        if (!batch) batch = 32;
    } else if (!strcmp(name, "fmnist_28")) {
        cfg = (VitConfig){28, 4, 1, 192, 6, 3, 4.0f, 1, 0.0f, 10, 0};
        if (!batch) batch = 256;
    } else {
        fatal("--config: unknown '%s' (allowed: vit_ti_224, fmnist_28)", name);
    }
    gemm_set_precision(precision);  // before the ViT is built, in case its buffers follow it
    HwPeaks hw = hw_peaks_measure();
    double peak_before = sgemm_peak_gflops(2048, 3);  // and again after the timed steps: sgemm_peak_recheck

    Vit *vit = vit_create(&cfg, batch, 0);
    ParamTable *t = vit_params(vit);
    AdamW opt;
    adamw_init(&opt, t, 0.9f, 0.999f, 1e-8f, 0.05f);
    size_t n_img = (size_t)batch * cfg.in_chans * cfg.img_size * cfg.img_size;
    float *img = xmalloc(n_img * sizeof(float), "images");
    int32_t *labels = xmalloc(batch * sizeof(int32_t), "labels");
    Rng r;
    rng_seed(&r, 1, 0);
    for (size_t i = 0; i < n_img; i++) img[i] = (float)rng_normal(&r);
    for (int b = 0; b < batch; b++) labels[b] = rng_below(&r, cfg.num_classes);

    double *times = xcalloc(steps, sizeof(double), "times");
    float loss = 0;
    long switches_before = 0;  // over the timed steps only
    FILE *ctl = perf_ctl_open();
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) switches_before = involuntary_switches(), perf_ctl_send(ctl, "enable");
        double t0 = now_seconds();
        params_zero_grad(t);
        vit_forward(vit, img, NULL, batch);
        loss = vit_head_forward(vit, labels, batch, 0);
        vit_head_backward(vit, labels, batch, 0, 1.0f);
        vit_backward(vit, vit_head_dfinal(vit), NULL, batch);
        clip_grad_norm(&opt, t, 1.0);
        adamw_step(&opt, t, 1e-4f);
        if (s >= warmup) times[s - warmup] = now_seconds() - t0;
    }
    perf_ctl_send(ctl, "disable");
    qsort(times, steps, sizeof(double), cmp_double);
    double step = times[steps / 2];
    double flops = 3.0 * vit_forward_flops_per_image(&cfg) * batch;  // backward = 2x forward
    printf("config=%s batch=%d threads=%d\n", name, batch, kernel_max_threads());
    printf("params=%zu activation_bytes=%zu\n", t->total, vit_activation_bytes(vit));
    double peak = sgemm_peak_recheck(peak_before, 2048, 3);
    printf("step_ms=%.1f images_per_s=%.2f gflops=%.1f sgemm_peak_gflops=%.1f mfu=%.3f loss=%.4f\n", step * 1e3,
           batch / step, flops / step * 1e-9, peak, flops / step * 1e-9 / peak, loss);
    print_hw_report(hw, flops / step * 1e-9);
    printf("peak_rss_bytes=%zu\n", peak_rss_bytes());
    print_thread_report(switches_before, steps);
    return 0;
}
