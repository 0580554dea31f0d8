// kmeans.c: seeding (k-means++ with triangle-inequality pruning, AFK-MC²),
// Lloyd iterations, and the nearest-centroid assignment.
//
// Assignment: argmin_c ||x-c||^2 = argmin_c (0.5||c||^2 - x.c) on centred data
// (x - mean, c - mean), so the float32 products stay small. Large d: per
// thread, a block of ROWS rows times a tile of KT centroids through a
// single-threaded cblas_sgemm, whose output (ROWS x KT, in L2) is folded into
// a running argmin at once; the n x k matrix never exists. Small d (<= 64):
// a register-blocked kernel, 8 rows x 16 centroids per step, keeps the dot
// products and the running argmin in vector registers. The reported distance
// for the winner is recomputed in float64 from the raw values. In Lloyd's
// later steps (large d), drift bounds skip the rows and centroids that can
// not change (see assign_bounded).
//
// Determinism: no row's result depends on which thread computed it; the centroid sums
// are accumulated per cluster (one thread per cluster) in row order, and
// every other reduction runs over fixed chunks summed in chunk order.
#include "kmeans.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"

#define ROWS 256   // rows per block (large d)
#define KT 512     // centroids per sgemm tile (large d)
#define SMALL_D 64 // d at or below this uses the register-blocked kernel
#define LANES 16
#define PROWS 8    // rows per register block (small d)
#define CHUNK 4096 // rows per fixed reduction chunk

// The 64-byte vectors pass between static inline helpers only, never across a translation
// unit, so the ABI note where AVX-512 is off (NO_NATIVE=1) concerns no real call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16fu __attribute__((vector_size(64), aligned(4)));  // unaligned load
typedef float v8fu __attribute__((vector_size(32), aligned(4)));
typedef double v8d __attribute__((vector_size(64)));

struct KmeansIndex {
    int k, d, kp;      // kp: k rounded up to LANES (padding never wins)
    float *c;          // [k, d] raw centroids
    float *mean;       // [d]
    float *cc;         // [kp, d] centred centroids (large d)
    float *ct;         // [d, kp] centred centroids, transposed (small d)
    float *half;       // [kp] 0.5 ||c - mean||^2; padding +inf
    int nthreads;
    float *scratch;    // per thread: xb [ROWS, d] then g [ROWS, KT]
    size_t scratch_per_thread;
};

KmeansOptions kmeans_defaults(int k) {
    KmeansOptions o = {.k = k, .max_iter = 25, .tol = 1e-4, .seed = 0, .seeding = KMEANS_SEED_AUTO, .chain = 200, .verbose = 0};
    return o;
}

void kmeans_stats_free(KmeansStats *s) {
    xfree(s->objective);
    xfree(s->seconds);
    xfree(s->empty);
    xfree(s->product);
    xfree(s->counts);
    memset(s, 0, sizeof *s);
}

// ---- small vector helpers ---------------------------------------------------

// float64 ||a-b||^2 in 8 lanes, summed in a fixed order.
static double sqdist_f64(const float *a, const float *b, int d) {
    v8d acc = {0};
    int j = 0;
    for (; j + 8 <= d; j += 8) {
        v8d t = __builtin_convertvector(*(const v8fu *)(a + j), v8d) - __builtin_convertvector(*(const v8fu *)(b + j), v8d);
        acc += t * t;
    }
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s += t * t;
    }
    return s;
}

// float32 ||a-b||^2 with 16 lanes (fixed order, so thread-independent).
static float sqdist_f32(const float *a, const float *b, int d) {
    v16f acc = {0};
    int j = 0;
    for (; j + LANES <= d; j += LANES) {
        v16f t = *(const v16fu *)(a + j) - *(const v16fu *)(b + j);
        acc += t * t;
    }
    float s = 0;
    for (int l = 0; l < LANES; l++) s += acc[l];
    for (; j < d; j++) s += (a[j] - b[j]) * (a[j] - b[j]);
    return s;
}

// Lowest value across lanes; ties go to the lowest index.
static inline void lanes_argmin(v16f bv, v16i bi, float *best, int32_t *id) {
    float b = bv[0];
    int32_t i = bi[0];
    for (int l = 1; l < LANES; l++)
        if (bv[l] < b || (bv[l] == b && bi[l] < i)) b = bv[l], i = bi[l];
    *best = b;
    *id = i;
}

static inline v16i iota16(int base) {
    v16i v = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return v + base;
}

// Column means in float64 over fixed chunks of rows.
static void column_mean(const float *x, size_t n, int d, float *mean) {
    size_t nch = (n + CHUNK - 1) / CHUNK;
    double *part = xcalloc(nch * d, sizeof(double), "kmeans mean partials");
#pragma omp parallel for schedule(static)
    for (size_t ch = 0; ch < nch; ch++) {
        double *p = part + ch * d;
        size_t end = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
        for (size_t i = ch * CHUNK; i < end; i++)
            for (int j = 0; j < d; j++) p[j] += x[i * d + j];
    }
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (size_t ch = 0; ch < nch; ch++) s += part[ch * d + j];
        mean[j] = (float)(s / (double)(n ? n : 1));
    }
    xfree(part);
}

// ---- the index --------------------------------------------------------------

