// test_kmeans.c: k-means assignment, Lloyd, seeding determinism, the
// tokenizer's HDF5 round trip and its error messages.
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "h5io.h"
#include "kernels.h"
#include "kmeans.h"
#include "tokenizer.h"

static float *random_rows(size_t n, int d, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed, 1);
    float *x = xmalloc(n * d * sizeof(float), "rows");
    for (size_t i = 0; i < n * d; i++) x[i] = (float)rng_uniform(&r);
    return x;
}

// Rows around `nc` random centres with noise `s` (clustered, like patches).
static float *clustered_rows(size_t n, int d, int nc, double s, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed, 2);
    float *c = random_rows(nc, d, seed + 7);
    float *x = xmalloc(n * d * sizeof(float), "rows");
    for (size_t i = 0; i < n; i++) {
        int k = rng_below(&r, nc);
        for (int j = 0; j < d; j++) x[i * d + j] = c[k * d + j] + (float)(s * rng_normal(&r));
    }
    xfree(c);
    return x;
}

static double sqd(const float *a, const float *b, int d) {
    double s = 0;
    for (int j = 0; j < d; j++) s += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
    return s;
}

// Near-tie bound: the float32 score 0.5||c||^2 - x.c (centred) carries an
// error of at most about d * 2^-24 * (||x|| ||c|| + ||c||^2); a mismatch with
// float64 brute force is allowed only when the two distances differ by less
// than 4 d 2^-24 (||x-m||^2 + max ||c-m||^2), m = the centring vector.
static void test_assign(int d, int k, size_t n) {
    char name[64];
    snprintf(name, sizeof name, "assign_matches_f64_d%d", d);
    float *x = random_rows(n, d, 10 + d), *c = random_rows(k, d, 20 + d);
    KmeansIndex *ix = kmeans_index_new(c, k, d, NULL);  // no centring: the harder case
    int32_t *ids = xmalloc(n * sizeof(int32_t), "ids"), *ref = xmalloc(n * sizeof(int32_t), "ref");
    float *dist = xmalloc(n * sizeof(float), "dist");
    kmeans_index_assign(ix, x, n, ids, dist);
    for (size_t i = 0; i < n; i++) {  // float64 brute force
        double b = INFINITY;
        for (int j = 0; j < k; j++) {
            double e = sqd(x + i * d, c + j * d, d);
            if (e < b) b = e, ref[i] = j;
        }
    }
    double cmax = 0;
    float *zero = xcalloc(d, sizeof(float), "zero");
    for (int j = 0; j < k; j++) cmax = fmax(cmax, sqd(c + j * d, zero, d));
    size_t mismatches = 0, beyond = 0, bad_dist = 0;
    for (size_t i = 0; i < n; i++) {
        double e = sqd(x + i * d, c + ids[i] * d, d), er = sqd(x + i * d, c + ref[i] * d, d);
        if (fabs(dist[i] - e) > 1e-6 * e + 1e-12) bad_dist++;
        if (ids[i] == ref[i]) continue;
        mismatches++;
        double bound = 4.0 * d * ldexp(1.0, -24) * (sqd(x + i * d, zero, d) + cmax);
        if (e - er > bound) beyond++;
    }
    CHECK(name, beyond == 0 && bad_dist == 0, "%zu of %zu rows beyond the near-tie bound (%zu ties), %zu bad distances", beyond,
          n, mismatches, bad_dist);
    kmeans_index_free(ix);
    xfree(x), xfree(c), xfree(ids), xfree(ref), xfree(dist), xfree(zero);
}

