// test_loader.c: the data loader end to end on shards written here, into
// build/test_loader/: round trip (PNG exact, JPEG within tolerance), brace
// expansion, eval epochs, determinism over thread counts, resume, ranks slicing
// one global train stream (and resuming across world sizes), bad input,
// start-up errors.
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "augment.h"
#include "check.h"
#include "common.h"
#include "image_encode.h"
#include "loader.h"
#include "sample_transform.h"
#include "shard_list.h"
#include "tar_reader.h"
#include "tar_writer.h"
#include "webdataset.h"

#define DIR "build/test_loader"

// A smooth pattern (JPEG-friendly) that differs per sample.
static void pattern(uint8_t *px, int w, int h, int ch, int id) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++)
                px[(y * w + x) * ch + c] = (uint8_t)(x * 150 / w + y * 40 / h + c * 20 + id % 10 * 3);
}

static uint8_t *make_image(int w, int h, int ch, int id, int jpeg, size_t *len) {
    uint8_t *px = xmalloc((size_t)w * h * ch, "pixels");
    pattern(px, w, h, ch, id);
    uint8_t *b = jpeg ? encode_jpeg(px, w, h, ch, 95, len) : encode_png(px, w, h, ch, len);
    free(px);
    return b;
}

static void add_sample(TarWriter *tw, int key, const char *ext, const uint8_t *img, size_t len, int label) {
    char name[64], cls[16];
    if (img) {
        snprintf(name, sizeof name, "s%06d.%s", key, ext);
        tar_writer_add(tw, name, img, len);
    }
    if (label >= 0) {
        snprintf(name, sizeof name, "s%06d.cls", key);
        tar_writer_add(tw, name, cls, snprintf(cls, sizeof cls, "%d", label));
    }
}

// n samples with keys first.., labels key % label_mod, w x w images.
static void write_shard_mod(const char *path, int first, int n, int w, int ch, int jpeg, int label_mod) {
    TarWriter tw;
    tar_writer_open(&tw, path);
    for (int k = first; k < first + n; k++) {
        size_t len;
        uint8_t *img = make_image(w, w, ch, k, jpeg, &len);
        add_sample(&tw, k, jpeg ? "jpg" : "png", img, len, k % label_mod);
        free(img);
    }
    tar_writer_close(&tw);
}

