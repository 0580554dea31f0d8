// probe.c: weighted kNN and the L-BFGS logistic-regression linear probe.
#include "probe.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "common.h"

// ---- kNN ---------------------------------------------------------------------------

static float *l2_normalised(const float *x, size_t n, int d) {
    float *y = xmalloc(n * d * sizeof(float), "normalised features");
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        float scale = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int j = 0; j < d; j++) y[i * d + j] = x[i * d + j] * scale;
    }
    return y;
}

void knn_eval(const float *train, const int32_t *ytrain, size_t ntrain, const float *test, const int32_t *ytest,
              size_t ntest, int d, int classes, int k, double T, double *top1, double *top5) {
    if (k > (int)ntrain) k = (int)ntrain;
    float *tr = l2_normalised(train, ntrain, d), *te = l2_normalised(test, ntest, d);
    enum { BLOCK = 128 };
    float *sims = xmalloc((size_t)BLOCK * ntrain * sizeof(float), "kNN similarities");
    double *scores = xmalloc((size_t)BLOCK * classes * sizeof(double), "kNN class scores");  // off the stack: classes is data
    long hit1 = 0, hit5 = 0;
    for (size_t r0 = 0; r0 < ntest; r0 += BLOCK) {
        int nb = (int)(ntest - r0 < BLOCK ? ntest - r0 : BLOCK);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)ntrain, d, 1.0f, te + r0 * d, d, tr, d, 0.0f, sims,
                    (int)ntrain);
#pragma omp parallel for schedule(static) reduction(+ : hit1, hit5)
        for (int i = 0; i < nb; i++) {
            const float *s = sims + (size_t)i * ntrain;
            float topv[k];
            int32_t topi[k];
            int cnt = 0;
            for (size_t j = 0; j < ntrain; j++) {  // insertion into a descending list of the k best
                float v = s[j];
                if (cnt == k && !(v > topv[k - 1])) continue;
                int p = cnt < k ? cnt++ : k - 1;
                while (p > 0 && topv[p - 1] < v) {
                    topv[p] = topv[p - 1];
                    topi[p] = topi[p - 1];
                    p--;
                }
                topv[p] = v;
                topi[p] = (int32_t)j;
            }
            double *score = scores + (size_t)i * classes;
            memset(score, 0, sizeof(double) * classes);
            for (int t = 0; t < cnt; t++) score[ytrain[topi[t]]] += exp(topv[t] / T);
            int y = ytest[r0 + i], rank = 0;
            // cppcheck-suppress arrayIndexThenCheck ; c < y breaks ties, it is no bounds check (c < classes is)
            for (int c = 0; c < classes; c++) rank += score[c] > score[y] || (score[c] == score[y] && c < y);
            hit1 += rank == 0;
            hit5 += rank < 5;
        }
    }
    *top1 = 100.0 * hit1 / (double)ntest;
    *top5 = 100.0 * hit5 / (double)ntest;
    xfree(sims);
    xfree(scores);
    xfree(tr);
    xfree(te);
}

// ---- logistic regression -------------------------------------------------------------

// Rows are processed in fixed blocks, each read once from memory: logits, softmax
// and its gradient contribution while the block is in cache. Per-block partial
// sums are added in block order, so results do not depend on the thread count.
typedef struct {
    const double *X;
    const int32_t *y;
    size_t n;
    int d, C, nblk, rows;  // rows per block
    double lambda;
    const double *pen;     // [d] per-feature penalty weights (lambda/2 sum_j pen_j ||W[:, j]||^2)
    double *z;             // [n, C] logits, then residuals / n
    double *gw;            // [nblk, C, d] partial dW
    double *gb, *loss;     // [nblk, C], [nblk]
} LogReg;

static void logreg_init(LogReg *p, const double *X, const int32_t *y, size_t n, int d, int C, double lambda, const double *pen) {
    p->X = X, p->y = y, p->n = n, p->d = d, p->C = C, p->lambda = lambda, p->pen = pen;
    p->nblk = (int)((n + 255) / 256);
    if (p->nblk > 64) p->nblk = 64;
    p->rows = (int)((n + p->nblk - 1) / p->nblk);
    p->z = xmalloc(n * C * sizeof(double) + 1, "logits");
    p->gw = xmalloc((size_t)p->nblk * C * d * sizeof(double), "probe partial gradients");
    p->gb = xmalloc((size_t)p->nblk * C * sizeof(double), "probe partial gradients");
    p->loss = xmalloc((size_t)p->nblk * sizeof(double), "probe partial losses");
}

