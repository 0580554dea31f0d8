// diagnostics.h: a collapse detector for the logged metrics. When
// self-supervised features collapse, a few directions carry nearly all of
// their variance; this measures that share on a batch of features.
#pragma once

typedef struct {
    int n_max, dim, top;
    double *cov, *vecs, *work;   // [dim,dim], [top,dim], [dim]
} SpectrumProbe;

void spectrum_probe_init(SpectrumProbe *p, int n_max, int dim, int top);
void spectrum_probe_free(SpectrumProbe *p);
// Share of the total variance of x [n, dim] (rows = samples) carried by the top
// `top` principal components: covariance, then power iteration with deflation
// (deterministic start vectors, 100 iterations each).
double spectrum_top_share(SpectrumProbe *p, const float *x, int n, int stride);