static void write_shard(const char *path, int first, int n, int w, int ch, int jpeg) {
    write_shard_mod(path, first, n, w, ch, jpeg, 7);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t batch_hash(const Batch *b) {
    size_t nf = (size_t)b->n * b->channels * b->height * b->width * sizeof(float);
    uint64_t h = fnv(0xcbf29ce484222325ULL, &b->n, sizeof b->n);
    h = fnv(h, b->view1, nf);
    h = fnv(h, b->clean1, nf);
    if (b->view2) h = fnv(h, b->view2, nf), h = fnv(h, b->clean2, nf);
    h = fnv(h, b->labels, b->n * sizeof(int32_t));
    return fnv(h, &b->step, sizeof b->step);
}

static void test_brace_expansion(void) {
    int n;
    char **v = shard_list_expand("a/t-{0008..0011}.tar, b-{x,y{1..2}}.tar  c.tar", &n);
    const char *want[] = {"a/t-0008.tar", "a/t-0009.tar", "a/t-0010.tar", "a/t-0011.tar", "b-x.tar", "b-y1.tar", "b-y2.tar", "c.tar"};
    int ok = n == 8;
    for (int i = 0; ok && i < 8; i++) ok = !strcmp(v[i], want[i]);
    CHECK("brace_expansion", ok, "got %d names, first %s", n, n ? v[0] : "-");
    shard_list_free(v, n);
    // a zero-padded upper bound pads the lower one too (bash: {1..010} -> 001 ... 010)
    v = shard_list_expand("s-{8..010}.tar", &n);
    CHECK("brace_expansion_pads_to_the_wider_bound", n == 3 && !strcmp(v[0], "s-008.tar") && !strcmp(v[2], "s-010.tar"),
          "got %d names, first %s", n, n ? v[0] : "-");
    shard_list_free(v, n);
}

static void expand_huge_bound(void) { int n; shard_list_expand("s-{1..99999999999999999999}.tar", &n); }
static void expand_huge_product(void) { int n; shard_list_expand("s-{0000..9999}{0000..9999}.tar", &n); }

// RandomResizedCrop: inside the image, area and ratio within range, and
// torchvision's centre-crop fallback when no attempt fits.
static void test_rrc_params(void) {
    Rng r;
    rng_seed(&r, 5, 0);
    const float scale[2] = {0.08f, 1.0f}, ratio[2] = {3.0f / 4, 4.0f / 3};
    int ok = 1;
    for (int i = 0; i < 10000; i++) {
        int x, y, w, h;
        rrc_params(&r, 500, 375, scale, ratio, &x, &y, &w, &h);
        double area = (double)w * h / (500.0 * 375), ar = (double)w / h;
        ok &= x >= 0 && y >= 0 && x + w <= 500 && y + h <= 375 && area > 0.07 && area <= 1.0 && ar > 0.73 && ar < 1.37;
    }
    const float s1[2] = {1, 1}, wide[2] = {2, 2};
    int x, y, w, h;
    rrc_params(&r, 100, 100, s1, wide, &x, &y, &w, &h);  // w = 141 never fits: fallback
    int fallback = x == 0 && y == 25 && w == 100 && h == 50;
    CHECK("random_resized_crop_params", ok && fallback, "in range %d, fallback box %d,%d %dx%d", ok, x, y, w, h);
}

// Eval at the source size: resize and centre crop are the identity, so the
// clean pixels are the decoded pixels / 255.
static void test_round_trip(int jpeg, int ch) {
    char pat[256], name[64];
    snprintf(name, sizeof name, "round_trip_%s_c%d", jpeg ? "jpeg" : "png", ch);
    for (int s = 0; s < 2; s++) {
        char p[256];
        snprintf(p, sizeof p, DIR "/rt%d%d-%06d.tar", jpeg, ch, s);
        write_shard(p, s * 5, 5, 32, ch, jpeg);
    }
    snprintf(pat, sizeof pat, DIR "/rt%d%d-{000000..000001}.tar", jpeg, ch);
    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = pat;
    c.mode = LOADER_EVAL;
    c.batch_size = 4;
    c.image_size = 32;
    c.eval_resize = 32;
    c.channels = ch;
    Loader *L = loader_open(&c);
    Batch b;
    int seen = 0, labels_ok = 1, sizes[8], nb = 0;
    double worst = 0, sum = 0, norm_err = 0;
    uint8_t *px = xmalloc(32 * 32 * 3, "pixels");
    while (loader_next(L, &b)) {
        sizes[nb++] = b.n;
        for (int i = 0; i < b.n; i++, seen++) {
            labels_ok &= b.labels[i] == seen % 7;
            pattern(px, 32, 32, ch, seen);
            for (int cc = 0; cc < ch; cc++)
                for (int p = 0; p < 32 * 32; p++) {
                    size_t at = ((size_t)i * ch + cc) * 1024 + p;
                    double d = fabs(b.clean1[at] * 255.0 - px[p * ch + cc]);
                    worst = fmax(worst, d);
                    sum += d;
                    norm_err = fmax(norm_err, fabs(b.view1[at] - (b.clean1[at] - c.mean[cc]) / c.std[cc]));
                }
        }
    }
    free(px);
    double mean = sum / (seen * ch * 1024.0);
    int pix_ok = jpeg ? (worst <= 12 && mean <= 1.5) : worst < 1e-3;
    CHECK(name, seen == 10 && nb == 3 && sizes[2] == 2 && labels_ok && pix_ok && norm_err < 1e-5,
          "seen %d batches %d last %d labels_ok %d max|d| %.1f mean|d| %.2f norm err %g", seen, nb, nb ? sizes[nb - 1] : 0,
          labels_ok, worst, mean, norm_err);
    // A second pass gives the same epoch again.
    int again = 0;
    while (loader_next(L, &b)) again += b.n;
    snprintf(name, sizeof name, "eval_second_epoch_%s_c%d", jpeg ? "jpeg" : "png", ch);
    CHECK(name, again == 10, "second epoch gave %d samples", again);
    loader_close(L);
}

static void train_config(LoaderConfig *c, const char *shards, int threads) {
    loader_config_defaults(c);
    c->shards = shards;
    c->batch_size = 8;
    c->image_size = 24;
    c->two_views = 1;
    c->jitter_p = 0.8f, c->brightness = 0.4f, c->contrast = 0.4f, c->saturation = 0.2f, c->hue = 0.1f;
    c->grayscale_p = 0.2f, c->blur_p = 0.5f, c->solarize_p = 0.2f;
    c->num_threads = threads;
    c->shuffle_bytes = 20000;
    c->seed = 1234;
}

static void collect(Loader *L, int n, uint64_t *out) {
    Batch b;
    for (int i = 0; i < n; i++) out[i] = loader_next(L, &b) ? batch_hash(&b) : 0;
}

// Stop after each of stops[] batches, save the cursor, restore it into a new loader
// with another thread count, and require the same n batches as `straight`.
static void check_resume(const char *name, const char *pat, int n, const uint64_t *straight, const int *stops,
                         int nstops) {
    uint64_t h[64];
    int all_same = 1, restored = 1;
    size_t cs = loader_cursor_size();
    LoaderConfig c;
    for (int si = 0; si < nstops; si++) {
        int k = stops[si];
        memset(h, 0, sizeof h);
        train_config(&c, pat, 2);
        Loader *L = loader_open(&c);
        collect(L, k, h);
        uint8_t cursor[256];
        loader_cursor_save(L, cursor);
        loader_close(L);
        train_config(&c, pat, 1);
        L = loader_open(&c);
        restored &= loader_cursor_restore(L, cursor);
        collect(L, n - k, h + k);
        loader_close(L);
        all_same &= !memcmp(straight, h, sizeof(uint64_t) * n);
    }
    CHECK(name, cs <= 256 && restored && all_same, "restored %d, same %d, cursor %zu bytes", restored, all_same, cs);
}

static void test_determinism_and_resume(void) {
    for (int s = 0; s < 3; s++) {
        char p[256];
        snprintf(p, sizeof p, DIR "/det-%06d.tar", s);
        write_shard(p, s * 20, 20, 40, 3, 1);
    }
    const char *pat = DIR "/det-{000000..000002}.tar";
    enum { N = 17 };  // 7 steps per epoch: crosses two epoch boundaries
    uint64_t h1[N], h2[N], h3[N];
    LoaderConfig c;
    train_config(&c, pat, 1);
    Loader *L = loader_open(&c);
    collect(L, N, h1);
    int64_t steps = loader_steps_per_epoch(L);
    loader_close(L);
    train_config(&c, pat, 2);
    L = loader_open(&c);
    collect(L, N, h2);
    loader_close(L);
    int distinct = h1[0] != h1[1] && h1[0] != h1[7];
    CHECK("same_batches_1_and_2_threads", !memcmp(h1, h2, sizeof h1) && distinct && steps == 7,
          "hashes differ or repeat (steps %lld)", (long long)steps);

    // Resume: stop after k batches (mid-epoch, at the epoch boundary, in the
    // second epoch), save, restore into a new loader with another thread count.
    const int stops[] = {0, 5, 7, 9};
    check_resume("resume_identical_batches", pat, N, h1, stops, 4);

    // A different seed gives different batches.
    train_config(&c, pat, 2);
    c.seed = 99;
    L = loader_open(&c);
    collect(L, 1, h3);
    loader_close(L);
    CHECK("seed_changes_batches", h3[0] != h1[0], "seed 99 gave the seed-1234 batch");
}

// Resume through a shard cut inside an image: the replay (which seeks over image
// data) must account that sample in the shuffle buffer as the first pass did.
static void test_resume_over_truncated_shard(void) {
    for (int s = 0; s < 3; s++) {
        char p[256];
        snprintf(p, sizeof p, DIR "/cut-%06d.tar", s);
        write_shard(p, s * 20, 20, 40, 3, 1);
    }
    TarReader t;  // cut shard 1 halfway through its 7th sample's image
    const char *why;
    if (tar_open(&t, DIR "/cut-000001.tar") != 0) fatal("cannot open cut-000001.tar");
    for (int m = 0; m < 13; m++)
        if (tar_next(&t, &why) != 1) fatal("cut-000001.tar: member %d: %s", m, why);
    off_t cut = (off_t)(t.data_offset + t.size / 2);
    tar_close(&t);
    if (truncate(DIR "/cut-000001.tar", cut) != 0) fatal("truncate: %s", strerror(errno));
    const char *pat = DIR "/cut-{000000..000002}.tar";
    enum { N = 12 };
    uint64_t h1[N];
    LoaderConfig c;
    train_config(&c, pat, 1);
    Loader *L = loader_open(&c);
    collect(L, N, h1);
    loader_close(L);
    const int stops[] = {2, 4, 6};
    check_resume("resume_identical_batches_over_truncated_shard", pat, N, h1, stops, 3);
}

// Two ranks over shards of unequal size: the same number of steps, and
// disjoint samples within an epoch (labels are unique keys here).
static void test_rank_split(void) {
    const int sizes[5] = {10, 14, 6, 9, 11};
    for (int s = 0, first = 0; s < 5; first += sizes[s++]) {
        char p[256];
        snprintf(p, sizeof p, DIR "/ranks-%06d.tar", s);
        write_shard_mod(p, first, sizes[s], 8, 1, 0, 1000);
    }
    int ok = 1, steps_equal = 1;
    for (int epoch = 0; epoch < 3; epoch++) {
        uint8_t used[50] = {0};
        int64_t steps[2];
        for (int r = 0; r < 2; r++) {
            LoaderConfig c;
            loader_config_defaults(&c);
            c.shards = DIR "/ranks-{000000..000004}.tar";
            c.batch_size = 4, c.image_size = 8, c.channels = 1, c.num_threads = 1;
            c.rank = r, c.world_size = 2, c.seed = 7, c.shuffle_bytes = 3000;
            Loader *L = loader_open(&c);
            Batch b;
            // Walk to the epoch, then read it whole.
            while (loader_next(L, &b) && b.epoch < epoch) {}
            steps[r] = 0;
            do {
                steps[r]++;
                for (int i = 0; i < b.n; i++) ok &= b.labels[i] < 50 && !used[b.labels[i]]++;
                ok &= b.n == 4;
            } while (loader_next(L, &b) && b.epoch == epoch);
            loader_close(L);
        }
        steps_equal &= steps[0] == steps[1] && steps[0] >= 1;
    }
    CHECK("ranks_equal_steps_disjoint_samples", ok && steps_equal, "disjoint/full %d, equal steps %d", ok, steps_equal);

    // Eval: 3 ranks over 2 shards (fewer shards than ranks) still see every sample once.
    uint8_t seen[50] = {0};
    int total = 0;
    for (int r = 0; r < 3; r++) {
        LoaderConfig c;
        loader_config_defaults(&c);
        c.shards = DIR "/ranks-{000000..000001}.tar";
        c.mode = LOADER_EVAL;
        c.batch_size = 4, c.image_size = 8, c.channels = 1, c.rank = r, c.world_size = 3;
        Loader *L = loader_open(&c);
        Batch b;
        while (loader_next(L, &b))
            for (int i = 0; i < b.n; i++, total++) seen[b.labels[i] % 50]++;
        loader_close(L);
    }
    int once = total == 24;
    for (int k = 0; k < 24; k++) once &= seen[k] == 1;
    CHECK("eval_ranks_see_every_sample_once", once, "%d samples over 3 ranks, expected 24 once each", total);

    // An eval rank with no samples (more ranks than samples) ends its epoch at once and
    // starts no reader: before, the reader spun a core over empty epochs until loader_close.
    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = DIR "/ranks-{000000..000001}.tar";
    c.mode = LOADER_EVAL;
    c.batch_size = 4, c.image_size = 8, c.channels = 1, c.rank = 30, c.world_size = 31;
    Loader *L = loader_open(&c);
    Batch b;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    int first = loader_next(L, &b), second = loader_next(L, &b);
    usleep(300000);
    getrusage(RUSAGE_SELF, &after);
    loader_close(L);
    double cpu = (after.ru_utime.tv_sec - before.ru_utime.tv_sec) + 1e-6 * (after.ru_utime.tv_usec - before.ru_utime.tv_usec);
    CHECK("eval_rank_without_samples_is_idle", first == 0 && second == 0 && cpu < 0.1,
          "loader_next gave %d, %d; %.2f s of CPU in 0.3 s", first, second, cpu);
}

// ---- the train stream: one global stream, sliced by rank ----------------------------------

// Shards of unequal sizes: 40 samples, keys (= labels) 0..39, shard 1 JPEG, the others PNG.
static const int g_sizes[4] = {9, 13, 7, 11};
static int g_jpeg(int key) { return key >= 9 && key < 22; }

static void write_global_shards(const char *prefix) {
    for (int s = 0, first = 0; s < 4; first += g_sizes[s++]) {
        char p[256];
        snprintf(p, sizeof p, "%s-%06d.tar", prefix, s);
        write_shard_mod(p, first, g_sizes[s], 16, 3, g_jpeg(first), 1000);
    }
}

static void gzip_file(const char *src, const char *dst) {
    FILE *f = fopen(src, "rb");
    gzFile g = gzopen(dst, "wb");
    if (!f || !g) fatal("gzip %s -> %s failed", src, dst);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) gzwrite(g, buf, (unsigned)n);
    fclose(f);
    gzclose(g);
}

