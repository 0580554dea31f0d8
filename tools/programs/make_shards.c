// make_shards: write WebDataset tar shards (+ a manifest) from an ImageFolder
// tree, a flat folder or list of images, or the Fashion-MNIST IDX files. Each
// sample is <key>.<png|jpg> plus <key>.cls (the label as ASCII) when it has a
// label. Output: <out>-000000.tar, ... and <out>-manifest.txt, which
// data_loaders/ finds next to the shards (classes 0: written without labels).
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "idx_reader.h"
#include "image_encode.h"
#include "image_folder.h"
#include "tar_writer.h"
#include "webdataset.h"

static const char *USAGE =
    "usage: make_shards (--fashion-mnist DIR --split train|test | --image-folder ROOT | --folder ROOT | --list FILE)\n"
    "                   --out PREFIX [options]\n"
    "\n"
    "Writes PREFIX-000000.tar, PREFIX-000001.tar, ... and PREFIX-manifest.txt\n"
    "(sample count, shard lengths, class names).\n"
    "\n"
    "  --fashion-mnist DIR   folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz\n"
    "                        (Debian: /usr/share/datasets/fashion-mnist)\n"
    "  --split train|test    which Fashion-MNIST split (test reads t10k-*)\n"
    "  --image-folder ROOT   root/<class>/<image>; images are copied byte for byte\n"
    "  --folder ROOT         every image below ROOT, recursively, without labels (no .cls)\n"
    "  --list FILE           image paths, one per line, each with an optional label after it\n"
    "  --out PREFIX          e.g. data/fashion-mnist/train (folders are created)\n"
    "  --format png|jpeg     Fashion-MNIST encoding (default png: lossless)\n"
    "  --quality Q           JPEG quality 1..100 (default 95)\n"
    "  --per-shard N         samples per shard (default 10000)\n"
    "  --seed S              shuffle the samples with this seed (default: keep the source order)\n"
    "  --key-digits D        zero-padded key width (default 8)\n"
    "  --help                this text\n";

typedef struct {
    int64_t n;
    int32_t *labels;
    // Fashion-MNIST: pixels in memory; ImageFolder: paths.
    uint8_t *pixels;
    int rows, cols;
    char **paths;
    int num_classes;
    char **class_names;
} Source;

static void load_fashion_mnist(Source *s, const char *dir, const char *split) {
    const char *stem = !strcmp(split, "train") ? "train" : !strcmp(split, "test") ? "t10k" : NULL;
    if (!stem) fatal("--split must be train or test, not '%s'", split);
    char ip[4096], lp[4096];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, stem);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, stem);
    IdxImages d;
    idx_read_fashion_mnist(&d, ip, lp);
    s->n = d.n;
    s->rows = d.rows;
    s->cols = d.cols;
    s->pixels = d.pixels;
    s->labels = d.labels;
    static const char *names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    s->num_classes = 10;
    s->class_names = xcalloc(10, sizeof(char *), "class names");
    for (int i = 0; i < 10; i++) s->class_names[i] = xstrdup(names[i]);
}

static void mkdirs_for(const char *prefix) {
    char *p = xstrdup(prefix);
    for (char *q = p + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) fatal("cannot create folder %s: %s", p, strerror(errno));
        *q = '/';
    }
    free(p);
}

typedef struct {
    const char *fmnist, *split, *folder, *flat, *list, *out, *format;
    int quality, key_digits, shuffle, jpeg;
    int64_t per_shard;
    uint64_t seed;
} Options;

// The command line into o, checked; --help and a bad option exit here, as main would.
static void parse_options(Options *o, int argc, char **argv) {
    *o = (Options){.split = "train", .format = "png", .quality = 95, .key_digits = 8, .per_shard = 10000};
    static struct option opts[] = {{"fashion-mnist", 1, 0, 'm'}, {"split", 1, 0, 's'},     {"image-folder", 1, 0, 'i'},
                                   {"out", 1, 0, 'o'},           {"format", 1, 0, 'f'},    {"quality", 1, 0, 'q'},
                                   {"per-shard", 1, 0, 'n'},     {"seed", 1, 0, 'r'},      {"key-digits", 1, 0, 'k'},
                                   {"folder", 1, 0, 'F'},        {"list", 1, 0, 'l'},      {"help", 0, 0, 'h'},
                                   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->fmnist = optarg; break;
        case 's': o->split = optarg; break;
        case 'i': o->folder = optarg; break;
        case 'F': o->flat = optarg; break;
        case 'l': o->list = optarg; break;
        case 'o': o->out = optarg; break;
        case 'f': o->format = optarg; break;
        case 'q': o->quality = (int)arg_int("--quality", optarg, 1, 100); break;
        case 'n': o->per_shard = arg_int("--per-shard", optarg, 1, INT64_MAX); break;
        case 'r': o->seed = (uint64_t)arg_int("--seed", optarg, 0, INT64_MAX), o->shuffle = 1; break;
        case 'k': o->key_digits = (int)arg_int("--key-digits", optarg, 1, 20); break;
        case 'h': fputs(USAGE, stdout); exit(0);
        default: fputs(USAGE, stderr); exit(2);
        }
    }
    if (!o->out || (!!o->fmnist + !!o->folder + !!o->flat + !!o->list) != 1) {
        fputs(USAGE, stderr);
        fatal("give --out and exactly one of --fashion-mnist / --image-folder / --folder / --list");
    }
    o->jpeg = !strcmp(o->format, "jpeg") || !strcmp(o->format, "jpg");
    if (!o->jpeg && strcmp(o->format, "png")) fatal("--format must be png or jpeg, not '%s'", o->format);
    if (o->quality < 1 || o->quality > 100) fatal("--quality must be in 1..100, not %d", o->quality);
    if (o->per_shard < 1) fatal("--per-shard must be positive");
    if (o->key_digits < 1 || o->key_digits > 20) fatal("--key-digits must be in 1..20");
}