static void logreg_release(LogReg *p) {
    xfree(p->z), xfree(p->gw), xfree(p->gb), xfree(p->loss);
}

// Objective value; grad <- its gradient.
static double logreg_value_grad(LogReg *p, const double *theta, double *grad) {
    int d = p->d, C = p->C;
    size_t n = p->n, CD = (size_t)C * d;
    const double *W = theta, *b = theta + CD;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < p->nblk; k++) {
        size_t r0 = (size_t)k * p->rows, r1 = r0 + p->rows < n ? r0 + p->rows : n;
        int rows = (int)(r1 - r0);
        double *z = p->z + r0 * C;
        double loss = 0, *gb = p->gb + (size_t)k * C;
        for (int c = 0; c < C; c++) gb[c] = 0;
        if (rows > 0) {
            const double *Xb = p->X + r0 * d;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, C, d, 1.0, Xb, d, W, d, 0.0, z, C);
            for (int i = 0; i < rows; i++) {
                double *zi = z + (size_t)i * C;
                double mx = -INFINITY, sum = 0, e[C];  // NOLINT(clang-analyzer-core.VLASize): C is the class count, >= 2 (logreg_fit)
                for (int c = 0; c < C; c++) {
                    e[c] = zi[c] + b[c];
                    if (e[c] > mx) mx = e[c];
                }
                for (int c = 0; c < C; c++) sum += exp(e[c] - mx);
                int yi = p->y[r0 + i];
                // cppcheck-suppress [invalidFunctionArg, uninitvar] ; sum >= 1 (the maximum adds exp(0)); e[] is filled above
                loss += log(sum) + mx - e[yi];
                for (int c = 0; c < C; c++) {
                    double r = (exp(e[c] - mx) / sum - (c == yi)) / (double)n;
                    zi[c] = r;
                    gb[c] += r;
                }
            }
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, d, rows, 1.0, z, C, Xb, d, 0.0, p->gw + (size_t)k * CD, d);
        } else {
            memset(p->gw + (size_t)k * CD, 0, CD * sizeof(double));
        }
        p->loss[k] = loss;
    }
    double loss = 0, reg = 0;
    for (int k = 0; k < p->nblk; k++) loss += p->loss[k];
#pragma omp parallel for schedule(static)
    for (long j = 0; j < (long)CD; j++) {
        double g = 0;
        for (int k = 0; k < p->nblk; k++) g += p->gw[(size_t)k * CD + j];
        grad[j] = g + p->lambda * p->pen[j % d] * W[j];
    }
    // In index order, not an OpenMP reduction (whose order follows the threads'
    // timing): the line search and the stop compare these values.
    for (size_t j = 0; j < CD; j++) reg += p->pen[j % d] * W[j] * W[j];
    for (int c = 0; c < C; c++) {
        double g = 0;
        for (int k = 0; k < p->nblk; k++) g += p->gb[(size_t)k * C + c];
        grad[CD + c] = g;
    }
    return loss / (double)n + 0.5 * p->lambda * reg;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double max_abs(const double *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// The largest entry of the gradient g mapped by to_W (d x d: g_W = g_V to_W, see
// logreg_fit); gw is scratch [classes * (d + 1)].
static double mapped_grad_max(const double *g, const double *to_W, double *gw, int classes, int d) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, classes, d, d, 1.0, g, d, to_W, d, 0.0, gw, d);
    memcpy(gw + (size_t)classes * d, g + (size_t)classes * d, classes * sizeof(double));
    return max_abs(gw, (size_t)classes * (d + 1));
}