static void test_monotone(int d) {
    char name[64];
    snprintf(name, sizeof name, "objective_never_increases_d%d", d);
    size_t n = 6000;
    float *x = clustered_rows(n, d, 40, 0.15, 3);
    KmeansOptions o = kmeans_defaults(64);
    o.max_iter = 30;
    o.tol = 0;
    o.seed = 5;
    float *c = xmalloc(64 * d * sizeof(float), "c");
    KmeansStats st;
    kmeans_fit(x, n, d, c, &o, NULL, &st);
    int bad = -1;
    for (int t = 1; t < st.iters; t++)
        if (st.objective[t] > st.objective[t - 1]) bad = t;
    CHECK(name, bad < 0 && st.iters == 30, "objective rose at iteration %d (%.17g -> %.17g), iters %d", bad,
          bad > 0 ? st.objective[bad - 1] : 0, bad > 0 ? st.objective[bad] : 0, st.iters);
    // Final objective equals a float64 evaluation of the final centroids (within one Lloyd step).
    double j = kmeans_objective_f64(x, n, d, c, 64, NULL);
    CHECK(name, j <= st.objective[st.iters - 1] * (1 + 1e-9), "final f64 objective %.9g above last %.9g", j,
          st.objective[st.iters - 1]);
    kmeans_stats_free(&st);
    xfree(x), xfree(c);
}

// Lloyd's later steps skip rows by drift bounds: its assignment at step T
// must still be the nearest centroid of step T-1's centroids (near-ties aside).
static void test_bounded_lloyd_exact(int d) {
    char name[64];
    snprintf(name, sizeof name, "lloyd_bounds_exact_d%d", d);
    size_t n = 8000;
    int k = 120, T = 8;
    float *x = clustered_rows(n, d, 60, 0.25, 31);
    KmeansOptions o = kmeans_defaults(k);
    o.tol = 0;
    o.seed = 2;
    float *c = xmalloc(k * d * sizeof(float), "c");
    int32_t *ids = xmalloc(n * sizeof(int32_t), "ids");
    KmeansStats st;
    o.max_iter = T - 1;
    kmeans_fit(x, n, d, c, &o, NULL, &st);  // c = centroids used by step T
    kmeans_stats_free(&st);
    o.max_iter = T;
    float *c2 = xmalloc(k * d * sizeof(float), "c2");
    kmeans_fit(x, n, d, c2, &o, ids, &st);
    kmeans_stats_free(&st);
    double cmax = 0;
    float *zero = xcalloc(d, sizeof(float), "zero");
    for (int j = 0; j < k; j++) cmax = fmax(cmax, sqd(c + j * d, zero, d));
    size_t beyond = 0, differ = 0;
    for (size_t i = 0; i < n; i++) {
        double b = INFINITY;
        for (int j = 0; j < k; j++) b = fmin(b, sqd(x + i * d, c + j * d, d));
        double e = sqd(x + i * d, c + ids[i] * d, d);
        differ += e > b;
        if (e - b > 4.0 * d * ldexp(1.0, -24) * (sqd(x + i * d, zero, d) + cmax)) beyond++;
    }
    CHECK(name, beyond == 0, "%zu of %zu rows not at their nearest centroid beyond the near-tie bound (%zu near ties)", beyond,
          n, differ);
    xfree(x), xfree(c), xfree(c2), xfree(ids), xfree(zero);
}

static void test_empty_clusters(void) {
    // 20 distinct rows, each 50 times; k = 30 from one centroid repeated 30
    // times, so 29 clusters start empty and 10 must land on duplicates.
    int d = 16, k = 30, nd = 20, rep = 50;
    size_t n = (size_t)nd * rep;
    float *u = random_rows(nd, d, 44), *x = xmalloc(n * d * sizeof(float), "x");
    for (size_t i = 0; i < n; i++) memcpy(x + i * d, u + (i % nd) * d, d * sizeof(float));
    float *c = xmalloc(k * d * sizeof(float), "c");
    for (int j = 0; j < k; j++) memcpy(c + j * d, u, d * sizeof(float));
    KmeansOptions o = kmeans_defaults(k);
    o.max_iter = 10;
    o.tol = 0;
    o.verbose = getenv("VERBOSE") != NULL;
    KmeansStats st;
    kmeans_lloyd(x, n, d, c, &o, NULL, &st);
    int nonempty = 1;
    for (int j = 0; j < k; j++) nonempty &= st.counts[j] > 0;
    double j = kmeans_objective_f64(x, n, d, c, k, NULL);
    int finite = 1;
    for (int i = 0; i < k * d; i++) finite &= isfinite(c[i]);
    CHECK("empty_clusters_reseeded", st.empty[0] == k - 1 && nonempty && finite && j == 0.0,
          "empty at start %d (want %d), all non-empty at end %d, finite %d, objective %g (want 0)", st.empty[0], k - 1, nonempty,
          finite, j);
    kmeans_stats_free(&st);
    xfree(u), xfree(x), xfree(c);
}