// The same shards with bad samples: garbage under .jpg, a PNG cut short, a label that is no
// number, a shard cut inside an image, and a missing shard (one unreadable position).
static void write_corrupt_shards(const char *prefix) {
    uint8_t garbage[300];
    for (int i = 0; i < 300; i++) garbage[i] = (uint8_t)(i * 37 + 11);
    for (int s = 0, first = 0; s < 4; first += g_sizes[s++]) {
        char p[256];
        snprintf(p, sizeof p, "%s-%06d.tar", prefix, s);
        TarWriter tw;
        tar_writer_open(&tw, p);
        for (int k = first; k < first + g_sizes[s]; k++) {
            size_t len;
            uint8_t *img = make_image(16, 16, 3, k, g_jpeg(k), &len);
            const char *ext = g_jpeg(k) ? "jpg" : "png";
            if (k % 9 == 4) add_sample(&tw, k, "jpg", garbage, sizeof garbage, k);
            else if (k % 9 == 7) add_sample(&tw, k, ext, img, len * 2 / 3, k);
            else if (k == 12) {
                add_sample(&tw, k, ext, img, len, -1);
                tar_writer_add(&tw, "s000012.cls", (const uint8_t *)"x1", 2);
            } else add_sample(&tw, k, ext, img, len, k);
            free(img);
        }
        tar_writer_close(&tw);
    }
    char p[256];  // cut shard 3 inside its 8th sample's image
    snprintf(p, sizeof p, "%s-%06d.tar", prefix, 3);
    TarReader t;
    const char *why;
    if (tar_open(&t, p) != 0) fatal("cannot open %s", p);
    for (int m = 0; m < 15; m++)
        if (tar_next(&t, &why) != 1) fatal("%s: member %d: %s", p, m, why);
    off_t cut = (off_t)(t.data_offset + t.size / 2);
    tar_close(&t);
    if (truncate(p, cut) != 0) fatal("truncate: %s", strerror(errno));
}