static void index_set_centroids(KmeansIndex *ix, const float *centroids) {
    int k = ix->k, d = ix->d, kp = ix->kp;
    memcpy(ix->c, centroids, (size_t)k * d * sizeof(float));
    for (int c = 0; c < kp; c++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
            float v = c < k ? centroids[(size_t)c * d + j] - ix->mean[j] : 0.0f;
            if (d > SMALL_D) ix->cc[(size_t)c * d + j] = v;
            else ix->ct[(size_t)j * kp + c] = v;
            s += (double)v * v;
        }
        ix->half[c] = c < k ? (float)(0.5 * s) : INFINITY;
    }
}

KmeansIndex *kmeans_index_new(const float *centroids, int k, int d, const float *mean) {
    if (k < 1 || d < 1) fatal("kmeans_index_new: need k >= 1 and d >= 1 (got k=%d, d=%d)", k, d);
    KmeansIndex *ix = xcalloc(1, sizeof *ix, "kmeans index");
    ix->k = k;
    ix->d = d;
    ix->kp = (k + LANES - 1) / LANES * LANES;
    ix->c = xmalloc((size_t)k * d * sizeof(float), "centroids");
    ix->mean = xcalloc(d, sizeof(float), "centroid mean");
    if (mean) memcpy(ix->mean, mean, d * sizeof(float));
    if (d > SMALL_D) ix->cc = xcalloc((size_t)ix->kp * d, sizeof(float), "centred centroids");
    else ix->ct = xcalloc((size_t)ix->kp * d, sizeof(float), "centred centroids (transposed)");
    ix->half = xmalloc(ix->kp * sizeof(float), "centroid half norms");
    ix->nthreads = kernel_max_threads();
    ix->scratch_per_thread = align_up((size_t)ROWS * d + (size_t)ROWS * KT, 16);
    ix->scratch = xmalloc(ix->nthreads * ix->scratch_per_thread * sizeof(float), "kmeans assign scratch");
    index_set_centroids(ix, centroids);
    return ix;
}

void kmeans_index_free(KmeansIndex *ix) {
    if (!ix) return;
    xfree(ix->c);
    xfree(ix->mean);
    xfree(ix->cc);
    xfree(ix->ct);
    xfree(ix->half);
    xfree(ix->scratch);
    xfree(ix);
}

// Small d: rows xb [nr, d] (centred) -> argmin ids. PROWS rows at a time, each
// step 16 centroids: acc[p] += ct[j, c0:c0+16] * x[p, j].
static void assign_small(const KmeansIndex *ix, const float *xb, int nr, int32_t *bid) {
    const int d = ix->d, kp = ix->kp;
    for (int r0 = 0; r0 < nr; r0 += PROWS) {
        float xp[PROWS * SMALL_D] __attribute__((aligned(64)));
        int np = nr - r0 < PROWS ? nr - r0 : PROWS;
        memcpy(xp, xb + (size_t)r0 * d, (size_t)np * d * sizeof(float));
        memset(xp + np * d, 0, (size_t)(PROWS - np) * d * sizeof(float));
        v16f bv[PROWS];
        v16i bi[PROWS];
        for (int p = 0; p < PROWS; p++) {
            bv[p] = (v16f){0} + INFINITY;
            bi[p] = (v16i){0};
        }
        for (int c0 = 0; c0 < kp; c0 += LANES) {
            v16f acc[PROWS];
#pragma GCC unroll 8
            for (int p = 0; p < PROWS; p++) acc[p] = (v16f){0};
            const float *ct = ix->ct + c0;
            for (int j = 0; j < d; j++) {
                v16f cv = *(const v16f *)(ct + (size_t)j * kp);
#pragma GCC unroll 8
                for (int p = 0; p < PROWS; p++) acc[p] += cv * xp[p * d + j];
            }
            v16f h = *(const v16f *)(ix->half + c0);
            v16i idx = iota16(c0);
#pragma GCC unroll 8
            for (int p = 0; p < PROWS; p++) {
                v16f v = h - acc[p];
                v16i m = v < bv[p];
                bv[p] = (v16f)(((v16i)v & m) | ((v16i)bv[p] & ~m));
                bi[p] = (idx & m) | (bi[p] & ~m);
            }
        }
        for (int p = 0; p < np; p++) {
            float b;
            lanes_argmin(bv[p], bi[p], &b, &bid[r0 + p]);
        }
    }
}

// Large d: fold a tile g [nr, kt] of products into the running argmin.
static void argmin_tile(const float *g, int nr, int kt, const float *half, int base, float *best, int32_t *bid) {
    for (int r = 0; r < nr; r++) {
        const float *gr = g + (size_t)r * kt;
        v16f bv = (v16f){0} + INFINITY;
        v16i bi = {0};
        for (int c = 0; c < kt; c += LANES) {
            v16f v = *(const v16f *)(half + c) - *(const v16f *)(gr + c);
            v16i m = v < bv;
            bv = (v16f)(((v16i)v & m) | ((v16i)bv & ~m));
            bi = (iota16(base + c) & m) | (bi & ~m);
        }
        float b;
        int32_t i;
        lanes_argmin(bv, bi, &b, &i);
        if (b < best[r]) best[r] = b, bid[r] = i;
    }
}