static void test_determinism(int d, KmeansSeeding seeding, const char *name) {
    size_t n = 5000;
    int k = 50;
    float *x = clustered_rows(n, d, 30, 0.2, 9);
    KmeansOptions o = kmeans_defaults(k);
    o.max_iter = 8;
    o.seed = 123;
    o.seeding = seeding;
    o.chain = 50;
    float *a = xmalloc(k * d * sizeof(float), "a"), *b = xmalloc(k * d * sizeof(float), "b");
    KmeansStats st;
    int saved = kernel_max_threads();
    kernel_set_threads(1);
    kmeans_fit(x, n, d, a, &o, NULL, &st);
    kmeans_stats_free(&st);
    kernel_set_threads(2);
    kmeans_fit(x, n, d, b, &o, NULL, &st);
    kmeans_stats_free(&st);
    kernel_set_threads(saved);
    CHECK(name, memcmp(a, b, k * d * sizeof(float)) == 0, "centroids differ between 1 and 2 threads");
    xfree(x), xfree(a), xfree(b);
}

static int tokenizers_equal(const Tokenizer *a, const Tokenizer *b) {
    return a->k == b->k && a->patch == b->patch && a->channels == b->channels && a->d == b->d && a->samples == b->samples &&
           a->seed == b->seed && a->iters == b->iters && !strcmp(a->source, b->source) &&
           !strcmp(a->normalisation, b->normalisation) &&
           !memcmp(a->centroids, b->centroids, (size_t)a->k * a->d * sizeof(float)) &&
           !memcmp(a->counts, b->counts, a->k * sizeof(int32_t)) && !memcmp(a->objective, b->objective, a->iters * sizeof(double));
}

static const char *TMP = "/tmp/ccvit_test_tokenizer.h5";

static Tokenizer *small_tokenizer(void) {
    size_t n = 3000;
    float *x = random_rows(n, 3 * 4 * 4, 77);
    KmeansOptions o = kmeans_defaults(32);
    o.max_iter = 5;
    o.seed = 99;
    Tokenizer *t = tokenizer_build(x, n, 4, 3, &o, "test: uniform noise");
    xfree(x);
    return t;
}

static void test_roundtrip(void) {
    Tokenizer *t = small_tokenizer();
    tokenizer_save(t, TMP);
    Tokenizer *u = tokenizer_load(TMP);
    // Embedded form: a group inside a larger (checkpoint-like) file.
    hid_t f = h5_create("/tmp/ccvit_test_ckpt.h5");
    hid_t g = h5_group_create(f, "tokenizer");
    tokenizer_save_group(t, g);
    h5_group_close(g);
    h5_close(f);
    f = h5_open("/tmp/ccvit_test_ckpt.h5", 0);
    g = h5_group_open(f, "tokenizer");
    Tokenizer *v = tokenizer_load_group(g);
    h5_group_close(g);
    h5_close(f);
    // Same ids from the loaded copy.
    size_t n = 500;
    float *x = random_rows(n, t->d, 5);
    int32_t *i1 = xmalloc(n * 4, "i1"), *i2 = xmalloc(n * 4, "i2");
    float *p = xmalloc(n * t->d * 4, "p");
    tokenizer_assign(t, x, n, i1, p);
    tokenizer_assign(u, x, n, i2, NULL);
    int pix_ok = 1;
    for (size_t i = 0; i < n; i++) pix_ok &= !memcmp(p + i * t->d, t->centroids + i1[i] * t->d, t->d * 4);
    CHECK("tokenizer_roundtrip", tokenizers_equal(t, u) && tokenizers_equal(t, v) && !memcmp(i1, i2, n * 4) && pix_ok && t->iters == 5,
          "loaded tokenizer differs (file %d, group %d, ids %d, pixels %d, iters %d)", tokenizers_equal(t, u),
          tokenizers_equal(t, v), !memcmp(i1, i2, n * 4), pix_ok, t->iters);
    tokenizer_free(t), tokenizer_free(u), tokenizer_free(v);
    xfree(x), xfree(i1), xfree(i2), xfree(p);
}