// root/c<k>/<i>.png|jpg: 5 classes of 8 images; with `bad`, one of them garbage after its signature.
static void write_global_folder(const char *root, int bad) {
    char p[256];
    mkdir(root, 0755);
    for (int k = 0; k < 5; k++) {
        snprintf(p, sizeof p, "%s/c%d", root, k);
        mkdir(p, 0755);
        for (int i = 0; i < 8; i++) {
            int id = k * 8 + i, jpeg = i % 3 == 0;
            size_t len;
            uint8_t *img = make_image(16, 16, 3, id, jpeg, &len);
            if (bad && id == 13) memset(img + 8, 0x5A, len - 8);
            snprintf(p, sizeof p, "%s/c%d/%02d.%s", root, k, id, jpeg ? "jpg" : "png");
            FILE *f = fopen(p, "wb");
            if (!f) fatal("cannot write %s", p);
            fwrite(img, 1, len, f);
            fclose(f);
            free(img);
        }
    }
}

static void global_config(LoaderConfig *c, const char *shards, const char *folder) {
    train_config(c, shards, 2);
    c->image_folder = folder;
    c->image_size = 12;
    c->shuffle_bytes = 2500;
    c->seed = 4321;
    c->max_skip_fraction = 1;
    c->warn_limit = 0;
}

// The next batch of each of R loaders, concatenated in rank order.
typedef struct {
    int n, nviews, agree;
    size_t nf;
    float *v[2], *c[2];
    int32_t labels[64];
    int64_t epoch, step;
} Gathered;

static void gathered_init(Gathered *g, int cap, int nf) {
    memset(g, 0, sizeof *g);
    for (int v = 0; v < 2; v++) {
        g->v[v] = xcalloc((size_t)cap * nf, sizeof(float), "gathered views");
        g->c[v] = xcalloc((size_t)cap * nf, sizeof(float), "gathered clean");
    }
}

static void gathered_free(Gathered *g) {
    for (int v = 0; v < 2; v++) free(g->v[v]), free(g->c[v]);
}

static int gather(Loader **L, int R, Gathered *g) {
    g->n = 0, g->agree = 1;
    for (int r = 0; r < R; r++) {
        Batch b;
        if (!loader_next(L[r], &b)) return 0;
        g->nf = (size_t)b.channels * b.height * b.width;
        g->nviews = b.view2 ? 2 : 1;
        const float *src[2][2] = {{b.view1, b.view2}, {b.clean1, b.clean2}};
        for (int v = 0; v < g->nviews; v++) {
            memcpy(g->v[v] + g->n * g->nf, src[0][v], b.n * g->nf * sizeof(float));
            memcpy(g->c[v] + g->n * g->nf, src[1][v], b.n * g->nf * sizeof(float));
        }
        memcpy(g->labels + g->n, b.labels, b.n * sizeof(int32_t));
        if (r == 0) g->epoch = b.epoch, g->step = b.step;
        g->agree &= b.epoch == g->epoch && b.step == g->step;
        g->n += b.n;
    }
    return 1;
}

static uint64_t gathered_hash(const Gathered *g) {
    size_t nb = g->n * g->nf * sizeof(float);
    uint64_t h = fnv(0xcbf29ce484222325ULL, &g->n, sizeof g->n);
    for (int v = 0; v < g->nviews; v++) h = fnv(fnv(h, g->v[v], nb), g->c[v], nb);
    h = fnv(h, g->labels, g->n * sizeof(int32_t));
    h = fnv(h, &g->epoch, sizeof g->epoch);
    return fnv(h, &g->step, sizeof g->step);
}

static int64_t total_skipped(Loader **L, int R) {
    int64_t n = 0;
    for (int r = 0; r < R; r++)
        for (int w = 0; w < SKIP_NUM_REASONS; w++) n += loader_skipped(L[r], w);
    return n;
}

// R loaders of world R and batch b; R = 1 with batch b is the single-process loader.
static void open_world(const LoaderConfig *base, int R, int b, Loader **L) {
    for (int r = 0; r < R; r++) {
        LoaderConfig c = *base;
        c.batch_size = b, c.rank = r, c.world_size = R;
        L[r] = loader_open(&c);
    }
}

static void close_world(Loader **L, int R) {
    for (int r = 0; r < R; r++) loader_close(L[r]);
}

