// build_tokenizer.c: sample patches through the data loader, run k-means,
// save the centroid tokenizer (HDF5). See --help.
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kmeans.h"
#include "loader.h"
#include "tokenizer.h"
#include "tokenizer_sample.h"

static const char *HELP =
    "usage: build_tokenizer (--image-folder DIR | --shards PATTERN) --out FILE.h5 [options]\n"
    "\n"
    "Builds CCViT's centroid tokenizer: each image is resized (shorter side) to\n"
    "--resize and centre-cropped to --image-size through the data loader's eval\n"
    "path, cut into non-overlapping patches of [0,1] pixels in (c, y, x) order,\n"
    "and k-means (seeding + Lloyd) runs on them.\n"
    "\n"
    "source\n"
    "  --image-folder DIR      root/<class>/<image> tree\n"
    "  --shards PATTERN        WebDataset shards, e.g. data/x/train-{000000..000009}.tar\n"
    "  --manifest FILE         shard manifest (default: next to the shards)\n"
    "sampling\n"
    "  --image-size N          training resolution (default 224)\n"
    "  --resize N              shorter side before the centre crop (default: image size)\n"
    "  --patch N               patch size P (default 16)\n"
    "  --channels 1|3          grey or RGB (default 3)\n"
    "  --images-per-class N    images of each class (default 100; 0: every image)\n"
    "  --samples N             keep a seeded uniform subset of N patches (default 0: all)\n"
    "  --threads N             decode threads (default 2)\n"
    "k-means\n"
    "  --k N                   centroids (default 512)\n"
    "  --iters N               Lloyd iterations at most (default 20)\n"
    "  --tol X                 stop when the relative improvement is below X (default 1e-4)\n"
    "  --seeding auto|kpp|afkmc2  k-means++ or AFK-MC2 (default auto: k-means++ up to n*k*d = 2e10 or k >= 2n/chain)\n"
    "  --chain N               AFK-MC2 chain length (default 200)\n"
    "  --seed N                seeds sampling and k-means (default 0)\n"
    "output\n"
    "  --out FILE.h5           tokenizer file (group /tokenizer)\n";

int main(int argc, char **argv) {
    LoaderConfig src;
    loader_config_defaults(&src);
    src.num_threads = 2;
    PatchSampleOptions so = {.patch = 16, .images_per_class = 100, .max_samples = 0, .seed = 0};
    KmeansOptions ko = kmeans_defaults(512);
    ko.max_iter = 20;
    ko.verbose = 1;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (i + 1 >= argc) fatal("option %s needs a value (see --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--image-folder")) src.image_folder = v;
        else if (!strcmp(a, "--shards")) src.shards = v;
        else if (!strcmp(a, "--manifest")) src.manifest = v;
        else if (!strcmp(a, "--image-size")) src.image_size = (int)arg_int(a, v, 1, 4096);
        else if (!strcmp(a, "--resize")) src.eval_resize = (float)arg_real(a, v, 0, 1e5);
        else if (!strcmp(a, "--patch")) so.patch = (int)arg_int(a, v, 1, 256);
        else if (!strcmp(a, "--channels")) src.channels = (int)arg_int(a, v, 1, 3);
        else if (!strcmp(a, "--images-per-class")) so.images_per_class = (int)arg_int(a, v, 0, INT_MAX);
        else if (!strcmp(a, "--samples")) so.max_samples = arg_int(a, v, 0, LLONG_MAX);
        else if (!strcmp(a, "--threads")) src.num_threads = (int)arg_int(a, v, 1, 256);
        else if (!strcmp(a, "--k")) ko.k = (int)arg_int(a, v, 2, 1 << 20);
        else if (!strcmp(a, "--iters")) ko.max_iter = (int)arg_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--tol")) ko.tol = arg_real(a, v, 0, 1);
        else if (!strcmp(a, "--chain")) ko.chain = (int)arg_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--seed")) so.seed = ko.seed = (uint64_t)arg_int(a, v, 0, LLONG_MAX);
        else if (!strcmp(a, "--seeding")) {
            if (!strcmp(v, "auto")) ko.seeding = KMEANS_SEED_AUTO;
            else if (!strcmp(v, "kpp")) ko.seeding = KMEANS_SEED_PLUSPLUS;
            else if (!strcmp(v, "afkmc2")) ko.seeding = KMEANS_SEED_AFKMC2;
            else fatal("--seeding %s: expected auto, kpp or afkmc2", v);
        } else if (!strcmp(a, "--out")) out = v;
        else fatal("unknown option %s (see --help)", a);
    }
    if (!out) fatal("--out FILE.h5 is required (see --help)");
    if (!src.image_folder == !src.shards) fatal("give exactly one of --image-folder and --shards (see --help)");
    if (src.channels != 1 && src.channels != 3) fatal("--channels %d: expected 1 or 3", src.channels);
    if (ko.k < 2) fatal("--k %d: need at least 2 centroids", ko.k);
    if (src.eval_resize <= 0) src.eval_resize = (float)src.image_size;

    double t0 = now_seconds();
    size_t n;
    int64_t images;
    float *x = tokenizer_sample_patches(&src, &so, &n, &images);
    double ts = now_seconds() - t0;
    const char *where = src.image_folder ? src.image_folder : src.shards;
    fprintf(stderr, "sampled %zu patches (%d x %d, %d channels) from %lld images of %s in %.2fs\n", n, so.patch, so.patch,
            src.channels, (long long)images, where, ts);
    char source[1024];
    snprintf(source, sizeof source, "%s; %lld images (<= %d per class), resize %g, centre crop %d, patch %d, %zu patches",
             where, (long long)images, so.images_per_class, src.eval_resize, src.image_size, so.patch, n);
    t0 = now_seconds();
    Tokenizer *t = tokenizer_build(x, n, so.patch, src.channels, &ko, source);
    fprintf(stderr, "k-means: k=%d, %d iterations, objective %.6g, %.2fs\n", t->k, t->iters, t->objective[t->iters - 1],
            now_seconds() - t0);
    tokenizer_save(t, out);
    printf("wrote %s\n", out);
    tokenizer_free(t);
    xfree(x);
    return 0;
}