// The same, also tracking the second-lowest score (for Lloyd's bounds).
static void argmin2_tile(const float *g, int nr, int kt, const float *half, int base, float *best, float *second,
                         int32_t *bid) {
    for (int r = 0; r < nr; r++) {
        const float *gr = g + (size_t)r * kt;
        v16f b1 = (v16f){0} + INFINITY, b2 = b1;
        v16i bi = {0};
        for (int c = 0; c < kt; c += LANES) {
            v16f v = *(const v16f *)(half + c) - *(const v16f *)(gr + c);
            v16i m = v < b1, m2 = v < b2;
            v16f lo2 = (v16f)(((v16i)v & m2) | ((v16i)b2 & ~m2));          // min(b2, v)
            b2 = (v16f)(((v16i)b1 & m) | ((v16i)lo2 & ~m));                  // v < b1 ? b1 : min(b2, v)
            b1 = (v16f)(((v16i)v & m) | ((v16i)b1 & ~m));
            bi = (iota16(base + c) & m) | (bi & ~m);
        }
        float b;
        int32_t i;
        lanes_argmin(b1, bi, &b, &i);
        float s2 = INFINITY;
        for (int l = 0; l < LANES; l++) {
            s2 = fminf(s2, b2[l]);
            if (bi[l] != i) s2 = fminf(s2, b1[l]);
        }
        if (b < best[r]) second[r] = fminf(best[r], s2), best[r] = b, bid[r] = i;
        else second[r] = fminf(second[r], b);
    }
}

// Shared by kmeans_index_assign and the first Lloyd step. prev (optional):
// keep the previous centroid when it is exactly as close as the new winner.
// dist32/dist64 optional.
static void assign_rows(KmeansIndex *ix, const float *x, size_t n, const int32_t *prev, int32_t *ids, float *dist32,
                        double *dist64) {
    const int d = ix->d, kp = ix->kp;
    const size_t nblocks = (n + ROWS - 1) / ROWS;
#pragma omp parallel num_threads(ix->nthreads)
    {
        float *xb = ix->scratch + kernel_thread_num() * ix->scratch_per_thread;
        float *g = xb + (size_t)ROWS * d;
        float best[ROWS];
#pragma omp for schedule(dynamic, 1)
        for (size_t b = 0; b < nblocks; b++) {
            size_t r0 = b * ROWS;
            int nr = n - r0 < ROWS ? (int)(n - r0) : ROWS;
            for (int r = 0; r < nr; r++)
                for (int j = 0; j < d; j++) xb[(size_t)r * d + j] = x[(r0 + r) * d + j] - ix->mean[j];
            int32_t *bid = ids + r0;
            if (d <= SMALL_D) {
                assign_small(ix, xb, nr, bid);
            } else {
                for (int r = 0; r < nr; r++) best[r] = INFINITY, bid[r] = 0;
                for (int t0 = 0; t0 < kp; t0 += KT) {
                    int kt = kp - t0 < KT ? kp - t0 : KT;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kt, d, 1.0f, xb, d, ix->cc + (size_t)t0 * d, d,
                                0.0f, g, kt);
                    argmin_tile(g, nr, kt, ix->half + t0, t0, best, bid);
                }
            }
            for (int r = 0; r < nr; r++) {
                const float *xr = x + (r0 + r) * d;
                double e = sqdist_f64(xr, ix->c + (size_t)bid[r] * d, d);
                if (prev && prev[r0 + r] != bid[r]) {
                    double ep = sqdist_f64(xr, ix->c + (size_t)prev[r0 + r] * d, d);
                    if (ep <= e) e = ep, bid[r] = prev[r0 + r];
                }
                if (dist32) dist32[r0 + r] = (float)e;
                if (dist64) dist64[r0 + r] = e;
            }
        }
    }
}

// ---- Lloyd's assignment with drift bounds (large d) ---------------------------
// lower[i] bounds from below the distance (not squared) from row i to every
// centroid except its own. After an update that moves centroid j by drift[j],
// a row whose exact distance u to its own centroid satisfies
// lower[i] - drift[j] > u can not move to j. With the centroids sorted by
// drift (descending), the centroids a row must check are a prefix of that
// order; rows are grouped by prefix length, and each group is one product
// against the first kt sorted centroids. Rows with an empty prefix keep their
// centroid untouched. The new lower[i] is the smaller of the checked
// runner-up (less the float32 error bound) and lower[i] - (largest unchecked drift).
// Exact: every result equals full Lloyd's up to float32 near-ties.
typedef struct {
    float *lower;      // [n]
    float *dsort;      // [k + 1] drifts sorted descending; dsort[k] = 0
    int32_t *perm;     // [kp] sorted position -> centroid id (padding -> 0, never wins)
    float *ccs;        // [kp, d] centred centroids in sorted order
    float *halfs;      // [kp] their half norms (padding +inf)
    uint32_t *order;   // [n] active rows grouped by bucket
    int32_t *bucket;   // [n] ceil(prefix / 16); 0 = untouched
} Bounds;

static Bounds bounds_new(size_t n, int k, int kp, int d) {
    Bounds b;
    b.lower = xmalloc(n * sizeof(float), "lower bounds");
    for (size_t i = 0; i < n; i++) b.lower[i] = -INFINITY;
    b.dsort = xcalloc(k + 1, sizeof(float), "sorted drift");
    b.perm = xcalloc(kp, sizeof(int32_t), "drift order");
    b.ccs = xcalloc((size_t)kp * d, sizeof(float), "sorted centroids");
    b.halfs = xmalloc(kp * sizeof(float), "sorted half norms");
    b.order = xmalloc(n * sizeof(uint32_t), "active rows");
    b.bucket = xmalloc(n * sizeof(int32_t), "row buckets");
    return b;
}

