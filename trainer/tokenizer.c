// tokenizer.c: build, assign, check, save and load the centroid tokenizer.
#include "tokenizer.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "h5io.h"

#define TOKENIZER_FORMAT 1
static const char *DEFAULT_NORM = "none: raw pixels scaled to [0,1]";

// The assignment centres rows by the centroids' mean (derived, never saved):
// any vector near the data works, and this one is the same after a load.
static void make_index(Tokenizer *t) {
    float *mean = xcalloc(t->d, sizeof(float), "tokenizer mean");
    for (int j = 0; j < t->d; j++) {
        double s = 0;
        for (int c = 0; c < t->k; c++) s += t->centroids[(size_t)c * t->d + j];
        mean[j] = (float)(s / t->k);
    }
    t->index = kmeans_index_new(t->centroids, t->k, t->d, mean);
    xfree(mean);
}

static Tokenizer *alloc_tokenizer(int k, int patch, int channels) {
    if (k < 1 || patch < 1 || channels < 1) fatal("tokenizer: need k, patch and channels >= 1 (got %d, %d, %d)", k, patch, channels);
    Tokenizer *t = xcalloc(1, sizeof *t, "tokenizer");
    t->k = k;
    t->patch = patch;
    t->channels = channels;
    t->d = channels * patch * patch;
    t->centroids = xmalloc((size_t)k * t->d * sizeof(float), "tokenizer centroids");
    t->counts = xcalloc(k, sizeof(int32_t), "tokenizer counts");
    t->normalisation = xstrdup(DEFAULT_NORM);
    t->source = xstrdup("");
    t->objective = xcalloc(1, sizeof(double), "objective");
    return t;
}

Tokenizer *tokenizer_from_centroids(const float *centroids, const int32_t *counts, int k, int patch, int channels) {
    Tokenizer *t = alloc_tokenizer(k, patch, channels);
    memcpy(t->centroids, centroids, (size_t)k * t->d * sizeof(float));
    if (counts) memcpy(t->counts, counts, k * sizeof(int32_t));
    make_index(t);
    return t;
}

Tokenizer *tokenizer_build(const float *patches, size_t n, int patch, int channels, const KmeansOptions *o, const char *source) {
    Tokenizer *t = alloc_tokenizer(o->k, patch, channels);
    KmeansStats st;
    kmeans_fit(patches, n, t->d, t->centroids, o, NULL, &st);
    memcpy(t->counts, st.counts, t->k * sizeof(int32_t));
    t->samples = (int64_t)n;
    t->seed = o->seed;
    xfree(t->source);
    t->source = xstrdup(source ? source : "");
    xfree(t->objective);
    t->iters = st.iters;
    t->objective = xcalloc(st.iters + 1, sizeof(double), "objective");
    memcpy(t->objective, st.objective, st.iters * sizeof(double));
    kmeans_stats_free(&st);
    make_index(t);
    return t;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    kmeans_index_free(t->index);
    xfree(t->centroids);
    xfree(t->counts);
    xfree(t->normalisation);
    xfree(t->source);
    xfree(t->objective);
    xfree(t);
}

void tokenizer_assign(Tokenizer *t, const float *patches, size_t n, int32_t *ids, float *pixels) {
    kmeans_index_assign(t->index, patches, n, ids, NULL);
    if (!pixels) return;
    size_t row = (size_t)t->d * sizeof(float);
    for (size_t i = 0; i < n; i++) memcpy(pixels + i * t->d, t->centroids + (size_t)ids[i] * t->d, row);
}

void tokenizer_check(const Tokenizer *t, int patch, int channels, const char *model_name) {
    if (t->patch != patch || t->channels != channels)
        fatal("tokenizer (source '%s') has patch size %d and %d channels, but %s uses patch size %d and %d channels; "
              "build a matching tokenizer with build_tokenizer --patch %d --channels %d",
              t->source, t->patch, t->channels, model_name ? model_name : "the model", patch, channels, patch, channels);
}

