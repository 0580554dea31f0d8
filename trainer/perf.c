// perf.c: the measured yardsticks of every MFU figure: OpenBLAS's sgemm, and the hardware's
// fp32 FMA and bf16 dot-product limits.
#include "perf.h"

#include <cblas.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common.h"
#include "gemm_tiles.h"

double sgemm_peak_gflops(int n, int reps) {
    float *a = xmalloc((size_t)n * n * 4, "sgemm A"), *b = xmalloc((size_t)n * n * 4, "sgemm B");
    float *c = xcalloc((size_t)n * n, 4, "sgemm C");
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = 1e-3f * (float)(i % 1000);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);  // warm up
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = now_seconds() - t0;
        best = t < best ? t : best;
    }
    xfree(a);
    xfree(b);
    xfree(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

double sgemm_peak_recheck(double before, int n, int reps) {
    double after = sgemm_peak_gflops(n, reps);
    printf("sgemm_peak_before_gflops=%.1f sgemm_peak_after_gflops=%.1f\n", before, after);
    double hi = before > after ? before : after, lo = before > after ? after : before;
    if (lo < 0.85 * hi)  // the machine's load changed during the run: its ratios are suspect
        fprintf(stderr, "warning: the sgemm peak moved from %.0f to %.0f GFLOP/s during the run; the machine is "
                "busy (another benchmark, training run or neighbour), so this run's figures are suspect\n", before, after);
    return hi;
}

long involuntary_switches(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_nivcsw;
}

void print_thread_report(long switches_before, int steps) {
    FILE *f = fopen("/proc/self/status", "r");
    int os_threads = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) os_threads = atoi(line + 8);  // NOLINT(cert-err34-c): the kernel's own /proc/self/status number
    if (f) fclose(f);
    printf("os_threads=%d involuntary_switches_per_step=%.1f openblas_threads=%d\n", os_threads,
           (double)(involuntary_switches() - switches_before) / (steps > 0 ? steps : 1), openblas_get_num_threads());
    printf("openblas_config=%s\n", openblas_get_config());
    printf("gemm_tiles=%d\n", gemm_tiles_enabled());  // 0: the linear layers' products ran on OpenBLAS too
}

// ---- the hardware's limits ------------------------------------------------------------------
// Each thread runs a loop of one zmm instruction on 12 accumulators in registers: each instruction
// depends only on its own accumulator's previous one, 12 instructions back, which covers the
// latency times the issue width, and nothing touches memory, so the loop runs at the issue rate.
// Runs on the whole OpenMP team at once (the cores share power and clocks, as in a training step).
#define PEAK_ACCS 12

#if defined(__AVX512F__)
static double fma_loop(long iters) {  // returns the FLOPs it did
    volatile float seed = 1.0f;       // a value the compiler cannot see
    __m512 a = _mm512_set1_ps(seed), b = _mm512_set1_ps(seed * 0x1p-20f), acc[PEAK_ACCS];
    for (int j = 0; j < PEAK_ACCS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int j = 0; j < PEAK_ACCS; j++) acc[j] = _mm512_fmadd_ps(a, b, acc[j]);
    for (int j = 1; j < PEAK_ACCS; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
    volatile float keep = _mm512_reduce_add_ps(acc[0]);  // the sums are used: the loop stays
    (void)keep;
    return (double)iters * PEAK_ACCS * 16 * 2;
}
#endif

#if defined(__AVX512BF16__)
static double bf16_loop(long iters) {
    volatile short one = 0x3f80, tiny = 0x3580;  // bf16 1.0 and 2^-20: normal numbers, no denormal stalls
    __m512bh a = (__m512bh)_mm512_set1_epi16(one), b = (__m512bh)_mm512_set1_epi16(tiny);
    __m512 acc[PEAK_ACCS];
    for (int j = 0; j < PEAK_ACCS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int j = 0; j < PEAK_ACCS; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
    for (int j = 1; j < PEAK_ACCS; j++) acc[0] = _mm512_add_ps(acc[0], acc[j]);
    volatile float keep = _mm512_reduce_add_ps(acc[0]);
    (void)keep;
    return (double)iters * PEAK_ACCS * 16 * 4;  // per fp32 lane: two products and two sums
}
#endif

#if defined(__AVX512F__)
// GFLOP/s of the team running loop(iters) at once: each thread's own rate, summed.
static double team_gflops(double (*loop)(long), long iters) {
    double gflops = 0;
#pragma omp parallel reduction(+ : gflops)
    {
#pragma omp barrier
        double t0 = now_seconds();
        double flops = loop(iters);
        gflops += flops / (now_seconds() - t0) * 1e-9;
    }
    return gflops;
}

// Best of 3 team runs of ~75 ms each, the length found on one thread first: long enough that
// the clock has settled and the start-up barrier is noise, short enough for every bench run.
static double loop_peak_gflops(double (*loop)(long)) {
    long iters = 1 << 12;
    double t;
    for (;;) {
        double t0 = now_seconds();
        loop(iters);
        t = now_seconds() - t0;
        if (t > 5e-3) break;
        iters *= 2;
    }
    iters = (long)(iters * 0.075 / t) + 1;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double g = team_gflops(loop, iters);
        best = g > best ? g : best;
    }
    return best;
}
#endif

double fma_peak_gflops(void) {
#if defined(__AVX512F__)
    return loop_peak_gflops(fma_loop);
#else
    return 0;
#endif
}

double bf16_dot_peak_gflops(void) {
#if defined(__AVX512BF16__)
    return loop_peak_gflops(bf16_loop);
#else
    return 0;
#endif
}

// ---- the precision a bench program runs ------------------------------------------------------
static const char *const PRECISION_NAMES[] = {[GEMM_FP32] = "fp32", [GEMM_BF16] = "bf16",
                                              [GEMM_BF16_EMULATED] = "bf16_emulated"};

int precision_from_name(const char *name) {
    for (int p = 0; p < 3; p++)
        if (!strcmp(name, PRECISION_NAMES[p])) return p;
    fatal("--precision: unknown '%s' (allowed: fp32, bf16, bf16_emulated)", name);
}

const char *precision_name(int precision) {
    return precision >= 0 && precision < 3 ? PRECISION_NAMES[precision] : "unknown";
}

HwPeaks hw_peaks_measure(void) {
    return (HwPeaks){fma_peak_gflops(), bf16_dot_peak_gflops()};
}

void print_hw_report(HwPeaks peaks, double model_gflops) {
    int p = gemm_precision();
    // emulated bf16 runs two fp32 FMAs per pair: its limit is the FMA peak, as fp32's
    int on_bf16 = p == GEMM_BF16 && peaks.bf16 > 0;
    double limit = on_bf16 ? peaks.bf16 : peaks.fma;
    printf("precision=%s bf16_native=%d\n", precision_name(p), gemm_bf16_native());
    printf("fma_peak_gflops=%.1f bf16_peak_gflops=%.1f hw_mfu=%.3f hw_peak=%s\n", peaks.fma, peaks.bf16,
           limit > 0 ? model_gflops / limit : 0.0, on_bf16 ? "bf16" : "fma");
}

FILE *perf_ctl_open(void) {
    const char *path = getenv("CCVIT_PERF_CTL");
    FILE *ctl = path ? fopen(path, "w") : NULL;
    if (path && !ctl) fatal("CCVIT_PERF_CTL: cannot open '%s' for writing", path);
    return ctl;
}

void perf_ctl_send(FILE *ctl, const char *command) {
    if (!ctl) return;
    fprintf(ctl, "%s\n", command);
    if (!strcmp(command, "disable")) fclose(ctl);
    else fflush(ctl);
}