static void bounds_free(Bounds *b) {
    xfree(b->lower), xfree(b->dsort), xfree(b->perm), xfree(b->ccs), xfree(b->halfs), xfree(b->order), xfree(b->bucket);
}

static const double *sort_drift;
static int by_drift_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (sort_drift[i] != sort_drift[j]) return sort_drift[i] > sort_drift[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

// drift [k] (NULL: none yet) -> sorted order and the permuted centroids of ix.
static void bounds_sort(Bounds *b, const KmeansIndex *ix, const double *drift) {
    int k = ix->k, kp = ix->kp, d = ix->d;
    for (int c = 0; c < k; c++) b->perm[c] = c;
    if (drift) {
        sort_drift = drift;
        qsort(b->perm, k, sizeof(int32_t), by_drift_desc);
    }
    for (int c = 0; c < k; c++) b->dsort[c] = drift ? (float)(drift[b->perm[c]] * (1 + 1e-6)) : 0.0f;
    b->dsort[k] = 0;
    for (int c = 0; c < kp; c++) {
        int src = c < k ? b->perm[c] : k;  // padding rows of cc are zero, half +inf
        memcpy(b->ccs + (size_t)c * d, ix->cc + (size_t)src * d, d * sizeof(float));
        b->halfs[c] = ix->half[src];
    }
}

// *work_out: the share of the full n x k product that was computed.
static void assign_bounded(KmeansIndex *ix, Bounds *B, const float *x, size_t n, const int32_t *prev, int32_t *ids,
                           double *dist, double *work_out) {
    const int d = ix->d, k = ix->k, kp = ix->kp, nbk = kp / LANES;
    float cmax = 0;
    for (int c = 0; c < k; c++) cmax = fmaxf(cmax, 2 * ix->half[c]);
    const double err = 4.0 * d * ldexp(1.0, -24);
    // 1. Exact distance to the own centroid; the prefix each row must check.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        int p = k;
        if (prev) {
            ids[i] = prev[i];
            dist[i] = sqdist_f64(x + i * d, ix->c + (size_t)prev[i] * d, d);
            float s = B->lower[i] - (float)sqrt(dist[i]);
            if (s > 0) {  // p = #{j : dsort[j] >= s}
                int lo = 0, hi = k;
                while (lo < hi) {
                    int mid = (lo + hi) / 2;
                    if (B->dsort[mid] >= s) lo = mid + 1;
                    else hi = mid;
                }
                p = lo;
            }
        }
        B->bucket[i] = (p + LANES - 1) / LANES;
        if (p == 0) B->lower[i] -= B->dsort[0];
    }
    // 2. Group the active rows by bucket (stable: row order within a bucket).
    size_t *start = xcalloc(nbk + 2, sizeof(size_t), "bucket starts");
    for (size_t i = 0; i < n; i++) start[B->bucket[i] + 1]++;
    for (int t = 0; t <= nbk; t++) start[t + 1] += start[t];
    for (size_t i = 0; i < n; i++) B->order[start[B->bucket[i]]++] = (uint32_t)i;
    size_t first = 0;  // rows of bucket 0 come first and need nothing
    for (size_t i = 0; i < n; i++) first += B->bucket[i] == 0;
    size_t nact = n - first, nblocks = (nact + ROWS - 1) / ROWS;
    xfree(start);
    // 3. One product per block against its longest prefix.
    size_t work = 0;
#pragma omp parallel num_threads(ix->nthreads) reduction(+ : work)
    {
        float *xb = ix->scratch + kernel_thread_num() * ix->scratch_per_thread;
        float *g = xb + (size_t)ROWS * d;
        float best[ROWS], second[ROWS], xn[ROWS];
        int32_t bid[ROWS];
#pragma omp for schedule(dynamic, 1)
        for (size_t blk = 0; blk < nblocks; blk++) {
            const uint32_t *rows = B->order + first + blk * ROWS;
            int nr = nact - blk * ROWS < ROWS ? (int)(nact - blk * ROWS) : ROWS;
            int kt_blk = B->bucket[rows[nr - 1]] * LANES;
            work += (size_t)nr * kt_blk;
            for (int r = 0; r < nr; r++) {
                const float *xr = x + (size_t)rows[r] * d;
                float *xa = xb + (size_t)r * d, sq = 0;
                for (int j = 0; j < d; j++) {
                    xa[j] = xr[j] - ix->mean[j];
                    sq += xa[j] * xa[j];
                }
                xn[r] = sq;
                best[r] = second[r] = INFINITY, bid[r] = 0;
            }
            for (int t0 = 0; t0 < kt_blk; t0 += KT) {
                int kt = kt_blk - t0 < KT ? kt_blk - t0 : KT;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kt, d, 1.0f, xb, d, B->ccs + (size_t)t0 * d, d, 0.0f,
                            g, kt);
                argmin2_tile(g, nr, kt, B->halfs + t0, t0, best, second, bid);
            }
            double unchecked = kt_blk < k ? B->dsort[kt_blk] : INFINITY;
            for (int r = 0; r < nr; r++) {
                size_t i = rows[r];
                int32_t b1 = B->perm[bid[r]], own = prev ? prev[i] : -1, win;
                double e1 = b1 == own ? dist[i] : sqdist_f64(x + i * d, ix->c + (size_t)b1 * d, d);
                double sec = xn[r] + 2.0 * second[r] - err * (xn[r] + cmax), other;
                if (own >= 0 && dist[i] <= e1) {  // keep own (ties too)
                    win = own;
                    other = b1 == own ? sec : e1;
                } else {
                    win = b1;
                    other = own >= 0 ? fmin(sec, dist[i]) : sec;
                    dist[i] = e1;
                }
                ids[i] = win;
                double lo = other > 0 ? sqrt(other) : 0;
                if (unchecked < INFINITY) lo = fmin(lo, (double)B->lower[i] - unchecked);
                B->lower[i] = (float)(lo * (1 - 1e-6));
            }
        }
    }
    if (work_out) *work_out = (double)work / ((double)n * kp);
}

