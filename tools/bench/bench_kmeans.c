// bench_kmeans.c: our side of tools/bench/bench_kmeans.sh. Subcommands:
//   run      seed (timed), dump the initial centroids, run Lloyd for a fixed
//            number of iterations, dump the final centroids and a JSON line
//   eval     the one float64 judge: held-out objective and dead clusters
//            (clusters that get no training row) for each centroid file
//   sgemm    large multithreaded sgemm GFLOP/s, the machine's reference
//   tokenize time to tokenise one ViT-Ti/16 batch (32 x 196 patches, d=768)
// Data files are raw float32 rows [n, d].
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"
#include "kmeans.h"
#include "tokenizer.h"

static float *read_f32(const char *path, int d, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fatal("cannot open '%s' (run tools/bench/bench_kmeans.sh, which prepares it)", path);
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (bytes <= 0 || bytes % (4L * d)) fatal("'%s' has %ld bytes, not a whole number of %d-float rows", path, bytes, d);
    *n = bytes / (4L * d);
    float *x = xmalloc(bytes, path);
    if (fread(x, 1, bytes, f) != (size_t)bytes) fatal("short read on '%s'", path);
    fclose(f);
    return x;
}

static void write_f32(const char *path, const float *x, size_t count) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, 4, count, f) != count) fatal("cannot write '%s'", path);
    fclose(f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
    double *t = xmalloc(n * sizeof(double), "median");
    memcpy(t, v, n * sizeof(double));
    qsort(t, n, sizeof(double), cmp_double);
    double m = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    xfree(t);
    return m;
}

static const char *arg(int argc, char **argv, const char *key, const char *def) {
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], key)) return argv[i + 1];
    if (!def) fatal("missing %s (see the header of tools/bench/bench_kmeans.c)", key);
    return def;
}

static int cmd_run(int argc, char **argv) {
    int d = atoi(arg(argc, argv, "--d", NULL)), k = atoi(arg(argc, argv, "--k", NULL));
    size_t n;
    float *x = read_f32(arg(argc, argv, "--train", NULL), d, &n);
    KmeansOptions o = kmeans_defaults(k);
    o.max_iter = atoi(arg(argc, argv, "--iters", "10"));
    o.tol = 0;
    o.seed = strtoull(arg(argc, argv, "--seed", "0"), NULL, 10);
    const char *sd = arg(argc, argv, "--seeding", "auto");
    o.seeding = !strcmp(sd, "afkmc2") ? KMEANS_SEED_AFKMC2 : !strcmp(sd, "kpp") ? KMEANS_SEED_PLUSPLUS : KMEANS_SEED_AUTO;
    o.verbose = 1;
    float *c = xmalloc((size_t)k * d * sizeof(float), "centroids");
    double t0 = now_seconds();
    kmeans_seed(x, n, d, &o, c);
    double tseed = now_seconds() - t0;
    write_f32(arg(argc, argv, "--init-out", NULL), c, (size_t)k * d);
    KmeansStats st;
    t0 = now_seconds();
    kmeans_lloyd(x, n, d, c, &o, NULL, &st);
    double total = now_seconds() - t0;
    write_f32(arg(argc, argv, "--out", NULL), c, (size_t)k * d);
    const char *h5 = arg(argc, argv, "--h5-out", "");
    if (h5[0]) {
        int ch = atoi(arg(argc, argv, "--channels", "3")), p = atoi(arg(argc, argv, "--patch", "16"));
        Tokenizer *tok = tokenizer_from_centroids(c, st.counts, k, p, ch);
        xfree(tok->source);
        tok->source = xstrdup(arg(argc, argv, "--train", NULL));
        tok->samples = (int64_t)n;
        tok->seed = o.seed;
        xfree(tok->objective);
        tok->objective = xmalloc(st.iters * sizeof(double), "objective");
        memcpy(tok->objective, st.objective, st.iters * sizeof(double));
        tok->iters = st.iters;
        tokenizer_save(tok, h5);
        tokenizer_free(tok);
    }
    double med = median(st.seconds, st.iters);
    int empties = 0;
    double work = 0;
    for (int i = 0; i < st.iters; i++) empties += st.empty[i], work += st.product[i] / st.iters;
    printf("{\"method\": \"ours\", \"n\": %zu, \"d\": %d, \"k\": %d, \"seeding\": \"%s\", \"seed_s\": %.4f, \"iters\": %d, "
           "\"median_iter_s\": %.5f, \"lloyd_total_s\": %.3f, \"gflops\": %.2f, \"product_share\": %.4f, \"train_objective\": %.8g, \"reseeded\": %d, "
           "\"threads\": %d}\n",
           n, d, k, kmeans_seeding_used(&o, n, d) == KMEANS_SEED_AFKMC2 ? "afkmc2" : "k-means++", tseed, st.iters, med, total,
           2.0 * n * k * d / med * 1e-9, work, st.objective[st.iters - 1], empties, kernel_max_threads());
    kmeans_stats_free(&st);
    xfree(x);
    xfree(c);
    return 0;
}