// R ranks of batch b against one loader of batch R*b over two epochs and more: per step, the
// ranks' batches concatenated are the single batch bit for bit, and each skip is counted once.
static void check_sliced(const char *name, const LoaderConfig *base, int R, int b, int want_skips) {
    Loader *one, *ranks[4];
    open_world(base, 1, R * b, &one);
    open_world(base, R, b, ranks);
    int64_t spe = loader_steps_per_epoch(one);
    int spe_same = spe >= 2;
    for (int r = 0; r < R; r++) spe_same &= loader_steps_per_epoch(ranks[r]) == spe;
    Gathered a, g;
    gathered_init(&a, R * b, 3 * 12 * 12);
    gathered_init(&g, R * b, 3 * 12 * 12);
    int same = 1, agree = 1, short_batch = 0, steps = (int)(2 * spe + 2);
    int64_t epoch_end = -1;
    for (int s = 0; s < steps && same; s++) {
        same &= gather(&one, 1, &a) && gather(ranks, R, &g);
        same &= a.n == g.n && a.epoch == g.epoch && a.step == g.step && a.nviews == 2 && g.nviews == 2;
        for (int v = 0; v < 2 && same; v++)
            same &= !memcmp(a.v[v], g.v[v], a.n * a.nf * sizeof(float)) && !memcmp(a.c[v], g.c[v], a.n * a.nf * sizeof(float));
        same &= !memcmp(a.labels, g.labels, a.n * sizeof(int32_t));
        agree &= g.agree;
        short_batch |= a.n < R * b;
        if (a.epoch == 1 && epoch_end < 0) epoch_end = s;
    }
    int64_t skips_one = total_skipped(&one, 1), skips_ranks = total_skipped(ranks, R);
    int skips_ok = skips_one == skips_ranks && (want_skips ? skips_one > 0 && short_batch : skips_one == 0);
    CHECK(name, same && agree && spe_same && epoch_end == spe && skips_ok,
          "same %d, ranks agree %d, steps/epoch %lld (same %d), epoch 1 at step %lld, skips %lld single vs %lld ranks "
          "(short batch %d)", same, agree, (long long)spe, spe_same, (long long)epoch_end, (long long)skips_one,
          (long long)skips_ranks, short_batch);
    gathered_free(&a), gathered_free(&g);
    close_world(&one, 1);
    close_world(ranks, R);
}

static void test_global_stream(void) {
    write_global_shards(DIR "/glob");
    const char *plain = DIR "/glob-{000000..000003}.tar";
    for (int s = 0; s < 4; s++) {
        char src[256], dst[256];
        snprintf(src, sizeof src, DIR "/glob-%06d.tar", s);
        snprintf(dst, sizeof dst, DIR "/globz-%06d.tar.gz", s);
        gzip_file(src, dst);
    }
    write_corrupt_shards(DIR "/globbad");
    write_global_folder(DIR "/globdir", 0);
    write_global_folder(DIR "/globdirbad", 1);
    LoaderConfig c;
    global_config(&c, plain, NULL);
    check_sliced("global_stream_2_ranks_tar", &c, 2, 3, 0);
    check_sliced("global_stream_3_ranks_tar", &c, 3, 2, 0);
    c.shuffle_bytes = 1 << 20;  // the whole data set in the buffer: draws from every shard's file in turn
    check_sliced("global_stream_3_ranks_tar_whole_set_buffered", &c, 3, 4, 0);
    global_config(&c, DIR "/globz-{000000..000003}.tar.gz", NULL);
    check_sliced("global_stream_2_ranks_gzip", &c, 2, 3, 0);
    check_sliced("global_stream_3_ranks_gzip", &c, 3, 2, 0);
    global_config(&c, DIR "/globz-{000000..000001}.tar.gz", NULL);  // fewer shards than ranks
    check_sliced("global_stream_3_ranks_over_2_shards", &c, 3, 2, 0);
    global_config(&c, NULL, DIR "/globdir");
    check_sliced("global_stream_2_ranks_image_folder", &c, 2, 3, 0);
    check_sliced("global_stream_3_ranks_image_folder", &c, 3, 2, 0);
    // bad samples: each rank compacts its own slice
    global_config(&c, DIR "/globbad-{000000..000004}.tar", NULL);  // 000004 does not exist
    check_sliced("global_stream_2_ranks_tar_with_skips", &c, 2, 3, 1);
    check_sliced("global_stream_3_ranks_tar_with_skips", &c, 3, 2, 1);
    for (int s = 0; s < 4; s++) {
        char src[256], dst[256];
        snprintf(src, sizeof src, DIR "/globbad-%06d.tar", s);
        snprintf(dst, sizeof dst, DIR "/globbadz-%06d.tar.gz", s);
        gzip_file(src, dst);
    }
    global_config(&c, DIR "/globbadz-{000000..000003}.tar.gz", NULL);
    check_sliced("global_stream_2_ranks_gzip_with_skips", &c, 2, 3, 1);
    global_config(&c, NULL, DIR "/globdirbad");
    check_sliced("global_stream_3_ranks_image_folder_with_skips", &c, 3, 2, 1);
}