void kmeans_index_assign(KmeansIndex *ix, const float *x, size_t n, int32_t *ids, float *dist) {
    assign_rows(ix, x, n, NULL, ids, dist, NULL);
}

// Float64 throughout: blocks of rows times all centroids through dgemm, the
// argmin, then the winner's distance recomputed directly. Block sums are
// added in block order.
double kmeans_objective_f64(const float *x, size_t n, int d, const float *c, int k, int32_t *ids) {
    enum { EB = 128 };
    double *cd = xmalloc((size_t)k * d * sizeof(double), "f64 centroids");
    double *cn = xmalloc(k * sizeof(double), "f64 centroid norms");
    for (int j = 0; j < k; j++) {
        double s = 0;
        for (int t = 0; t < d; t++) {
            cd[(size_t)j * d + t] = c[(size_t)j * d + t];
            s += cd[(size_t)j * d + t] * cd[(size_t)j * d + t];
        }
        cn[j] = s;
    }
    size_t nb = (n + EB - 1) / EB;
    double *part = xcalloc(nb ? nb : 1, sizeof(double), "objective partials");
#pragma omp parallel
    {
        double *xd = xmalloc((size_t)EB * d * sizeof(double), "f64 rows");
        double *g = xmalloc((size_t)EB * k * sizeof(double), "f64 products");
#pragma omp for schedule(dynamic, 1)
        for (size_t b = 0; b < nb; b++) {
            size_t r0 = b * EB;
            int nr = n - r0 < EB ? (int)(n - r0) : EB;
            for (size_t t = 0; t < (size_t)nr * d; t++) xd[t] = x[r0 * d + t];
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, k, d, 1.0, xd, d, cd, d, 0.0, g, k);
            double s = 0;
            for (int r = 0; r < nr; r++) {
                double best = INFINITY;
                int bi = 0;
                for (int j = 0; j < k; j++) {
                    double v = cn[j] - 2.0 * g[(size_t)r * k + j];
                    if (v < best) best = v, bi = j;
                }
                s += sqdist_f64(x + (r0 + r) * d, c + (size_t)bi * d, d);
                if (ids) ids[r0 + r] = bi;
            }
            part[b] = s;
        }
        xfree(xd);
        xfree(g);
    }
    double s = 0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    xfree(part);
    xfree(cd);
    xfree(cn);
    return s / (double)(n ? n : 1);
}

// ---- seeding ----------------------------------------------------------------

// Draw index i with probability w[i] / total, using fixed chunk sums.
static size_t sample_weighted(Rng *r, const double *w, const double *chunk_sum, size_t n) {
    size_t nch = (n + CHUNK - 1) / CHUNK;
    double total = 0;
    for (size_t ch = 0; ch < nch; ch++) total += chunk_sum[ch];
    if (!(total > 0)) return rng_below(r, (uint32_t)n);
    double u = rng_uniform(r) * total;
    size_t ch = 0;
    for (; ch + 1 < nch && u >= chunk_sum[ch]; ch++) u -= chunk_sum[ch];
    size_t i = ch * CHUNK, end = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n, last = i;
    for (; i < end; i++) {
        if (w[i] > 0) last = i;
        if (u < w[i]) return i;
        u -= w[i];
    }
    return last;  // rounding ran off the end: the last row with weight
}

