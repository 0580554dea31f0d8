// probe.h: frozen-feature evaluation. Weighted kNN (DINO protocol) and a linear
// probe (multinomial logistic regression fitted by L-BFGS in float64). Features
// are [n, d] float32 rows, labels int32 in [0, classes).
#pragma once
#include <stddef.h>
#include <stdint.h>

// DINO's weighted kNN: cosine similarity (rows L2-normalised here, inputs are
// not modified), the k most similar train rows vote with weight exp(sim / T).
// Returns top-1 and top-5 accuracy in percent.
void knn_eval(const float *train, const int32_t *ytrain, size_t ntrain, const float *test, const int32_t *ytest,
              size_t ntest, int d, int classes, int k, double T, double *top1, double *top5);

// Minimises mean cross-entropy + lambda/2 ||W||^2 (bias not penalised), the
// objective of sklearn's LogisticRegression(C = 1 / (lambda * n)). X [n, d]
// float64; theta [classes * (d + 1)]: W [classes, d] then b [classes], used as
// the starting point (warm start) and overwritten. Stops when the largest
// gradient entry is below tol, after max_iter iterations, or when a line search
// finds no decrease; returns iterations, and *grad_max the largest gradient
// entry where it stopped (converged: below tol).
int logreg_fit(const double *X, const int32_t *y, size_t n, int d, int classes, double lambda, double *theta, int max_iter,
               double tol, double *grad_max);
// Accuracy in percent of theta on X, y.
double logreg_accuracy(const double *X, const int32_t *y, size_t n, int d, int classes, const double *theta);

typedef struct {
    int n_lambdas;
    double lambdas[16], holdout_top1[16];   // the grid and its held-out accuracy
    double lambda;                           // the chosen one
    double train_top1, test_top1;
    int iters;                               // of the final fit
    double grad_max;                         // its largest gradient entry at the stop (converged: < 1e-6)
} ProbeResult;

// The linear-probe protocol: standardise with the train split's mean and std,
// hold out `holdout` (e.g. 0.1) of train (seeded shuffle) to choose lambda from
// the grid (largest held-out accuracy; ties -> stronger regularisation). The
// grid fits use at most PROBE_GRID_ROWS of the rest (for speed on big splits)
// and stop at a largest gradient entry of 1e-4 (sklearn's default tol). Then
// refit on all of train (to 1e-6, at most 4 * max_iter iterations), report
// test top-1. verbose: one line per fit on stderr.
#define PROBE_GRID_ROWS 20000
void linear_probe(const float *train, const int32_t *ytrain, size_t ntrain, const float *test, const int32_t *ytest,
                  size_t ntest, int d, int classes, const double *lambdas, int n_lambdas, double holdout, uint64_t seed,
                  int max_iter, int verbose, ProbeResult *out);
