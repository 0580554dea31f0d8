// check_data: scan a dataset with the trainer's own readers before a long job
// is committed to it: samples per shard, labelled and unlabelled counts, image
// sizes and formats, every bad sample grouped by reason, and the skip rate the
// trainer's limit would see. Exits 1 above that limit.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "image_decode.h"
#include "image_folder.h"
#include "loader.h"
#include "sample_transform.h"
#include "shard_list.h"
#include "webdataset.h"

static const char *USAGE =
    "usage: check_data SRC [--data_format=shards|imagefolder|folder|list] [--task=pretrain|finetune]\n"
    "                  [--full] [--in_chans=1|3] [--max_skip_fraction=F]\n"
    "\n"
    "Reads SRC (shard patterns as data_train takes them, .tar or .tar.gz; or a folder; or a list file)\n"
    "with the trainer's readers and reports samples per shard, labelled / unlabelled counts, image\n"
    "sizes and formats, and every bad sample by reason. Only image headers are decoded unless --full.\n"
    "--task=finetune counts a sample without a label as bad, as fine-tuning and eval do. Exits 1 when\n"
    "the share of bad samples exceeds max_skip_fraction (the trainer's default, 0.05), else 0.\n";

typedef struct {
    int reason;
    char *where, *detail;
} Bad;

typedef struct {
    int full, channels, need_labels;
    int64_t max_pixels;
    int64_t samples, labelled, formats[3], bad_n, bad_cap;
    int64_t *widths, *heights, sized, sized_cap;
    Bad *bad;
} Scan;

static void add_bad(Scan *s, int reason, const char *shard, const char *key, const char *detail) {
    if (s->bad_n == s->bad_cap) {
        s->bad_cap = s->bad_cap ? 2 * s->bad_cap : 64;
        s->bad = realloc(s->bad, sizeof(Bad) * s->bad_cap);
        if (!s->bad) fatal("out of memory listing bad samples");
    }
    char where[4096];
    snprintf(where, sizeof where, "%s%s%s", shard, key ? " " : "", key ? key : "");
    s->bad[s->bad_n++] = (Bad){reason, xstrdup(where), xstrdup(detail ? detail : "")};
}

static void add_size(Scan *s, int w, int h) {
    if (s->sized == s->sized_cap) {
        s->sized_cap = s->sized_cap ? 2 * s->sized_cap : 1024;
        s->widths = realloc(s->widths, sizeof(int64_t) * s->sized_cap);
        s->heights = realloc(s->heights, sizeof(int64_t) * s->sized_cap);
        if (!s->widths || !s->heights) fatal("out of memory recording image sizes");
    }
    s->widths[s->sized] = w, s->heights[s->sized++] = h;
}

// One image's bytes, checked by the loader's own header checks, and with --full decoded whole.
static void check_image(Scan *s, const uint8_t *data, size_t len, ImageFormat promised, const char *shard,
                        const char *key) {
    char err[256] = "";
    int w = 0, h = 0, why = sample_check_header(data, len, promised, s->max_pixels, &w, &h, err, sizeof err);
    if (why >= 0) return add_bad(s, why, shard, key, err);
    if (s->full) {
        DecodedImage img = {0};
        DecodeStatus st = image_decode_region(data, len, s->channels, s->max_pixels, 0, 0, w, h, 1.0, &img);
        if (st != DECODE_OK) add_bad(s, SKIP_CORRUPT_IMAGE, shard, key, img.error);
        decoded_image_free(&img);
        if (st != DECODE_OK) return;
    }
    s->formats[image_sniff(data, len)]++;
    add_size(s, w, h);
}

static int64_t scan_shard(Scan *s, const char *shard, int64_t *labelled) {
    WdsReader r;
    *labelled = 0;
    if (wds_open(&r, shard) != 0) {
        add_bad(s, SKIP_UNREADABLE_SHARD, shard, "(whole shard)", strerror(errno));
        return 0;
    }
    WdsSample x = {0};
    int64_t n = 0;
    while (wds_next(&r, &x) == 1) {
        n++;
        *labelled += x.has_label;
        if (x.skip >= 0) add_bad(s, x.skip, shard, x.key, x.detail);
        else if (!x.has_image) add_bad(s, SKIP_MISSING_PART, shard, x.key, "no .jpg/.jpeg/.png");
        else if (s->need_labels && !x.has_label) add_bad(s, SKIP_MISSING_PART, shard, x.key, "no .cls");
        else check_image(s, x.image, x.image_len, x.image_ext, shard, x.key);
    }
    wds_sample_clear(&x);
    wds_close(&r);
    return n;
}

static void scan_shards(Scan *s, const char *src) {
    int n;
    char **shards = shard_list_expand(src, &n);
    if (n == 0) fatal("check_data: '%s' expands to no shards", src);
    printf("%-56s %9s %9s %6s\n", "shard", "samples", "labelled", "bad");
    for (int i = 0; i < n; i++) {
        int64_t bad_before = s->bad_n, labelled, k = scan_shard(s, shards[i], &labelled);
        s->samples += k, s->labelled += labelled;
        printf("%-56s %9lld %9lld %6lld\n", shards[i], (long long)k, (long long)labelled, (long long)(s->bad_n - bad_before));
    }
    shard_list_free(shards, n);
}