// Resume across world sizes: a cursor saved at step k by one world continues the same global
// stream in another (1 -> 2, 2 -> 1 through loader_cursor_merge, 2 -> 3), skip counts included.
static void test_resume_across_world_sizes(void) {
    LoaderConfig c;
    global_config(&c, DIR "/globbad-{000000..000004}.tar", NULL);
    enum { N = 14, G = 6 };
    size_t cs = loader_cursor_size();
    Loader *L[3];
    Gathered g;
    gathered_init(&g, G, 3 * 12 * 12);
    uint64_t straight[N];
    int64_t skips_at[N + 1];
    open_world(&c, 1, G, L);
    skips_at[0] = 0;
    for (int s = 0; s < N; s++) {
        straight[s] = gather(L, 1, &g) ? gathered_hash(&g) : 0;
        skips_at[s + 1] = total_skipped(L, 1);
    }
    close_world(L, 1);
    const int stops[] = {4, 6, 9};  // mid-epoch, at the epoch boundary, in the second epoch
    int ok12 = 1, ok21 = 1, ok23 = 1, counts = 1;
    uint8_t cur[3 * 256], merged[256];  // merge takes the cursors packed, cs bytes each
    for (int si = 0; si < 3; si++) {
        int k = stops[si];
        // 1 -> 2: rank 0 keeps the counts, rank 1 starts from none
        open_world(&c, 1, G, L);
        for (int s = 0; s < k; s++) gather(L, 1, &g);
        loader_cursor_save(L[0], cur);
        close_world(L, 1);
        memcpy(cur + cs, cur, cs);
        loader_cursor_clear_counts(cur + cs);
        open_world(&c, 2, G / 2, L);
        for (int r = 0; r < 2; r++) ok12 &= loader_cursor_restore(L[r], cur + r * cs);
        counts &= total_skipped(L, 1) == skips_at[k] && total_skipped(L + 1, 1) == 0;
        for (int s = k; s < N; s++) ok12 &= gather(L, 2, &g) && g.agree && gathered_hash(&g) == straight[s];
        counts &= total_skipped(L, 2) == skips_at[N];
        close_world(L, 2);
        // 2 -> 1, merged
        open_world(&c, 2, G / 2, L);
        for (int s = 0; s < k; s++) gather(L, 2, &g);
        for (int r = 0; r < 2; r++) loader_cursor_save(L[r], cur + r * cs);
        close_world(L, 2);
        ok21 &= loader_cursor_merge(cur, 2, merged);
        open_world(&c, 1, G, L);
        ok21 &= loader_cursor_restore(L[0], merged);
        counts &= total_skipped(L, 1) == skips_at[k];
        for (int s = k; s < N; s++) ok21 &= gather(L, 1, &g) && gathered_hash(&g) == straight[s];
        close_world(L, 1);
        // 2 -> 3: every new rank takes the merged position, rank 0 the counts
        memcpy(cur, merged, cs);
        memcpy(cur + cs, merged, cs), memcpy(cur + 2 * cs, merged, cs);
        loader_cursor_clear_counts(cur + cs), loader_cursor_clear_counts(cur + 2 * cs);
        open_world(&c, 3, G / 3, L);
        for (int r = 0; r < 3; r++) ok23 &= loader_cursor_restore(L[r], cur + r * cs);
        for (int s = k; s < N; s++) ok23 &= gather(L, 3, &g) && g.agree && gathered_hash(&g) == straight[s];
        counts &= total_skipped(L, 3) == skips_at[N];
        close_world(L, 3);
    }
    CHECK("resume_world_1_to_2", ok12, "the 2-rank continuation differs from the single stream");
    CHECK("resume_world_2_to_1_merged", ok21, "the merged continuation differs from the single stream");
    CHECK("resume_world_2_to_3", ok23, "the 3-rank continuation differs from the single stream");
    CHECK("resume_across_worlds_counts_each_skip_once", counts && skips_at[N] > 0,
          "skip counts do not add up (%lld skips in %d steps)", (long long)skips_at[N], N);
    gathered_free(&g);
}

// What a cursor does not fit is refused: another global batch or seed, ranks at different
// positions (merge), and in eval mode another rank or world size.
static void test_cursor_refusals(void) {
    LoaderConfig c;
    global_config(&c, DIR "/glob-{000000..000003}.tar", NULL);
    size_t cs = loader_cursor_size();
    uint8_t cur[2 * 256], merged[256];  // merge takes the cursors packed, cs bytes each
    Loader *L[3];
    Gathered g;
    gathered_init(&g, 6, 3 * 12 * 12);
    open_world(&c, 2, 3, L);
    gather(L, 2, &g);
    loader_cursor_save(L[0], cur);
    gather(L + 1, 1, &g);  // rank 1 one step ahead
    loader_cursor_save(L[1], cur + cs);
    close_world(L, 2);
    int uneven = loader_cursor_merge(cur, 2, merged);
    memcpy(cur + cs, cur, cs);
    int even = loader_cursor_merge(cur, 2, merged);
    open_world(&c, 1, 5, L);  // global batch 5, not 6
    int batch = loader_cursor_restore(L[0], merged);
    close_world(L, 1);
    LoaderConfig other = c;
    other.seed++;
    open_world(&other, 1, 6, L);
    int seed = loader_cursor_restore(L[0], merged);
    close_world(L, 1);
    open_world(&c, 3, 2, L);  // any split of the same global batch fits
    int split = loader_cursor_restore(L[0], merged);
    close_world(L, 3);
    c.mode = LOADER_EVAL;
    open_world(&c, 2, 3, L);
    loader_cursor_save(L[1], cur);
    close_world(L, 2);
    open_world(&c, 1, 6, L);
    int eval_other_world = loader_cursor_restore(L[0], cur);
    close_world(L, 1);
    open_world(&c, 2, 3, L);
    int eval_other_rank = loader_cursor_restore(L[0], cur), eval_same = loader_cursor_restore(L[1], cur);
    close_world(L, 2);
    CHECK("cursor_refuses_what_does_not_fit",
          !uneven && even && !batch && !seed && split && !eval_other_world && !eval_other_rank && eval_same,
          "merge uneven %d even %d; restore: global batch 5 %d, other seed %d, 3x2 %d; eval: world 1 %d, rank 0 %d, "
          "rank 1 %d", uneven, even, batch, seed, split, eval_other_world, eval_other_rank, eval_same);
    gathered_free(&g);
}

// splitmix64 of (epoch, rank 0) plus the position: the augmentation stream of a single process.
static uint64_t single_process_stream(int64_t epoch, int64_t pos) {
    uint64_t s = (uint64_t)epoch * 0x9E3779B97F4A7C15ULL;
    return splitmix64(&s) + (uint64_t)pos;
}