// Run fn in a child; return its exit status and stderr text.
static int run_child(void (*fn)(void), char *err, size_t cap) {
    int pfd[2];
    if (pipe(pfd)) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        check_death_child();
        close(pfd[0]);
        dup2(pfd[1], 2);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(pfd[0], err + len, cap - 1 - len)) > 0) len += r;
    err[len] = 0;
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void child_mismatch(void) {
    Tokenizer *t = tokenizer_load(TMP);
    tokenizer_check(t, 16, 3, "vit_tiny_patch16");
}
static void child_missing(void) { tokenizer_load("/tmp/ccvit_no_such_tokenizer.h5"); }
static void child_garbage(void) {
    FILE *f = fopen("/tmp/ccvit_garbage.h5", "wb");
    fputs("this is not hdf5 at all\n", f);
    fclose(f);
    tokenizer_load("/tmp/ccvit_garbage.h5");
}
static void child_corrupt(void) { tokenizer_load("/tmp/ccvit_corrupt.h5"); }
static void child_shape(void) { tokenizer_load("/tmp/ccvit_shape.h5"); }

static void expect_error(const char *name, void (*fn)(void), const char *want1, const char *want2) {
    char err[4096];
    int rc = run_child(fn, err, sizeof err);
    CHECK(name, rc == 1 && strstr(err, want1) && strstr(err, want2), "exit %d, stderr: %s", rc, err);
}

static void test_errors(void) {
    Tokenizer *t = small_tokenizer();
    tokenizer_save(t, TMP);
    expect_error("mismatched_patch_size_clear_error", child_mismatch, "patch size 4 and 3 channels",
                 "vit_tiny_patch16 uses patch size 16");
    expect_error("missing_file_clear_error", child_missing, "/tmp/ccvit_no_such_tokenizer.h5", "no such file");
    expect_error("garbage_file_clear_error", child_garbage, "/tmp/ccvit_garbage.h5", "not an HDF5 file");

    // Flip a byte inside the stored centroids: Fletcher32 must catch it.
    FILE *f = fopen(TMP, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = xmalloc(size, "file");
    if (fread(buf, 1, size, f) != (size_t)size) size = 0;
    fclose(f);
    long at = -1;
    for (long i = 0; i + 64 <= size; i++)
        if (!memcmp(buf + i, t->centroids, 64)) { at = i; break; }
    if (at >= 0) buf[at + 10] ^= 0x55;
    f = fopen("/tmp/ccvit_corrupt.h5", "wb");
    fwrite(buf, 1, size, f);
    fclose(f);
    xfree(buf);
    CHECK("found_centroid_bytes", at >= 0, "centroid bytes not found in %s", TMP);
    expect_error("corrupt_data_clear_error", child_corrupt, "/tokenizer/centroids", "corrupt");

    // A k attribute that disagrees with the dataset: shape error names both shapes.
    Tokenizer *u = tokenizer_load(TMP);
    hid_t hf = h5_create("/tmp/ccvit_shape.h5");
    hid_t g = h5_group_create(hf, "tokenizer");
    tokenizer_save_group(u, g);
    h5_attr_write_i64(g, "k", u->k + 1);
    h5_group_close(g);
    h5_close(hf);
    expect_error("shape_mismatch_clear_error", child_shape, "shape [32, 48]", "expected [33, 48]");
    tokenizer_free(t), tokenizer_free(u);
}

int main(void) {
    test_assign(16, 100, 4000);
    test_assign(48, 100, 4000);
    test_assign(200, 300, 3000);
    test_assign(768, 1100, 1000);
    test_monotone(16);
    test_monotone(96);
    test_bounded_lloyd_exact(96);
    test_bounded_lloyd_exact(300);
    test_empty_clusters();
    test_determinism(48, KMEANS_SEED_PLUSPLUS, "same_seed_same_centroids_1_vs_2_threads_kpp_d48");
    test_determinism(100, KMEANS_SEED_PLUSPLUS, "same_seed_same_centroids_1_vs_2_threads_kpp_d100");
    test_determinism(100, KMEANS_SEED_AFKMC2, "same_seed_same_centroids_1_vs_2_threads_afkmc2_d100");
    test_roundtrip();
    test_errors();
    return check_exit();
}
