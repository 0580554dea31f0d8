// kmeans.h: k-means on float32 rows [n, d]; knows nothing of images.
// Deterministic: the same seed gives the same centroids for any thread count.
#pragma once
#include <stddef.h>
#include <stdint.h>

// AUTO (the default): k-means++ while n*k*d <= 2e10 (its cost) or while AFK-MC2's
// chain*k^2*d would cost more (k >= 2n/chain), else AFK-MC².
typedef enum { KMEANS_SEED_AUTO = 0, KMEANS_SEED_PLUSPLUS = 1, KMEANS_SEED_AFKMC2 = 2 } KmeansSeeding;

typedef struct {
    int k;
    int max_iter;          // Lloyd iterations at most
    double tol;            // stop when (J_prev - J) / J_prev < tol (0: never)
    uint64_t seed;
    KmeansSeeding seeding;
    int chain;             // AFK-MC² Markov chain length (default 200)
    int verbose;           // 1: one progress line per iteration on stderr
} KmeansOptions;

typedef struct {
    int iters;             // Lloyd iterations run
    double seed_seconds;
    double *objective;     // [iters] mean squared distance of the assignment step of each iteration
    double *seconds;       // [iters] wall time of each iteration
    int *empty;            // [iters] clusters found empty (and re-seeded) in each iteration
    double *product;       // [iters] share of the full n x k product computed (bounds skip the rest)
    int32_t *counts;       // [k] cluster sizes of the final assignment
} KmeansStats;

KmeansOptions kmeans_defaults(int k);
void kmeans_stats_free(KmeansStats *s);

// Seeding: writes k initial centroids [k, d] chosen among the rows of x.
KmeansSeeding kmeans_seeding_used(const KmeansOptions *o, size_t n, int d);  // resolves AUTO
void kmeans_seed(const float *x, size_t n, int d, const KmeansOptions *o, float *centroids);

// Lloyd from the given centroids [k, d] (in/out). The final centroids are the
// means of the final assignment. ids [n] (optional) gets that assignment.
// For d > 64, rows whose centroid provably can not change (drift bounds) skip
// the product; the result is Lloyd's exactly, up to float32 near-ties.
// Empty clusters: each is moved onto the row farthest from its centroid
// among clusters with >= 2 rows (ties: lowest row index).
void kmeans_lloyd(const float *x, size_t n, int d, float *centroids, const KmeansOptions *o, int32_t *ids, KmeansStats *st);

// Seed + Lloyd.
void kmeans_fit(const float *x, size_t n, int d, float *centroids, const KmeansOptions *o, int32_t *ids, KmeansStats *st);

// Nearest-centroid assignment, reusable across calls (no allocation per call).
// Rows are centred by `mean` before the float32 product; the reported distance
// dist[i] = ||x_i - c_ids[i]||^2 is recomputed in float64 from the raw values.
typedef struct KmeansIndex KmeansIndex;
KmeansIndex *kmeans_index_new(const float *centroids, int k, int d, const float *mean /* [d] or NULL */);
void kmeans_index_free(KmeansIndex *ix);
// ids [n]; dist [n] may be NULL. Parallel over rows (OpenMP); call it from
// outside a parallel region, one call per index at a time (shared scratch).
void kmeans_index_assign(KmeansIndex *ix, const float *x, size_t n, int32_t *ids, float *dist);

// Float64 evaluator (the benchmark's one judge): mean squared distance of each
// row to its nearest centroid, all arithmetic in float64; ids [n] optional.
double kmeans_objective_f64(const float *x, size_t n, int d, const float *centroids, int k, int32_t *ids /* may be NULL */);
