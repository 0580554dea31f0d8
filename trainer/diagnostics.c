// diagnostics.c: share of variance in the top principal components.
#include "diagnostics.h"

#include <math.h>
#include <string.h>

#include "common.h"

void spectrum_probe_init(SpectrumProbe *p, int n_max, int dim, int top) {
    p->n_max = n_max;
    p->dim = dim;
    p->top = top;
    p->cov = xcalloc((size_t)dim * dim, sizeof(double), "spectrum covariance");
    p->vecs = xcalloc((size_t)top * dim, sizeof(double), "spectrum vectors");
    p->work = xcalloc((size_t)2 * dim, sizeof(double), "spectrum work");
}

void spectrum_probe_free(SpectrumProbe *p) {
    xfree(p->cov);
    xfree(p->vecs);
    xfree(p->work);
    memset(p, 0, sizeof *p);
}

double spectrum_top_share(SpectrumProbe *p, const float *x, int n, int stride) {
    int D = p->dim;
    double *mean = p->work, *w = p->work + D, *C = p->cov;
    if (n < 2) return NAN;
    memset(mean, 0, sizeof(double) * D);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < D; c++) mean[c] += x[(long)i * stride + c];
    for (int c = 0; c < D; c++) mean[c] /= n;
    memset(C, 0, sizeof(double) * D * D);
#pragma omp parallel for schedule(static)
    for (int a = 0; a < D; a++)
        for (int i = 0; i < n; i++) {
            double xa = x[(long)i * stride + a] - mean[a];
            for (int b = 0; b < D; b++) C[(long)a * D + b] += xa * (x[(long)i * stride + b] - mean[b]);
        }
    double trace = 0;
    for (int a = 0; a < D; a++) trace += C[(long)a * D + a];
    if (!(trace > 0)) return NAN;
    double top_sum = 0;
    for (int k = 0; k < p->top && k < D; k++) {
        double *v = p->vecs + (long)k * D, lambda = 0;
        for (int c = 0; c < D; c++) v[c] = 1.0 / sqrt(D) * (1 + 0.01 * ((c * 7 + k) % 13));
        for (int it = 0; it < 100; it++) {
            for (int a = 0; a < D; a++) {
                double s = 0;
                for (int b = 0; b < D; b++) s += C[(long)a * D + b] * v[b];
                w[a] = s;
            }
            double nrm = 0;
            for (int a = 0; a < D; a++) nrm += w[a] * w[a];
            nrm = sqrt(nrm);
            if (nrm == 0) break;
            lambda = nrm;
            for (int a = 0; a < D; a++) v[a] = w[a] / nrm;
        }
        top_sum += lambda;
        for (int a = 0; a < D; a++)  // deflate: C -= lambda v v^T
            for (int b = 0; b < D; b++) C[(long)a * D + b] -= lambda * v[a] * v[b];
    }
    return top_sum / trace;
}