// L-BFGS on p's objective from theta. Converged when the largest entry of the
// mapped gradient is below tol; *grad_max gets that entry where it stopped
// (above tol: the iteration cap, or a line search that found no decrease).
static int lbfgs(LogReg *p_, double *theta, const double *to_W, int max_iter, double tol, double *grad_max) {
    enum { M = 10 };  // L-BFGS memory
    LogReg p = *p_;
    int d = p.d, classes = p.C;
    size_t P = (size_t)classes * (d + 1);
    double *gw = xmalloc(P * sizeof(double), "gradient");
    double *S = xmalloc(M * P * sizeof(double), "L-BFGS s"), *Y = xmalloc(M * P * sizeof(double), "L-BFGS y");
    double *g = xmalloc(P * sizeof(double), "gradient"), *gn = xmalloc(P * sizeof(double), "gradient");
    double *dir = xmalloc(P * sizeof(double), "direction"), *xn = xmalloc(P * sizeof(double), "trial point");
    double rho[M], alpha[M];
    int hist = 0, newest = -1, it;
    double f = logreg_value_grad(&p, theta, g);
    for (it = 0; it < max_iter; it++) {
        if (mapped_grad_max(g, to_W, gw, classes, d) < tol) break;
        // Two-loop recursion: dir = -H g.
        memcpy(dir, g, P * sizeof(double));
        for (int h = 0; h < hist; h++) {
            int j = (newest - h + M) % M;
            alpha[j] = rho[j] * dot(S + j * P, dir, P);
            cblas_daxpy((int)P, -alpha[j], Y + j * P, 1, dir, 1);
        }
        double gamma = hist ? 1.0 / (rho[newest] * dot(Y + newest * P, Y + newest * P, P)) : 1.0 / fmax(1.0, sqrt(dot(g, g, P)));
        cblas_dscal((int)P, gamma, dir, 1);
        for (int h = hist - 1; h >= 0; h--) {
            int j = (newest - h + M) % M;
            double beta = rho[j] * dot(Y + j * P, dir, P);
            cblas_daxpy((int)P, alpha[j] - beta, S + j * P, 1, dir, 1);
        }
        cblas_dscal((int)P, -1.0, dir, 1);
        double gd = dot(g, dir, P);
        if (!(gd < 0)) {  // not a descent direction: restart from steepest descent
            hist = 0;
            double scale = 1.0 / fmax(1.0, sqrt(dot(g, g, P)));
            for (size_t i = 0; i < P; i++) dir[i] = -g[i] * scale;
            gd = dot(g, dir, P);
        }
        // Backtracking line search (Armijo).
        double t = 1.0, fn = f;
        int ok = 0;
        for (int ls = 0; ls < 40 && !ok; ls++, t *= 0.5) {  // NOLINT(cert-flp30-c): ls counts the iterations; t is only the halved step
            for (size_t i = 0; i < P; i++) xn[i] = theta[i] + t * dir[i];
            fn = logreg_value_grad(&p, xn, gn);
            ok = fn <= f + 1e-4 * t * gd;
        }
        if (!ok) break;
        int slot = (newest + 1) % M;
        for (size_t i = 0; i < P; i++) {
            S[slot * P + i] = xn[i] - theta[i];
            Y[slot * P + i] = gn[i] - g[i];
        }
        double sy = dot(S + slot * P, Y + slot * P, P);
        if (sy > 1e-14) {
            rho[slot] = 1.0 / sy;
            newest = slot;
            if (hist < M) hist++;
        } else {
            hist = 0;  // the slot may have held a pair in use: restart the memory
        }
        double drop = f - fn;
        memcpy(theta, xn, P * sizeof(double));
        memcpy(g, gn, P * sizeof(double));
        f = fn;
        if (drop <= 1e-15 * fmax(1.0, fabs(f))) break;
    }
    *grad_max = mapped_grad_max(g, to_W, gw, classes, d);  // also covers a fit that converged on its last iteration
    xfree(gw);
    xfree(S);
    xfree(Y);
    xfree(g);
    xfree(gn);
    xfree(dir);
    xfree(xn);
    return it;
}

// dsyev from the LAPACK inside OpenBLAS (column-major).
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
                   const int *lwork, int *info);