// One process (world 1) keeps its stream: a fixed sample order (keys are labels), and every
// view is transform_sample of that image with the RNG seeded from (seed, epoch, position).
static void test_world_one_unchanged(void) {
    LoaderConfig c;
    global_config(&c, DIR "/glob-{000000..000003}.tar", NULL);
    c.batch_size = 6;
    enum { STEPS = 14 };
    static const int32_t want[STEPS * 6] = {  // the single-process order for this data and seed: must not move
        37, 39, 38, 27, 28, 10, 25, 24, 26, 9, 13, 34, 14, 29, 32, 30, 15, 33,
        11, 16, 23, 36, 17, 12, 35, 19, 18, 20, 4, 0, 7, 22, 3, 2, 6, 1,
        12, 9, 14, 13, 10, 11, 16, 15, 17, 19, 20, 32, 21, 22, 23, 1, 26, 31,
        35, 27, 2, 18, 28, 3, 38, 8, 5, 6, 29, 36, 33, 34, 30, 37, 7, 0,
        10, 13, 14, 11, 12, 9, 17, 19, 16, 21, 25, 18,
    };
    Loader *L = loader_open(&c);
    int order = loader_steps_per_epoch(L) == 6, views = 1;
    TransformScratch ts = {0};
    size_t nf = 3 * 12 * 12;
    float *v[2] = {xmalloc(nf * sizeof(float), "view"), xmalloc(nf * sizeof(float), "view")};
    float *cl[2] = {xmalloc(nf * sizeof(float), "clean"), xmalloc(nf * sizeof(float), "clean")};
    for (int s = 0; s < STEPS; s++) {
        Batch b;
        if (!loader_next(L, &b) || b.n != 6) { order = 0; break; }
        for (int i = 0; i < 6; i++) {
            int key = b.labels[i];
            order &= key == want[s * 6 + i];
            size_t len;
            uint8_t *img = make_image(16, 16, 3, key, g_jpeg(key), &len);
            Rng rng;
            rng_seed(&rng, c.seed, single_process_stream(b.epoch, b.step * 6 + i));
            char detail[96];
            int why = transform_sample(&c, img, len, g_jpeg(key) ? IMG_JPEG : IMG_PNG, &rng, 2, v, cl, &ts, detail,
                                       sizeof detail);
            free(img);
            const float *got[4] = {b.view1, b.view2, b.clean1, b.clean2}, *mine[4] = {v[0], v[1], cl[0], cl[1]};
            views &= why < 0;
            for (int k = 0; k < 4; k++) views &= !memcmp(got[k] + i * nf, mine[k], nf * sizeof(float));
        }
    }
    loader_close(L);
    transform_scratch_free(&ts);
    for (int k = 0; k < 2; k++) free(v[k]), free(cl[k]);
    CHECK("world_1_sample_order_unchanged", order, "the single-process sample order changed");
    CHECK("world_1_views_from_the_single_process_stream", views, "a view is not the (seed, epoch, position) augmentation");
}

// Every bad-input case, one sample each (plus whole-shard cases).
static void test_bad_input(void) {
    TarWriter tw;
    tar_writer_open(&tw, DIR "/bad-000000.tar");
    size_t len, plen;
    uint8_t *good = make_image(32, 32, 3, 1, 0, &len);
    add_sample(&tw, 0, "png", good, len, 1);
    uint8_t *jpg = make_image(32, 32, 3, 2, 1, &len);
    uint8_t garbage[300];
    for (int i = 0; i < 300; i++) garbage[i] = (uint8_t)(i * 37 + 11);
    garbage[0] = 0xFF, garbage[1] = 0xD8, garbage[2] = 0xFF, garbage[3] = 0x01;
    add_sample(&tw, 1, "jpg", garbage, sizeof garbage, 1);       // corrupt JPEG
    add_sample(&tw, 2, "jpg", jpg, len / 2, 1);                  // truncated JPEG
    uint8_t *png = make_image(32, 32, 3, 3, 0, &plen);
    add_sample(&tw, 3, "png", png, plen * 2 / 3, 1);             // truncated PNG
    add_sample(&tw, 4, "jpg", png, plen, 1);                     // PNG under .jpg
    add_sample(&tw, 5, "png", garbage + 4, 200, 1);              // not an image at all
    add_sample(&tw, 6, "png", NULL, 0, 1);                       // label only
    add_sample(&tw, 7, "png", good, plen, -1);                   // image only
    size_t blen;
    uint8_t *big = make_image(64, 64, 3, 4, 0, &blen);
    add_sample(&tw, 8, "png", big, blen, 1);                     // over max_pixels
    add_sample(&tw, 9, "jpg", jpg, len, 2);                      // good
    tar_writer_close(&tw);
    // A shard cut inside its third member.
    write_shard(DIR "/bad-000001.tar", 100, 3, 32, 3, 0);
    FILE *f = fopen(DIR "/bad-000001.tar", "r+b");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    if (truncate(DIR "/bad-000001.tar", sz - 1024 - 700) != 0) fatal("truncate: %s", strerror(errno));
    free(good), free(jpg), free(png), free(big);

    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = DIR "/bad-{000000..000002}.tar";  // 000002 does not exist
    c.mode = LOADER_EVAL;
    c.batch_size = 4;
    c.image_size = 16;
    c.max_pixels = 2000;       // 32x32 passes, 64x64 does not
    c.max_skip_fraction = 1;
    c.warn_limit = 30;
    Loader *L = loader_open(&c);
    Batch b;
    int ok = 0;
    while (loader_next(L, &b)) ok += b.n;
    int64_t want[SKIP_NUM_REASONS] = {[SKIP_CORRUPT_IMAGE] = 3, [SKIP_WRONG_FORMAT] = 2, [SKIP_MISSING_PART] = 2,
                                      [SKIP_TRUNCATED_TAR] = 1, [SKIP_UNREADABLE_SHARD] = 1, [SKIP_TOO_LARGE] = 1};
    for (int r = 0; r < SKIP_NUM_REASONS; r++) {
        char name[80];
        snprintf(name, sizeof name, "bad_input_counted_%s", loader_skip_reason_name(r));
        for (char *p = name; *p; p++) if (*p == ' ') *p = '_';
        CHECK(name, loader_skipped(L, r) == want[r], "counted %lld, expected %lld", (long long)loader_skipped(L, r),
              (long long)want[r]);
    }
    // Good: keys 0 and 9, and the truncated shard's first two samples.
    CHECK("bad_input_good_samples_kept", ok == 4, "%d good samples came through, expected 4", ok);
    loader_close(L);
}

// One raw 512-byte tar header: name, type, the 12-byte size field as given, checksum.
static void raw_header(uint8_t h[512], const char *name, char type, const uint8_t size_field[12]) {
    memset(h, 0, 512);
    memcpy(h, name, strlen(name));
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 124, size_field, 12);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    tar_header_seal(h);
}

// Write header (+ payload padded to 512) + 2 KiB of zeros; return what tar_next says of its first member.
static int tar_first_member(const char *path, const uint8_t h[512], const char *payload, const char **why) {
    FILE *f = fopen(path, "wb");
    if (!f) fatal("cannot write %s", path);
    fwrite(h, 1, 512, f);
    uint8_t zero[2048] = {0};
    if (payload) {
        size_t n = strlen(payload);
        fwrite(payload, 1, n, f);
        fwrite(zero, 1, (512 - n % 512) % 512, f);
        uint8_t member[512];  // a plain member after the extended header
        uint8_t size0[12] = "00000000000";
        raw_header(member, "a.cls", '0', size0);
        fwrite(member, 1, 512, f);
    }
    fwrite(zero, 1, sizeof zero, f);
    fclose(f);
    TarReader t;
    if (tar_open(&t, path) != 0) fatal("cannot open %s", path);
    int r = tar_next(&t, why);
    tar_close(&t);
    return r;
}

