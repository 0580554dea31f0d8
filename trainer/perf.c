// perf.c: measured sgemm peak, the denominator of every MFU figure.
#include "perf.h"

#include <cblas.h>
#include <stdio.h>

#include "common.h"

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
    return before > after ? before : after;
}