// The objective is solved exactly, but in better-conditioned coordinates: with
// the second moments X^T X / n = U diag(e) U^T and T = U diag(s), s_k =
// 1 / sqrt(e_k + lambda), the data Z = X T and weights V = W T^-T (W = V T^T)
// give the same logits, and the penalty becomes sum_k s_k^2 ||V[:, k]||^2. Each
// direction then has curvature between about min(1, c) and max(1, c) (c: the
// softmax curvature) instead of spanning the eigenvalues of X^T X / n.
int logreg_fit(const double *X, const int32_t *y, size_t n, int d, int classes, double lambda, double *theta, int max_iter,
               double tol, double *grad_max) {
    double *E = xmalloc((size_t)d * d * sizeof(double), "second moments"), *e = xmalloc(d * sizeof(double), "eigenvalues");
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)n, 1.0 / (double)n, X, d, 0.0, E, d);
    int info = 0;
    // dsyev makes thousands of small BLAS calls. Inside an active parallel region
    // OpenBLAS runs them on the calling thread instead of waking the pool for each
    // (which made a 784-dim decomposition take seconds on a busy machine).
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        {
            int lwork = -1;
            double wq;
            dsyev_("V", "L", &d, E, &d, e, &wq, &lwork, &info);  // row-major upper = column-major lower
            lwork = (int)wq;
            double *work = xmalloc((size_t)(lwork > 1 ? lwork : 1) * sizeof(double), "dsyev work");
            dsyev_("V", "L", &d, E, &d, e, work, &lwork, &info);
            xfree(work);
        }
    }
    if (info != 0) fatal("linear probe: eigen-decomposition of the feature moments failed (dsyev info %d)", info);
    // Row k of E (row-major) is eigenvector k. T[i][k] = E[k][i] s_k, to_W = T^-1 = diag(1/s) U^T.
    double *T = xmalloc((size_t)d * d * sizeof(double), "preconditioner"), *to_W = xmalloc((size_t)d * d * sizeof(double), "preconditioner");
    double *pen = xmalloc(d * sizeof(double), "penalty weights");
    for (int k = 0; k < d; k++) {
        double sk = 1.0 / sqrt(fmax(e[k], 0.0) + lambda);
        pen[k] = sk * sk;
        for (int i = 0; i < d; i++) {
            T[(size_t)i * d + k] = E[(size_t)k * d + i] * sk;
            to_W[(size_t)k * d + i] = E[(size_t)k * d + i] / sk;
        }
    }
    double *Z = xmalloc(n * d * sizeof(double) + 1, "preconditioned features");
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, d, d, 1.0, X, d, T, d, 0.0, Z, d);
    size_t CD = (size_t)classes * d;
    double *V = xmalloc((CD + classes) * sizeof(double), "weights");
    // V = W T^-T: V[c][k] = sum_i W[c][i] E[k][i] / s_k = (W to_W^T)[c][k]
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, classes, d, d, 1.0, theta, d, to_W, d, 0.0, V, d);
    memcpy(V + CD, theta + CD, classes * sizeof(double));
    LogReg p;
    logreg_init(&p, Z, y, n, d, classes, lambda, pen);
    int it = lbfgs(&p, V, to_W, max_iter, tol, grad_max);
    logreg_release(&p);
    // W = V T^T
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, classes, d, d, 1.0, V, d, T, d, 0.0, theta, d);
    memcpy(theta + CD, V + CD, classes * sizeof(double));
    xfree(E), xfree(e), xfree(T), xfree(to_W), xfree(pen), xfree(Z), xfree(V);
    return it;
}

double logreg_accuracy(const double *X, const int32_t *y, size_t n, int d, int classes, const double *theta) {
    long hits = 0;
    const double *b = theta + (size_t)classes * d;
#pragma omp parallel for schedule(static) reduction(+ : hits)
    for (long i = 0; i < (long)n; i++) {
        int best = 0;
        double bestv = -INFINITY;
        for (int c = 0; c < classes; c++) {
            double z = b[c];
            for (int j = 0; j < d; j++) z += X[(size_t)i * d + j] * theta[(size_t)c * d + j];
            if (z > bestv) bestv = z, best = c;
        }
        hits += best == y[i];
    }
    return 100.0 * hits / (double)(n ? n : 1);
}

// ---- the protocol -----------------------------------------------------------------------

// rows of x standardised with mean / std
static double *standardise(const float *x, size_t n, int d, const double *mean, const double *inv_std) {
    double *out = xmalloc(n * d * sizeof(double) + 1, "standardised features");
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++)
        for (int j = 0; j < d; j++) out[(size_t)i * d + j] = ((double)x[(size_t)i * d + j] - mean[j]) * inv_std[j];
    return out;
}

