// loader.h: the public face of data_loaders/. Streams WebDataset tar shards or
// an ImageFolder tree, decodes JPEG/PNG, augments, and hands out float32 CHW
// batches from a pool of decode threads. Same seed -> same batches, bit for
// bit, whatever the number of decode threads; a cursor blob resumes exactly.
// Train over world_size ranks: each rank gets its slice of one global stream
// (batch_size per rank, G = batch_size * world_size), so ranks 0..R-1
// concatenated equal one process with batch G, bit for bit.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { LOADER_TRAIN = 0, LOADER_EVAL = 1 } LoaderMode;
typedef enum { INTERP_BILINEAR = 0, INTERP_BICUBIC = 1 } Interpolation;

// Why a sample was skipped; counted separately.
typedef enum {
    SKIP_CORRUPT_IMAGE = 0,  // JPEG/PNG decoder error, truncated data
    SKIP_WRONG_FORMAT,       // bytes are not what the extension says
    SKIP_MISSING_PART,       // sample without image or without label
    SKIP_TRUNCATED_TAR,      // tar ended inside a header or member
    SKIP_UNREADABLE_SHARD,   // shard missing or unreadable (counted once per shard)
    SKIP_TOO_LARGE,          // header claims more than max_pixels
    SKIP_NUM_REASONS
} SkipReason;

typedef struct {
    // Source: shard patterns (brace-expanded, e.g. "data/x/train-{000000..000009}.tar";
    // several separated by spaces or commas; .tar, or gzip'd .tar.gz / .tgz) OR an image folder
    // (folder_flat 0: ImageFolder root/<class>/<image>; 1: every image below it, unlabeled)
    // OR a list file of image paths with optional labels (image_folder.h). Exactly one.
    const char *shards;
    const char *image_folder;
    int folder_flat;
    const char *image_list;
    const char *manifest;      // optional; default: <shard dir>/<prefix>-manifest.txt if present

    LoaderMode mode;
    int batch_size;            // per rank; train steps take batch_size * world_size samples
    int image_size;            // output H = W
    int channels;              // 3 (RGB) or 1 (grey)
    int two_views;             // train only: two independent augmentations per image
    int drop_last;             // eval only; train always uses full steps (see loader.c)

    // RandomResizedCrop (torchvision semantics) and flip
    float crop_scale[2];       // default 0.08, 1.0
    float crop_ratio[2];       // default 3/4, 4/3
    float flip_p;              // default 0.5
    Interpolation interp;      // default bicubic
    float eval_resize;         // eval: shorter side resized to this (default image_size / 0.875)

    // Contrastive recipe (all off by default; probabilities in [0,1])
    float jitter_p, brightness, contrast, saturation, hue;
    float grayscale_p;
    float blur_p, blur_sigma[2];   // kernel size: ~10% of image_size, odd
    float solarize_p, solarize_threshold;  // threshold in [0,1]

    float mean[3], std[3];     // per channel; channels==1 uses [0]

    int num_threads;           // decode threads (>= 1)
    int queue_batches;         // ready batches buffered ahead (default 2)
    size_t shuffle_bytes;      // sample shuffle buffer, bytes of encoded data (0: no shuffle)
    uint64_t seed;
    int rank, world_size;      // train: rank r takes slots [r*b, (r+1)*b) of each global batch;
                               // eval: every world_size-th sample
    float max_skip_fraction;   // stop with an error once skipped/seen exceeds this (once 50 are seen)
    int64_t max_pixels;        // decompression-bomb limit from the header (default 64e6)
    int warn_limit;            // print the first N skip warnings (default 10)
    int nice;                  // decode threads' nice increment (default 5): compute wins the cores
    int require_labels;        // 1 (default): a sample without a label is skipped and counted (supervised
                               // use); 0: it is given out with label -1 (pretraining, tokenizer sampling)
} LoaderConfig;

// Defaults: train, batch 64, 224 px, 3 channels, ImageNet mean/std, bicubic,
// RRC (0.08,1)x(3/4,4/3), flip 0.5, 2 threads, 64 MiB shuffle, seed 0, rank 0/1, labels required.
void loader_config_defaults(LoaderConfig *cfg);
// Set one field by its name in this struct ("batch_size", "mode" = train|eval,
// "interp" = bilinear|bicubic, pairs/triples as "0.08,1"). String values are
// referenced, not copied, until loader_open. Returns 0, or -1 with a message
// in err for an unknown key or a bad value. For config files and ctypes.
int loader_config_set(LoaderConfig *cfg, const char *key, const char *value, char *err, size_t errlen);

// One batch. Pointers are owned by the loader and valid until the next
// loader_next/loader_close. n <= batch_size: smaller only for eval's last batch
// or when samples of this batch were skipped.
typedef struct {
    int n, channels, height, width;
    float *view1;       // [n, C, H, W] normalised
    float *view2;       // [n, C, H, W] normalised, NULL unless two_views
    float *clean1;      // [n, C, H, W] in [0,1], the crop before colour augmentation
    float *clean2;      // like clean1 for view2, NULL unless two_views
    int32_t *labels;    // [n]; -1 for a sample without a label (only when require_labels is 0)
    int64_t epoch;      // epoch this batch belongs to
    int64_t step;       // step within the epoch
} Batch;

typedef struct Loader Loader;

Loader *loader_open(const LoaderConfig *cfg);  // fatal() on empty list / missing folder
int loader_next(Loader *l, Batch *out);        // 1 = batch; 0 = end of epoch (eval only)
void loader_close(Loader *l);

int64_t loader_num_samples(const Loader *l);    // samples in the source (all ranks)
// Samples without a label: from the manifest (a manifest of 0 classes: all of them; else none), or
// the shards' tar headers when there is none; a flat folder or a list without labels: all.
int64_t loader_unlabeled_samples(const Loader *l);
int64_t loader_steps_per_epoch(const Loader *l);
int loader_num_classes(const Loader *l);        // -1 if unknown
const char *loader_class_name(const Loader *l, int i);  // NULL if unknown
int64_t loader_skipped(const Loader *l, SkipReason why);
const char *loader_skip_reason_name(SkipReason why);

// Cursor: where the next loader_next continues. Save after any loader_next;
// restore into a freshly opened loader with the same config (before its first
// loader_next). restore returns 0 and warns if the blob does not match: train
// needs the same seed and global batch (batch_size * world_size), so a run may
// resume on another number of ranks; eval needs the same batch, rank and world.
// The blob also holds this rank's seen/skipped counts, which restore adopts.
size_t loader_cursor_size(void);
void loader_cursor_save(const Loader *l, void *buf);
int loader_cursor_restore(Loader *l, const void *buf);
// n cursors (one per rank, in rank order, loader_cursor_size() bytes each) into
// one at out: their positions must be equal (else it warns and returns 0); the
// counts are summed. Returns 1. out may be the first cursor.
int loader_cursor_merge(const void *cursors, int n, void *out);
// Zero the seen/skipped counts in a cursor blob: restore the counts on one rank
// only, the others from a cleared copy.
void loader_cursor_clear_counts(void *buf);