// k-means++ (D^2 sampling). Row i is re-measured against the new centroid
// only if neither bound rules it out: the triangle inequality
// (||c_new - c_a(i)||^2 >= 4 mind[i]) or the norm bound
// ((||x_i - m|| - ||c_new - m||)^2 >= mind[i], m the data mean). Both read
// only small per-row arrays, so later rounds touch few rows.
static void seed_plusplus(const float *x, size_t n, int d, int k, Rng *rng, float *cent) {
    double *mind = xmalloc(n * sizeof(double), "k-means++ distances");
    int32_t *a = xcalloc(n, sizeof(int32_t), "k-means++ owners");
    float *norm = xmalloc(n * sizeof(float), "k-means++ row norms");
    float *mean = xmalloc(d * sizeof(float), "mean");
    size_t nch = (n + CHUNK - 1) / CHUNK;
    double *csum = xcalloc(nch, sizeof(double), "k-means++ chunk sums");
    float *dcc = xmalloc(k * sizeof(float), "k-means++ centroid distances");
    column_mean(x, n, d, mean);
    size_t first = rng_below(rng, (uint32_t)n);
    memcpy(cent, x + first * d, d * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        mind[i] = sqdist_f32(x + i * d, cent, d);
        norm[i] = sqrtf(sqdist_f32(x + i * d, mean, d));
    }
    for (int c = 1; c < k; c++) {
#pragma omp parallel for schedule(static)
        for (size_t ch = 0; ch < nch; ch++) {
            size_t end = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
            double s = 0;
            for (size_t i = ch * CHUNK; i < end; i++) s += mind[i];
            csum[ch] = s;
        }
        size_t pick = sample_weighted(rng, mind, csum, n);
        float *cn = cent + (size_t)c * d;
        memcpy(cn, x + pick * d, d * sizeof(float));
        double pn = norm[pick];
#pragma omp parallel for schedule(static)
        for (int j = 0; j < c; j++) dcc[j] = sqdist_f32(cn, cent + (size_t)j * d, d);
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t ch = 0; ch < nch; ch++) {
            size_t end = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
            for (size_t i = ch * CHUNK; i < end; i++) {
                double dn = norm[i] - pn;
                if (dcc[a[i]] >= 4.0 * mind[i] || dn * dn >= mind[i]) continue;
                double e = sqdist_f32(x + i * d, cn, d);
                if (e < mind[i]) mind[i] = e, a[i] = c;
            }
        }
    }
    xfree(mind);
    xfree(a);
    xfree(norm);
    xfree(mean);
    xfree(csum);
    xfree(dcc);
}

// AFK-MC² (Bachem et al. 2016): proposals from q(x) = 0.5 d(x,c1)^2/sum + 0.5/n,
// a Metropolis chain of length m per centroid. The m proposals of a chain are
// independent of its state, so their distances to the chosen centroids come
// from one product per chain (fixed-shape sgemm calls, thread-independent).
static void seed_afkmc2(const float *x, size_t n, int d, int k, int m, Rng *rng, float *cent) {
    if (m < 1) m = 200;
    float *mean = xmalloc(d * sizeof(float), "mean");
    column_mean(x, n, d, mean);
    double *q = xmalloc(n * sizeof(double), "afkmc2 proposal");
    size_t nch = (n + CHUNK - 1) / CHUNK;
    double *csum = xcalloc(nch, sizeof(double), "afkmc2 chunk sums");
    float *cc = xmalloc((size_t)k * d * sizeof(float), "afkmc2 centred centroids");
    float *cn = xmalloc(k * sizeof(float), "afkmc2 centroid norms");
    float *y = xmalloc((size_t)m * d * sizeof(float), "afkmc2 proposals");
    float *yn = xmalloc(m * sizeof(float), "afkmc2 proposal norms");
    float *g = xmalloc((size_t)m * k * sizeof(float), "afkmc2 products");
    size_t *cand = xmalloc(m * sizeof(size_t), "afkmc2 candidates");
    double *dy = xmalloc(m * sizeof(double), "afkmc2 candidate distances");

    size_t first = rng_below(rng, (uint32_t)n);
    memcpy(cent, x + first * d, d * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) q[i] = sqdist_f32(x + i * d, cent, d);
    double total = 0;
    for (size_t i = 0; i < n; i++) total += q[i];
    for (size_t i = 0; i < n; i++) q[i] = (total > 0 ? 0.5 * q[i] / total : 0) + (total > 0 ? 0.5 : 1.0) / (double)n;
    for (size_t ch = 0; ch < nch; ch++) {
        size_t end = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
        double s = 0;
        for (size_t i = ch * CHUNK; i < end; i++) s += q[i];
        csum[ch] = s;
    }
    double s0 = 0;
    for (int j = 0; j < d; j++) {
        cc[j] = cent[j] - mean[j];
        s0 += (double)cc[j] * cc[j];
    }
    cn[0] = (float)s0;
    enum { MB = 32 };  // candidates per sgemm call
    for (int c = 1; c < k; c++) {
        for (int t = 0; t < m; t++) cand[t] = sample_weighted(rng, q, csum, n);
#pragma omp parallel for schedule(static)
        for (int t = 0; t < m; t++) {
            double s = 0;
            for (int j = 0; j < d; j++) {
                float v = x[cand[t] * d + j] - mean[j];
                y[(size_t)t * d + j] = v;
                s += (double)v * v;
            }
            yn[t] = (float)s;
        }
#pragma omp parallel for schedule(static)
        for (int t0 = 0; t0 < m; t0 += MB) {
            int mb = m - t0 < MB ? m - t0 : MB;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mb, c, d, 1.0f, y + (size_t)t0 * d, d, cc, d, 0.0f,
                        g + (size_t)t0 * c, c);
            for (int t = t0; t < t0 + mb; t++) {
                float b = INFINITY;
                for (int j = 0; j < c; j++) {
                    float e = yn[t] + cn[j] - 2.0f * g[(size_t)t * c + j];
                    if (e < b) b = e;
                }
                dy[t] = b > 0 ? b : 0;
            }
        }
        size_t cur = cand[0];
        double dcur = dy[0];
        for (int t = 1; t < m; t++) {
            double num = dy[t] * q[cur], den = dcur * q[cand[t]];
            if (den == 0 || num / den > rng_uniform(rng)) cur = cand[t], dcur = dy[t];
        }
        memcpy(cent + (size_t)c * d, x + cur * d, d * sizeof(float));
        double s = 0;
        for (int j = 0; j < d; j++) {
            cc[(size_t)c * d + j] = cent[(size_t)c * d + j] - mean[j];
            s += (double)cc[(size_t)c * d + j] * cc[(size_t)c * d + j];
        }
        cn[c] = (float)s;
    }
    xfree(mean);
    xfree(q);
    xfree(csum);
    xfree(cc);
    xfree(cn);
    xfree(y);
    xfree(yn);
    xfree(g);
    xfree(cand);
    xfree(dy);
}