void linear_probe(const float *train, const int32_t *ytrain, size_t ntrain, const float *test, const int32_t *ytest,
                  size_t ntest, int d, int classes, const double *lambdas, int n_lambdas, double holdout, uint64_t seed,
                  int max_iter, int verbose, ProbeResult *out) {
    memset(out, 0, sizeof *out);
    double *mean = xcalloc(d, sizeof(double), "mean"), *inv_std = xcalloc(d, sizeof(double), "std");
    for (size_t i = 0; i < ntrain; i++)
        for (int j = 0; j < d; j++) mean[j] += train[i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= (double)ntrain;
    for (size_t i = 0; i < ntrain; i++)
        for (int j = 0; j < d; j++) inv_std[j] += (train[i * d + j] - mean[j]) * (train[i * d + j] - mean[j]);
    for (int j = 0; j < d; j++) {
        double sd = sqrt(inv_std[j] / (double)ntrain);
        inv_std[j] = sd > 0 ? 1.0 / sd : 1.0;  // like sklearn's StandardScaler: constant features stay 0
    }
    double *Xtr = standardise(train, ntrain, d, mean, inv_std), *Xte = standardise(test, ntest, d, mean, inv_std);

    // Held-out split of train: a seeded shuffle, the first nval rows are held out.
    size_t nval = (size_t)(holdout * ntrain), nfit = ntrain - nval;
    if (nval == 0 || nfit == 0)
        fatal("linear probe: %zu train rows with holdout %g leave an empty %s split; raise --holdout or use more "
              "train images", ntrain, holdout, nval == 0 ? "held-out" : "fit");
    uint32_t *perm = xmalloc(ntrain * sizeof(uint32_t), "permutation");
    for (size_t i = 0; i < ntrain; i++) perm[i] = (uint32_t)i;
    Rng r;
    rng_seed(&r, seed, 0x9e0be);
    rng_shuffle_u32(&r, perm, ntrain);
    double *Xfit = xmalloc(nfit * d * sizeof(double) + 1, "probe fit split"), *Xval = xmalloc((nval + 1) * d * sizeof(double), "probe held-out split");
    int32_t *yfit = xmalloc(nfit * sizeof(int32_t), "labels"), *yval = xmalloc((nval + 1) * sizeof(int32_t), "labels");
    for (size_t i = 0; i < ntrain; i++) {
        size_t src = perm[i];
        double *dst = i < nval ? Xval + i * d : Xfit + (i - nval) * d;
        memcpy(dst, Xtr + src * d, d * sizeof(double));
        if (i < nval) yval[i] = ytrain[src];
        else yfit[i - nval] = ytrain[src];
    }
    size_t P = (size_t)classes * (d + 1);
    double *theta = xcalloc(P, sizeof(double), "probe weights"), *best = xcalloc(P, sizeof(double), "probe weights");
    // Strong to weak regularisation, each fit warm-started from the previous one.
    int order[16], nl = n_lambdas < 16 ? n_lambdas : 16;
    for (int i = 0; i < nl; i++) order[i] = i;
    for (int i = 0; i < nl; i++)
        for (int j = i + 1; j < nl; j++)
            if (lambdas[order[j]] > lambdas[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    double best_acc = -1;
    out->n_lambdas = nl;
    size_t ngrid = nfit < PROBE_GRID_ROWS ? nfit : PROBE_GRID_ROWS;
    for (int q = 0; q < nl; q++) {
        double lam = lambdas[order[q]], t0 = now_seconds();
        double gmax;
        int it = logreg_fit(Xfit, yfit, ngrid, d, classes, lam, theta, max_iter, 1e-4, &gmax);
        double acc = nval ? logreg_accuracy(Xval, yval, nval, d, classes, theta) : 0;
        if (verbose) fprintf(stderr, "  L2 %-8g held-out top-1 %6.2f  (%zu rows, %d iterations, %.1f s)\n", lam, acc, ngrid, it, now_seconds() - t0);
        if (!(gmax < 1e-4))
            warn("linear probe: the fit with L2 %g stopped unconverged after %d iterations (largest gradient entry "
                 "%.2g, tolerance 1e-4; %s)", lam, it, gmax, it >= max_iter ? "raise --max-iter" : "the line search stalled");
        out->lambdas[q] = lam;
        out->holdout_top1[q] = acc;
        if (acc > best_acc) {
            best_acc = acc;
            out->lambda = lam;
            memcpy(best, theta, P * sizeof(double));
        }
    }
    double t0 = now_seconds();
    out->iters = logreg_fit(Xtr, ytrain, ntrain, d, classes, out->lambda, best, 4 * max_iter, 1e-6, &out->grad_max);
    if (verbose) fprintf(stderr, "  refit on all %zu train rows with L2 %g: %d iterations, %.1f s\n", ntrain, out->lambda, out->iters, now_seconds() - t0);
    if (!(out->grad_max < 1e-6))
        warn("linear probe: the refit stopped unconverged after %d iterations (largest gradient entry %.2g, "
             "tolerance 1e-6; %s)", out->iters, out->grad_max,
             out->iters >= 4 * max_iter ? "raise --max-iter" : "the line search stalled");
    out->train_top1 = logreg_accuracy(Xtr, ytrain, ntrain, d, classes, best);
    out->test_top1 = logreg_accuracy(Xte, ytest, ntest, d, classes, best);
    xfree(mean);
    xfree(inv_std);
    xfree(Xtr);
    xfree(Xte);
    xfree(perm);
    xfree(Xfit);
    xfree(Xval);
    xfree(yfit);
    xfree(yval);
    xfree(theta);
    xfree(best);
}