// Headers whose checksums are right but whose sizes or PAX records are not: a corrupt
// member, reported as such, never a negative or huge size handed to a read.
static void test_tar_malformed_headers(void) {
    const char *path = DIR "/headers.tar", *why;
    uint8_t h[512];
    uint8_t negative[12] = {0xC0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};  // base-256 -1
    raw_header(h, "a.png", '0', negative);
    int r = tar_first_member(path, h, NULL, &why);
    CHECK("tar_negative_base256_size_is_corrupt", r == -1 && strstr(why, "size"), "tar_next %d (%s)", r, why);
    uint8_t huge[12] = {0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};  // > int64
    raw_header(h, "a.png", '0', huge);
    r = tar_first_member(path, h, NULL, &why);
    CHECK("tar_overflowing_base256_size_is_corrupt", r == -1 && strstr(why, "size"), "tar_next %d (%s)", r, why);
    uint8_t ok[12] = {0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // base-256 0: still accepted
    raw_header(h, "a.cls", '0', ok);
    r = tar_first_member(path, h, NULL, &why);
    CHECK("tar_base256_zero_size_accepted", r == 1, "tar_next %d (%s)", r, why);
    const char *bad_pax[] = {"1 path=x\n", "13 path=abc\n", "11 size=-5\n", "11 size=7x\n", "9 path=x!"};
    const char *pax_names[] = {"tar_pax_length_shorter_than_key", "tar_pax_length_past_newline",
                               "tar_pax_negative_size", "tar_pax_size_not_a_number", "tar_pax_no_newline"};
    for (int i = 0; i < 5; i++) {
        char sz[12];
        snprintf(sz, sizeof sz, "%011o", (unsigned)strlen(bad_pax[i]));
        raw_header(h, "PaxHeader", 'x', (const uint8_t *)sz);
        r = tar_first_member(path, h, bad_pax[i], &why);
        CHECK(pax_names[i], r == -1 && strstr(why, "PAX"), "tar_next %d (%s) for record '%s'", r, why, bad_pax[i]);
    }
    char sz[12];
    snprintf(sz, sizeof sz, "%011o", 12u);
    raw_header(h, "PaxHeader", 'x', (const uint8_t *)sz);
    r = tar_first_member(path, h, "12 path=b.x\n", &why);
    CHECK("tar_pax_good_record_accepted", r == 1, "tar_next %d (%s)", r, why);
}

// Run fn in a child; it must exit 1 with `want` in its stderr.
static void expect_fatal(const char *name, void (*fn)(void), const char *want) {
    int fd[2];
    if (pipe(fd) != 0) fatal("pipe failed");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        check_death_child();
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    char buf[4096] = {0};
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0) n += r;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    CHECK(name, WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(buf, want), "status %d, stderr: %.300s", st, buf);
}

static void read_manifest_text(const char *text) {
    FILE *f = fopen(DIR "/malformed_manifest.txt", "w");
    fputs(text, f);
    fclose(f);
    Manifest m;
    manifest_read(DIR "/malformed_manifest.txt", &m);
}

static void manifest_negative_shard_count(void) {
    read_manifest_text("ccvit-manifest 1\nsamples 10\nclasses 0\nshard a-000000.tar 10\nshard a-000001.tar -3\n");
}

static void manifest_negative_samples(void) { read_manifest_text("ccvit-manifest 1\nsamples -1\n"); }

static void open_missing_folder(void) {
    LoaderConfig c;
    loader_config_defaults(&c);
    c.image_folder = DIR "/no-such-folder";
    loader_open(&c);
}

static void open_empty_list(void) {
    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = " , ";
    loader_open(&c);
}

static void open_all_missing(void) {
    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = DIR "/nothing-{0..3}.tar";
    loader_open(&c);
}

// 30 of 60 samples bad, limit 10%: the run must stop.
static void run_too_many_skips(void) {
    TarWriter tw;
    tar_writer_open(&tw, DIR "/skips-000000.tar");
    size_t len;
    uint8_t *img = make_image(16, 16, 3, 0, 0, &len);
    for (int k = 0; k < 60; k++) add_sample(&tw, k, "png", img, k % 2 ? len / 2 : len, 0);
    tar_writer_close(&tw);
    free(img);
    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = DIR "/skips-000000.tar";
    c.mode = LOADER_EVAL;
    c.batch_size = 10;
    c.image_size = 16;
    c.max_skip_fraction = 0.1f;
    c.warn_limit = 0;
    Loader *L = loader_open(&c);
    Batch b;
    while (loader_next(L, &b)) {}
}

int main(void) {
    mkdir("build", 0755);
    mkdir(DIR, 0755);
    test_brace_expansion();
    test_rrc_params();
    test_round_trip(0, 3);
    test_round_trip(0, 1);
    test_round_trip(1, 3);
    test_round_trip(1, 1);
    test_determinism_and_resume();
    test_resume_over_truncated_shard();
    test_rank_split();
    test_global_stream();
    test_resume_across_world_sizes();
    test_cursor_refusals();
    test_world_one_unchanged();
    test_bad_input();
    test_tar_malformed_headers();
    expect_fatal("missing_folder_is_fatal", open_missing_folder, "does not exist");
    expect_fatal("empty_shard_list_is_fatal", open_empty_list, "expands to no shards");
    expect_fatal("all_shards_missing_is_fatal", open_all_missing, "none of the 4 shards");
    expect_fatal("manifest_negative_shard_count_names_line", manifest_negative_shard_count,
                 "malformed_manifest.txt:5: negative sample count -3 for shard a-000001.tar");
    expect_fatal("manifest_negative_samples_names_line", manifest_negative_samples,
                 "malformed_manifest.txt:2: negative sample count -1");
    expect_fatal("brace_bound_over_15_digits_is_refused", expand_huge_bound, "over 15 digits");
    expect_fatal("brace_product_over_a_million_is_refused", expand_huge_product, "more than a million names");
    expect_fatal("skip_fraction_stops_run", run_too_many_skips, "max_skip_fraction");
    return check_exit();
}
