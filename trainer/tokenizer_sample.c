// tokenizer_sample.c: a fixed number of images per class through the eval
// loader, cut into patches, optionally reservoir-subsampled.
//
// The loader has no "N images per class" or random-subset mode, so: the eval
// stream is thinned with the loader's own rank/world_size striding (rank
// seed % W of W = samples / (N * classes) ranks), and then only the first N
// images of each label in stream order are kept. When the class count is
// unknown (shards without a manifest) every image is streamed and capped.
#include "tokenizer_sample.h"

#include <string.h>

#include "common.h"

float *tokenizer_sample_patches(const LoaderConfig *source, const PatchSampleOptions *o, size_t *n_out, int64_t *images_out) {
    LoaderConfig cfg;
    loader_config_defaults(&cfg);
    cfg.shards = source->shards;
    cfg.image_folder = source->image_folder;
    cfg.folder_flat = source->folder_flat;
    cfg.image_list = source->image_list;
    cfg.manifest = source->manifest;
    cfg.image_size = source->image_size;
    cfg.channels = source->channels;
    cfg.num_threads = source->num_threads > 0 ? source->num_threads : 2;
    cfg.eval_resize = source->eval_resize > 0 ? source->eval_resize : (float)source->image_size;
    cfg.interp = source->interp;
    cfg.mode = LOADER_EVAL;
    cfg.require_labels = 0;  // labels only pick images per class when there are classes
    cfg.batch_size = 32;
    cfg.seed = o->seed;
    if (o->patch < 1 || cfg.image_size % o->patch)
        fatal("tokenizer sampling: image size %d is not a multiple of patch size %d", cfg.image_size, o->patch);
    const int S = cfg.image_size, P = o->patch, C = cfg.channels, d = C * P * P, g = S / P;

    // Probe the source: sample and class counts pick the stride.
    Loader *probe = loader_open(&cfg);
    int64_t total = loader_num_samples(probe);
    int classes = loader_num_classes(probe);
    loader_close(probe);
    int W = 1;
    if (o->images_per_class > 0 && classes > 0 && total > (int64_t)o->images_per_class * classes)
        W = (int)(total / ((int64_t)o->images_per_class * classes));
    cfg.world_size = W;
    cfg.rank = (int)(o->seed % (uint64_t)W);

    size_t cap = o->max_samples > 0 ? (size_t)o->max_samples : 0, n = 0, alloc = cap ? cap : (size_t)1 << 16;
    float *x = xmalloc(alloc * d * sizeof(float), "tokenizer patches");
    int64_t *per_class = xcalloc(classes > 0 ? classes : 1, sizeof(int64_t), "per-class counts");
    int64_t images = 0, seen = 0;  // seen: patches offered to the reservoir
    Rng rng;
    rng_seed(&rng, o->seed, 0x7061746368ull);  // "patch"
    float *tmp = xmalloc(d * sizeof(float), "patch");
    Loader *L = loader_open(&cfg);
    Batch b;
    while (loader_next(L, &b)) {
        for (int i = 0; i < b.n; i++) {
            int lab = b.labels[i];
            if (o->images_per_class > 0 && classes > 0) {
                if (lab < 0 || lab >= classes || per_class[lab] >= o->images_per_class) continue;
                per_class[lab]++;
            }
            images++;
            const float *img = b.clean1 + (size_t)i * C * S * S;
            for (int py = 0; py < g; py++)
                for (int px = 0; px < g; px++) {
                    float *dst = tmp;
                    for (int c = 0; c < C; c++)
                        for (int y = 0; y < P; y++) {
                            memcpy(dst, img + ((size_t)c * S + py * P + y) * S + px * P, P * sizeof(float));
                            dst += P;
                        }
                    // Reservoir (Algorithm R) when capped; otherwise keep every patch.
                    if (!cap || n < cap) {
                        if (n == alloc) {
                            alloc *= 2;
                            float *bigger = xmalloc(alloc * d * sizeof(float), "tokenizer patches");
                            memcpy(bigger, x, n * d * sizeof(float));
                            xfree(x);
                            x = bigger;
                        }
                        memcpy(x + n * d, tmp, d * sizeof(float));
                        n++;
                    } else {
                        uint64_t j = rng_u64(&rng) % (uint64_t)(seen + 1);
                        if (j < cap) memcpy(x + j * d, tmp, d * sizeof(float));
                    }
                    seen++;
                }
        }
    }
    loader_close(L);
    xfree(tmp);
    xfree(per_class);
    if (n == 0) fatal("tokenizer sampling: no images read from '%s'", cfg.image_folder ? cfg.image_folder : cfg.shards);
    *n_out = n;
    if (images_out) *images_out = images;
    return x;
}