// eval --heldout H --train T --d D --k K name=file ...
static int cmd_eval(int argc, char **argv) {
    int d = atoi(arg(argc, argv, "--d", NULL)), k = atoi(arg(argc, argv, "--k", NULL));
    size_t nh, nt;
    float *h = read_f32(arg(argc, argv, "--heldout", NULL), d, &nh);
    float *t = read_f32(arg(argc, argv, "--train", NULL), d, &nt);
    int32_t *ids = xmalloc(nt * sizeof(int32_t), "ids");
    int32_t *cnt = xmalloc(k * sizeof(int32_t), "counts");
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq || argv[i][0] == '-') {
            if (argv[i][0] == '-') i++;
            continue;
        }
        *eq = 0;
        size_t kk;
        float *c = read_f32(eq + 1, d, &kk);
        if ((int)kk != k) fatal("'%s' has %zu centroids, expected %d", eq + 1, kk, k);
        double jh = kmeans_objective_f64(h, nh, d, c, k, NULL);
        // Dead clusters: the float32 assignment of the training rows suffices.
        KmeansIndex *ix = kmeans_index_new(c, k, d, NULL);
        kmeans_index_assign(ix, t, nt, ids, NULL);
        kmeans_index_free(ix);
        memset(cnt, 0, k * sizeof(int32_t));
        for (size_t r = 0; r < nt; r++) cnt[ids[r]]++;
        int dead = 0;
        for (int j = 0; j < k; j++) dead += cnt[j] == 0;
        printf("{\"method\": \"%s\", \"heldout_objective\": %.10g, \"dead\": %d}\n", argv[i], jh, dead);
        xfree(c);
    }
    xfree(h), xfree(t), xfree(ids), xfree(cnt);
    return 0;
}

static int cmd_sgemm(void) {
    int m = 4096, nn = 4096, kk = 768;
    float *a = xcalloc((size_t)m * kk, 4, "A"), *b = xcalloc((size_t)nn * kk, 4, "B"), *c = xmalloc((size_t)m * nn * 4, "C");
    for (size_t i = 0; i < (size_t)m * kk; i++) a[i] = (float)(i % 17) * 0.01f;
    for (size_t i = 0; i < (size_t)nn * kk; i++) b[i] = (float)(i % 13) * 0.01f;
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nn, kk, 1.0f, a, kk, b, kk, 0.0f, c, nn);
        double t = now_seconds() - t0;
        if (rep && t < best) best = t;
    }
    printf("{\"sgemm_gflops\": %.2f, \"shape\": \"%dx%dx%d\", \"threads\": %d}\n", 2.0 * m * nn * kk / best * 1e-9, m, nn, kk,
           kernel_max_threads());
    xfree(a), xfree(b), xfree(c);
    return 0;
}

// One ViT-Ti/16 batch at 224 px: 32 images x 196 patches of 768; K = 8192
// centroids drawn from the same data (real patches if --train is given).
static int cmd_tokenize(int argc, char **argv) {
    int k = atoi(arg(argc, argv, "--k", "8192")), d = 768;
    size_t n = 32 * 196, nt = 0;
    const char *train = arg(argc, argv, "--train", "");
    float *src = train[0] ? read_f32(train, d, &nt) : NULL;
    if (nt < (size_t)k + n) {
        Rng r;
        rng_seed(&r, 1, 2);
        nt = (size_t)k + n;
        xfree(src);
        src = xmalloc(nt * d * sizeof(float), "random patches");
        for (size_t i = 0; i < nt * d; i++) src[i] = (float)rng_uniform(&r);
    }
    // Centroids: every (nt / k)-th row; the batch: the last n rows.
    float *cent = xmalloc((size_t)k * d * sizeof(float), "centroids");
    for (int j = 0; j < k; j++) memcpy(cent + (size_t)j * d, src + (size_t)j * (nt / k) * d, d * sizeof(float));
    Tokenizer *t = tokenizer_from_centroids(cent, NULL, k, 16, 3);
    const float *batch = src + (nt - n) * d;
    int32_t *ids = xmalloc(n * sizeof(int32_t), "ids");
    float *pix = xmalloc(n * d * sizeof(float), "pixels");
    double times[5];
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now_seconds();
        tokenizer_assign(t, batch, n, ids, pix);
        if (rep) times[rep - 1] = now_seconds() - t0;
    }
    double med = median(times, 5);
    printf("{\"method\": \"ours\", \"tokenize_batch_s\": %.4f, \"n\": %zu, \"k\": %d, \"d\": %d, \"gflops\": %.2f}\n", med, n, k, d,
           2.0 * n * k * d / med * 1e-9);
    tokenizer_free(t);
    xfree(src), xfree(cent), xfree(ids), xfree(pix);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        puts("usage: bench_kmeans run|eval|sgemm|tokenize [options]; see tools/bench/bench_kmeans.sh");
        return argc < 2;
    }
    if (!strcmp(argv[1], "run")) return cmd_run(argc, argv);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc, argv);
    if (!strcmp(argv[1], "sgemm")) return cmd_sgemm();
    if (!strcmp(argv[1], "tokenize")) return cmd_tokenize(argc, argv);
    fatal("unknown subcommand '%s' (run, eval, sgemm, tokenize)", argv[1]);
}
