// perf.c: measured sgemm peak, the denominator of every MFU figure.
#include "perf.h"

#include <cblas.h>
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
        if (!strncmp(line, "Threads:", 8)) os_threads = atoi(line + 8);
    if (f) fclose(f);
    printf("os_threads=%d involuntary_switches_per_step=%.1f openblas_threads=%d\n", os_threads,
           (double)(involuntary_switches() - switches_before) / (steps > 0 ? steps : 1), openblas_get_num_threads());
    printf("openblas_config=%s\n", openblas_get_config());
    printf("gemm_tiles=%d\n", gemm_tiles_enabled());  // 0: the linear layers' products ran on OpenBLAS too
}