KmeansSeeding kmeans_seeding_used(const KmeansOptions *o, size_t n, int d) {
    if (o->seeding != KMEANS_SEED_AUTO) return o->seeding;
    // k-means++ costs about n*k*d; AFK-MC2 about chain*k^2*d/2 (each chain step
    // measures against every centroid placed so far), so it pays only for large
    // n*k*d and k < 2n/chain (at n = 196k, K = 1024 it wins; at K = 8192 it loses).
    int chain = o->chain > 0 ? o->chain : 200;
    int afk_cheaper = (double)chain * o->k < 2.0 * (double)n;
    return (double)n * o->k * d <= 2e10 || !afk_cheaper ? KMEANS_SEED_PLUSPLUS : KMEANS_SEED_AFKMC2;
}

void kmeans_seed(const float *x, size_t n, int d, const KmeansOptions *o, float *centroids) {
    if (n < (size_t)o->k) fatal("k-means: %zu rows cannot make %d clusters; sample more patches or lower k", n, o->k);
    if (n > UINT32_MAX) fatal("k-means: %zu rows exceeds the 2^32 row limit of the sampler", n);
    Rng rng;
    rng_seed(&rng, o->seed, 0x6b6d65616e73ull);  // stream "kmeans"
    if (kmeans_seeding_used(o, n, d) == KMEANS_SEED_AFKMC2) seed_afkmc2(x, n, d, o->k, o->chain, &rng, centroids);
    else seed_plusplus(x, n, d, o->k, &rng, centroids);
}

// ---- Lloyd ----------------------------------------------------------------