void tokenizer_save_group(const Tokenizer *t, hid_t g) {
    hsize_t cd[2] = {(hsize_t)t->k, (hsize_t)t->d}, kd[1] = {(hsize_t)t->k};
    h5_write_f32(g, "centroids", t->centroids, 2, cd);
    h5_write_i32(g, "counts", t->counts, 1, kd);
    h5_attr_write_i64(g, "format_version", TOKENIZER_FORMAT);
    h5_attr_write_i64(g, "k", t->k);
    h5_attr_write_i64(g, "patch_size", t->patch);
    h5_attr_write_i64(g, "channels", t->channels);
    h5_attr_write_str(g, "pixel_order", "c,y,x");
    h5_attr_write_i64(g, "samples", t->samples);
    h5_attr_write_i64(g, "seed", (int64_t)t->seed);
    h5_attr_write_str(g, "normalisation", t->normalisation);
    h5_attr_write_str(g, "source", t->source);
    h5_attr_write_f64s(g, "objective", t->objective, t->iters);
}

Tokenizer *tokenizer_load_group(hid_t g) {
    int64_t ver = h5_attr_read_i64(g, "format_version");
    if (ver != TOKENIZER_FORMAT)
        fatal("tokenizer format version %lld is not the supported %d; rebuild it with build_tokenizer", (long long)ver, TOKENIZER_FORMAT);
    int64_t k = h5_attr_read_i64(g, "k"), p = h5_attr_read_i64(g, "patch_size"), c = h5_attr_read_i64(g, "channels");
    if (k < 1 || k > (1 << 24) || p < 1 || p > 256 || c < 1 || c > 64)
        fatal("tokenizer metadata out of range (k=%lld, patch_size=%lld, channels=%lld): corrupt file?", (long long)k,
              (long long)p, (long long)c);
    // the dataset's shape before any allocation: k and d above allow 2^24 x 2^22 floats (64 TiB)
    hsize_t want[2] = {(hsize_t)k, (hsize_t)(c * p * p)};
    char err[2048];
    if (h5_try_check_shape(g, "centroids", 2, want, err, sizeof err) < 0) fatal("%s", err);
    Tokenizer *t = alloc_tokenizer((int)k, (int)p, (int)c);
    hsize_t cd[2] = {(hsize_t)t->k, (hsize_t)t->d}, kd[1] = {(hsize_t)t->k};
    h5_read_f32(g, "centroids", t->centroids, 2, cd);
    for (size_t i = 0; i < (size_t)t->k * t->d; i++)  // a NaN centroid would never win, or win every patch
        if (!isfinite(t->centroids[i]))
            fatal("tokenizer centroid %zu holds a NaN or infinite value: corrupt file? rebuild it with build_tokenizer",
                  i / (size_t)t->d);
    h5_read_i32(g, "counts", t->counts, 1, kd);
    t->samples = h5_attr_read_i64(g, "samples");
    t->seed = (uint64_t)h5_attr_read_i64(g, "seed");
    xfree(t->normalisation);
    t->normalisation = h5_attr_read_str(g, "normalisation");
    xfree(t->source);
    t->source = h5_attr_read_str(g, "source");
    xfree(t->objective);
    size_t n;
    t->objective = h5_attr_read_f64s(g, "objective", &n);
    t->iters = (int)n;
    make_index(t);
    return t;
}

void tokenizer_save(const Tokenizer *t, const char *path) {
    // built in memory, then written atomically: a run killed mid-save must not leave a
    // truncated file that every later start (and --resume=auto) would reuse and die on
    H5Image img;
    hid_t f = h5_create_in_memory(&img);
    hid_t g = h5_group_create(f, "tokenizer");
    tokenizer_save_group(t, g);
    h5_group_close(g);
    h5_close_in_memory(f, &img);
    char err[1024];
    int rc = file_write_atomic(path, img.data, img.size, "tokenizer", err, sizeof err);
    h5_image_free(&img);
    if (rc != 0) fatal("%s", err);
}

Tokenizer *tokenizer_load(const char *path) {
    hid_t f = h5_open(path, 0);
    hid_t g = h5_group_open(f, "tokenizer");
    Tokenizer *t = tokenizer_load_group(g);
    h5_group_close(g);
    h5_close(f);
    return t;
}