static void scan_files(Scan *s, const char *src, const char *format) {
    ImageFolder f;
    if (!strcmp(format, "list")) image_list_open(&f, src);
    else if (!strcmp(format, "folder")) image_folder_open_flat(&f, src);
    else image_folder_open(&f, src);
    for (int64_t i = 0; i < f.num_files; i++) {
        uint8_t *data;
        size_t len;
        const char *path = f.paths[i], *dot = strrchr(path, '.');
        s->samples++;
        s->labelled += f.labels[i] >= 0;
        if (s->need_labels && f.labels[i] < 0) add_bad(s, SKIP_MISSING_PART, path, NULL, "no label");
        else if (image_file_read(path, &data, &len) != 0) add_bad(s, SKIP_UNREADABLE_SHARD, path, NULL, strerror(errno));
        else check_image(s, data, len, dot && (dot[1] == 'p' || dot[1] == 'P') ? IMG_PNG : IMG_JPEG, path, NULL), free(data);
    }
    printf("%s: %lld files, %d classes\n", src, (long long)f.num_files, f.num_classes);
    image_folder_free(&f);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_sizes(const char *what, int64_t *v, int64_t n) {
    qsort(v, n, sizeof *v, cmp_i64);
    printf("  %s: min %lld, median %lld, max %lld\n", what, (long long)v[0], (long long)v[n / 2], (long long)v[n - 1]);
}

static void report(Scan *s, double seconds, double limit) {
    printf("\n%lld samples: %lld labelled, %lld unlabelled; JPEG %lld, PNG %lld\n", (long long)s->samples,
           (long long)s->labelled, (long long)(s->samples - s->labelled), (long long)s->formats[IMG_JPEG],
           (long long)s->formats[IMG_PNG]);
    if (s->sized) {
        printf("image sizes (%s):\n", s->full ? "decoded" : "from the headers");
        print_sizes("width", s->widths, s->sized);
        print_sizes("height", s->heights, s->sized);
    }
    for (int r = 0; r < SKIP_NUM_REASONS; r++) {
        int64_t k = 0;
        for (int64_t i = 0; i < s->bad_n; i++) k += s->bad[i].reason == r;
        if (!k) continue;
        printf("bad: %s (%lld)\n", loader_skip_reason_name((SkipReason)r), (long long)k);
        for (int64_t i = 0; i < s->bad_n; i++)
            if (s->bad[i].reason == r) printf("  %s: %s\n", s->bad[i].where, s->bad[i].detail);
    }
    double rate = s->samples ? (double)s->bad_n / s->samples : 1.0;
    printf("skip rate %.4f (%lld of %lld); the trainer stops above %.4f\n", rate, (long long)s->bad_n,
           (long long)s->samples, limit);
    printf("scanned in %.2f s: %.0f samples/s (%s)\n", seconds, s->samples / (seconds > 0 ? seconds : 1e-9),
           s->full ? "full decode" : "headers only");
}

int main(int argc, char **argv) {
    const char *src = NULL, *format = "shards", *task = "pretrain";
    LoaderConfig defaults;
    loader_config_defaults(&defaults);
    Scan s = {.channels = 3, .max_pixels = defaults.max_pixels};
    double limit = defaults.max_skip_fraction;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(USAGE, stdout), 0;
        else if (!strcmp(a, "--full")) s.full = 1;
        else if (!strncmp(a, "--data_format=", 14)) format = a + 14;
        else if (!strncmp(a, "--task=", 7)) task = a + 7;
        else if (!strncmp(a, "--in_chans=", 11)) s.channels = (int)arg_int("--in_chans", a + 11, 1, 3);
        else if (!strncmp(a, "--max_skip_fraction=", 20)) limit = arg_real("--max_skip_fraction", a + 20, 0, 1);
        else if (a[0] != '-' && !src) src = a;
        else return fprintf(stderr, "check_data: unknown argument '%s'\n%s", a, USAGE), 2;
    }
    if (!src) return fputs(USAGE, stderr), 2;
    if (strcmp(task, "pretrain") && strcmp(task, "finetune")) fatal("--task: '%s' is not pretrain or finetune", task);
    if (strcmp(format, "shards") && strcmp(format, "imagefolder") && strcmp(format, "folder") && strcmp(format, "list"))
        fatal("--data_format: '%s' is not shards, imagefolder, folder or list", format);
    s.need_labels = !strcmp(task, "finetune");
    double t0 = now_seconds();
    if (!strcmp(format, "shards")) scan_shards(&s, src);
    else scan_files(&s, src, format);
    report(&s, now_seconds() - t0, limit);
    return s.samples && (double)s.bad_n / s.samples <= limit ? 0 : 1;
}