// The samples: Fashion-MNIST's pixels in memory, or the paths of a folder or list.
static void open_source(Source *s, const Options *o) {
    if (o->fmnist) {
        load_fashion_mnist(s, o->fmnist, o->split);
        return;
    }
    ImageFolder f;
    if (o->list) image_list_open(&f, o->list);
    else if (o->flat) image_folder_open_flat(&f, o->flat);
    else image_folder_open(&f, o->folder);
    s->n = f.num_files;
    s->paths = f.paths;
    s->labels = f.labels;
    s->num_classes = f.num_classes;
    s->class_names = f.class_names;
}

// Source order, or shuffled by --seed.
static uint32_t *sample_order(const Source *s, const Options *o) {
    uint32_t *order = xmalloc(sizeof(uint32_t) * s->n, "order");
    for (int64_t i = 0; i < s->n; i++) order[i] = (uint32_t)i;
    if (o->shuffle) {
        Rng r;
        rng_seed(&r, o->seed, 0);
        rng_shuffle_u32(&r, order, s->n);
    }
    return order;
}

// Sample i of the source under key k: <key>.<png|jpg>, and <key>.cls when it has a label.
static void write_sample(TarWriter *w, const Source *s, const Options *o, int64_t k, int64_t i) {
    char name[64], cls[16];
    size_t len;
    uint8_t *bytes;
    const char *ext;
    if (o->fmnist) {
        const uint8_t *px = s->pixels + (size_t)i * s->rows * s->cols;
        bytes = o->jpeg ? encode_jpeg(px, s->cols, s->rows, 1, o->quality, &len) : encode_png(px, s->cols, s->rows, 1, &len);
        ext = o->jpeg ? "jpg" : "png";
    } else {
        if (image_file_read(s->paths[i], &bytes, &len) != 0) fatal("cannot read %s: %s", s->paths[i], strerror(errno));
        const char *dot = strrchr(s->paths[i], '.');
        ext = dot && (dot[1] == 'p' || dot[1] == 'P') ? "png" : "jpg";
    }
    snprintf(name, sizeof name, "%0*lld.%s", o->key_digits, (long long)k, ext);
    tar_writer_add(w, name, bytes, len);
    if (s->labels[i] >= 0) {  // a sample without a label has no .cls
        int cl = snprintf(cls, sizeof cls, "%d", s->labels[i]);
        snprintf(name, sizeof name, "%0*lld.cls", o->key_digits, (long long)k);
        tar_writer_add(w, name, cls, cl);
    }
    free(bytes);
}

int main(int argc, char **argv) {
    Options o;
    parse_options(&o, argc, argv);
    Source s = {0};
    open_source(&s, &o);
    uint32_t *order = sample_order(&s, &o);
    const char *out = o.out;
    int64_t per_shard = o.per_shard;
    mkdirs_for(out);
    // An old manifest would vouch for the shards this run is about to replace: remove it
    // first; the new one is written (atomically) only after every shard is complete.
    size_t mlen = strlen(out) + 32;
    char *manifest_path = xmalloc(mlen, "path");
    snprintf(manifest_path, mlen, "%s-manifest.txt", out);
    if (unlink(manifest_path) != 0 && errno != ENOENT) fatal("cannot remove the old %s: %s", manifest_path, strerror(errno));
    Manifest m = {.samples = s.n, .num_classes = s.num_classes, .class_names = s.class_names};
    m.num_shards = (int)((s.n + per_shard - 1) / per_shard);
    m.shard_names = xcalloc(m.num_shards, sizeof(char *), "shard names");
    m.shard_samples = xcalloc(m.num_shards, sizeof(int64_t), "shard lengths");
    size_t plen = strlen(out) + 32;
    char *path = xmalloc(plen, "path");
    for (int sh = 0; sh < m.num_shards; sh++) {
        snprintf(path, plen, "%s-%06d.tar", out, sh);
        const char *base = strrchr(path, '/');
        m.shard_names[sh] = xstrdup(base ? base + 1 : path);
        TarWriter w;
        tar_writer_open(&w, path);
        int64_t lo = sh * per_shard, hi = lo + per_shard < s.n ? lo + per_shard : s.n;
        for (int64_t k = lo; k < hi; k++) write_sample(&w, &s, &o, k, order[k]);
        tar_writer_close(&w);
        m.shard_samples[sh] = hi - lo;
    }
    manifest_write(manifest_path, &m);
    printf("make_shards: %lld samples, %d classes -> %d shards %s-NNNNNN.tar + %s\n", (long long)s.n, s.num_classes,
           m.num_shards, out, manifest_path);
    return 0;
}