// Empty clusters, farthest-first: candidates are the rows farthest from their
// centroids (ties: lowest row index). Each empty centroid moves onto the
// candidate farthest from every centroid placed so far (so duplicated rows are
// not picked twice), skipping rows whose cluster would be left empty.
// Returns how many clusters were empty.
static const double *sort_dist;
static int by_dist_desc(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (sort_dist[i] != sort_dist[j]) return sort_dist[i] > sort_dist[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

static int reseed_empty(const float *x, size_t n, int d, int k, float *cent, int32_t *ids, double *dist, int32_t *count,
                        float *lower) {
    int nempty = 0;
    for (int c = 0; c < k; c++) nempty += count[c] == 0;
    if (!nempty) return 0;
    size_t *rows = xmalloc(n * sizeof(size_t), "reseed rows");
    for (size_t i = 0; i < n; i++) rows[i] = i;
    sort_dist = dist;
    qsort(rows, n, sizeof(size_t), by_dist_desc);
    size_t m = (size_t)nempty * 64 + 1024 < n ? (size_t)nempty * 64 + 1024 : n;
    double *cd = xmalloc(m * sizeof(double), "reseed candidate distances");
    for (size_t t = 0; t < m; t++) cd[t] = dist[rows[t]];
    for (int c = 0; c < k; c++) {
        if (count[c]) continue;
        size_t best = m;
        for (size_t t = 0; t < m; t++) {
            if (cd[t] < 0 || count[ids[rows[t]]] < 2) continue;
            if (best == m || cd[t] > cd[best] || (cd[t] == cd[best] && rows[t] < rows[best])) best = t;
        }
        if (best == m) fatal("k-means: cannot re-seed empty cluster %d (fewer distinct rows than clusters?)", c);
        size_t pick = rows[best];
        count[ids[pick]]--;
        ids[pick] = c;
        count[c] = 1;
        dist[pick] = 0;
        if (lower) lower[pick] = -INFINITY;  // its bound referred to the old owner: search all
        cd[best] = -1;  // used
        memcpy(cent + (size_t)c * d, x + pick * d, d * sizeof(float));
        for (size_t t = 0; t < m; t++)
            if (cd[t] > 0) cd[t] = fmin(cd[t], sqdist_f64(x + rows[t] * d, x + pick * d, d));
    }
    xfree(rows);
    xfree(cd);
    return nempty;
}

// Centroid = float64 mean of its rows, summed in row order, one thread per cluster.
static void update_centroids(const float *x, size_t n, int d, int k, const int32_t *ids, const int32_t *count, float *cent) {
    size_t *start = xmalloc((k + 1) * sizeof(size_t), "cluster offsets");
    size_t *fill = xmalloc(k * sizeof(size_t), "cluster fill");
    uint32_t *order = xmalloc(n * sizeof(uint32_t), "cluster order");
    start[0] = 0;
    for (int c = 0; c < k; c++) start[c + 1] = start[c] + count[c], fill[c] = start[c];
    for (size_t i = 0; i < n; i++) order[fill[ids[i]]++] = (uint32_t)i;
#pragma omp parallel
    {
        double *acc = xmalloc(d * sizeof(double), "centroid sum");
#pragma omp for schedule(dynamic, 4)
        for (int c = 0; c < k; c++) {
            if (start[c + 1] == start[c]) continue;  // empty: keep (only after reseed failure)
            for (int j = 0; j < d; j++) acc[j] = 0;
            for (size_t t = start[c]; t < start[c + 1]; t++) {
                const float *xr = x + (size_t)order[t] * d;
                for (int j = 0; j < d; j++) acc[j] += xr[j];
            }
            double inv = 1.0 / (double)(start[c + 1] - start[c]);
            for (int j = 0; j < d; j++) cent[(size_t)c * d + j] = (float)(acc[j] * inv);
        }
        xfree(acc);
    }
    xfree(start);
    xfree(fill);
    xfree(order);
}

void kmeans_lloyd(const float *x, size_t n, int d, float *cent, const KmeansOptions *o, int32_t *ids_out, KmeansStats *st) {
    int k = o->k;
    if (n < (size_t)k) fatal("k-means: %zu rows cannot make %d clusters; sample more patches or lower k", n, k);
    memset(st, 0, sizeof *st);
    int iters = o->max_iter > 0 ? o->max_iter : 0;
    st->objective = xcalloc(iters + 1, sizeof(double), "objective log");
    st->seconds = xcalloc(iters + 1, sizeof(double), "time log");
    st->empty = xcalloc(iters + 1, sizeof(int), "empty log");
    st->product = xcalloc(iters + 1, sizeof(double), "product log");
    st->counts = xcalloc(k, sizeof(int32_t), "cluster sizes");
    float *mean = xmalloc(d * sizeof(float), "data mean");
    column_mean(x, n, d, mean);
    KmeansIndex *ix = kmeans_index_new(cent, k, d, mean);
    int32_t *ids = xcalloc(n, sizeof(int32_t), "assignments");
    int32_t *prev = xcalloc(n, sizeof(int32_t), "previous assignments");
    double *dist = xmalloc(n * sizeof(double), "distances");
    // Large d: drift bounds skip most of the products after the first steps.
    Bounds bounds = {0};
    double *drift = NULL;
    if (d > SMALL_D) bounds = bounds_new(n, k, ix->kp, d), drift = xmalloc(k * sizeof(double), "centroid drift");
    size_t nch = (n + CHUNK - 1) / CHUNK;
    for (int it = 0; it < iters; it++) {
        double t0 = now_seconds();
        if (it && drift) {
#pragma omp parallel for schedule(static)
            for (int c = 0; c < k; c++) drift[c] = sqrt(sqdist_f64(cent + (size_t)c * d, ix->c + (size_t)c * d, d));
        }
        if (it) index_set_centroids(ix, cent);
        double work = 1;
        if (drift) {
            bounds_sort(&bounds, ix, it ? drift : NULL);
            assign_bounded(ix, &bounds, x, n, it ? prev : NULL, ids, dist, &work);
        } else {
            assign_rows(ix, x, n, it ? prev : NULL, ids, NULL, dist);
        }
        double j = 0;
        for (size_t ch = 0; ch < nch; ch++) {
            size_t end = (ch + 1) * CHUNK < n ? (ch + 1) * CHUNK : n;
            double s = 0;
            for (size_t i = ch * CHUNK; i < end; i++) s += dist[i];
            j += s;
        }
        j /= (double)n;
        memset(st->counts, 0, k * sizeof(int32_t));
        for (size_t i = 0; i < n; i++) st->counts[ids[i]]++;
        int nempty = reseed_empty(x, n, d, k, cent, ids, dist, st->counts, drift ? bounds.lower : NULL);
        update_centroids(x, n, d, k, ids, st->counts, cent);
        memcpy(prev, ids, n * sizeof(int32_t));
        st->objective[it] = j;
        st->empty[it] = nempty;
        st->product[it] = work;
        st->seconds[it] = now_seconds() - t0;
        st->iters = it + 1;
        if (o->verbose)
            fprintf(stderr, "kmeans iter %3d  objective %.6g  %.3fs  empty %.2f%%  product %.1f%%\n", it, j, st->seconds[it],
                    100.0 * nempty / k, 100.0 * work);
        if (it && o->tol > 0 && st->objective[it - 1] > 0 && (st->objective[it - 1] - j) / st->objective[it - 1] < o->tol &&
            nempty == 0)
            break;
    }
    if (ids_out) memcpy(ids_out, ids, n * sizeof(int32_t));
    kmeans_index_free(ix);
    xfree(mean);
    xfree(ids);
    xfree(prev);
    xfree(dist);
    if (drift) bounds_free(&bounds);
    xfree(drift);
}

void kmeans_fit(const float *x, size_t n, int d, float *cent, const KmeansOptions *o, int32_t *ids, KmeansStats *st) {
    double t0 = now_seconds();
    kmeans_seed(x, n, d, o, cent);
    double ts = now_seconds() - t0;
    if (o->verbose)
        fprintf(stderr, "kmeans seeding (%s) %.3fs\n", kmeans_seeding_used(o, n, d) == KMEANS_SEED_AFKMC2 ? "afkmc2" : "k-means++", ts);
    kmeans_lloyd(x, n, d, cent, o, ids, st);
    st->seed_seconds = ts;
}
