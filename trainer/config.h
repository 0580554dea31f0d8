// config.h: the trainer's configuration. One table (CONFIG_KEYS below) is the
// schema: it generates the Config struct, the defaults, the checks, the YAML
// writer and --help. The rest of the code reads typed fields: cfg->lr,
// cfg->mean.v[c], cfg->interpolation (a string that is one of its choices).
//
// Adding a key is one line in the table: X(name, TYPE, "default", "allowed", "help").
//   TYPE     field                      "allowed"
//   INT      int                        range, e.g. "[1, 4096]", "[0, inf)"
//   FLOAT    double                     range, e.g. "(0, 1]", "[0, inf)"
//   BOOL     bool                       ""
//   STR      char[CONFIG_STR_MAX]       ""
//   ENUM     char[CONFIG_ENUM_MAX]      choices, e.g. "bilinear|bicubic"
//   FLOATS   ConfigFloats {n, v[]}      length and element range: "2 of [0, 1]", "1..4 of (0, inf)"
// The default is written as it would be in a YAML file and goes through the
// same parser (a test checks every default against its own range). Rules that
// tie several keys together go in config_finalize() in config.c.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CONFIG_STR_MAX 512
#define CONFIG_ENUM_MAX 32
#define CONFIG_LIST_MAX 8
#define CONFIG_ORIGIN_MAX 96

// clang-format off
#define CONFIG_KEYS(X, G)                                                                               \
    G("model")                                                                                          \
    X(model,            ENUM,   "custom",  "custom|vit_tiny|vit_small|vit_base",                        \
      "a preset sets embed_dim/depth/num_heads to timm's ViT-Ti/S/B; custom takes them as given")      \
    X(img_size,         INT,    "28",      "[4, 4096]",     "input height = width in pixels")           \
    X(patch_size,       INT,    "4",       "[1, 256]",      "patch side in pixels; divides img_size")   \
    X(in_chans,         INT,    "1",       "[1, 3]",        "image channels: 1 grey, 3 RGB")            \
    X(embed_dim,        INT,    "192",     "[1, 8192]",     "token width D; a multiple of num_heads")   \
    X(depth,            INT,    "6",       "[1, 64]",       "transformer blocks")                       \
    X(num_heads,        INT,    "3",       "[1, 128]",      "attention heads")                          \
    X(mlp_ratio,        FLOAT,  "4",       "(0, 16]",       "MLP hidden width / embed_dim")             \
    X(qkv_bias,         BOOL,   "true",    "",              "bias in the qkv projection")               \
    X(layer_scale_init, FLOAT,  "0",       "[0, 1]",        "LayerScale initial value; 0: no LayerScale") \
    X(drop_path,        FLOAT,  "0",       "[0, 1)",        "finetune: stochastic depth rate of the last block") \
    G("optimisation")                                                                                   \
    X(batch_size,       INT,    "256",     "[1, 65536]",    "images per optimiser micro-step")          \
    X(global_batch_size, INT,   "0",       "[0, 65536]",    "the whole job's micro-batch over all ranks; each rank takes global_batch_size / ranks (batch_size is then ignored); 0: batch_size per rank") \
    X(accum_steps,      INT,    "1",       "[1, 65536]",    "micro-steps accumulated per update; effective batch = global batch * accum_steps") \
    X(epochs,           INT,    "10",      "[0, 1000000]",  "epochs to train when steps is 0")          \
    X(steps,            INT,    "0",       "[0, inf)",      "optimiser updates to train; 0: use epochs") \
    X(lr,               FLOAT,  "5e-4",    "(0, 10]",       "peak learning rate, reached after warmup") \
    X(min_lr,           FLOAT,  "1e-5",    "[0, 10]",       "learning rate at the end of the schedule") \
    X(sched,            ENUM,   "cosine",  "cosine|linear|constant", "decay after warmup")              \
    X(warmup_steps,     INT,    "0",       "[0, inf)",      "linear warmup in updates (exclusive with warmup_epochs)") \
    X(warmup_epochs,    FLOAT,  "0",       "[0, 1000000]",  "linear warmup in epochs (exclusive with warmup_steps)") \
    X(weight_decay,     FLOAT,  "0.05",    "[0, 10]",       "AdamW decoupled weight decay (not on biases, norms, tokens)") \
    X(clip_grad,        FLOAT,  "3",       "[0, inf)",      "clip the global gradient norm to this; 0: off") \
    X(opt_betas,        FLOATS, "[0.9, 0.999]", "2 of [0, 1)", "AdamW beta1, beta2")                   \
    X(opt_eps,          FLOAT,  "1e-8",    "(0, 1]",        "AdamW epsilon")                            \
    X(seed,             INT,    "0",       "[0, inf)",      "seeds init, masking and data order")       \
    X(precision,        ENUM,   "fp32",    "fp32|bf16",     "bf16: the linear layers' and attention's products take bf16 operands with fp32 sums (vdpbf16ps; emulated, slower, without AVX512_BF16); weights, optimiser, norms, softmax and losses stay fp32") \
    G("data")                                                                                           \
    X(data_train,       STR,    "",        "",              "training data: shards (brace patterns, space/comma separated; .tar or .tar.gz), a folder, or a list file (data_format)") \
    X(data_val,         STR,    "",        "",              "validation data, same forms as data_train; empty: none") \
    X(data_format,      ENUM,   "shards",  "shards|imagefolder|folder|list", "shards: WebDataset tars; imagefolder: root/<class>/<image>; folder: every image below a root, unlabeled; list: a file of image paths, each with an optional label") \
    X(num_workers,      INT,    "2",       "[1, 256]",      "decode threads")                           \
    X(shuffle_buffer_mb, INT,   "64",      "[0, 1048576]",  "sample shuffle buffer in MiB of encoded data; 0: no shuffle") \
    X(scale,            FLOATS, "[0.08, 1]", "2 of (0, 1]", "RandomResizedCrop area range")             \
    X(ratio,            FLOATS, "[0.75, 1.3333333333333333]", "2 of (0, inf)", "RandomResizedCrop aspect-ratio range") \
    X(hflip,            FLOAT,  "0.5",     "[0, 1]",        "horizontal flip probability")              \
    X(color_jitter,     FLOAT,  "0.4",     "[0, 1]",        "jitter strength: brightness, contrast, saturation s, hue s/4") \
    X(color_jitter_prob, FLOAT, "0.8",     "[0, 1]",        "probability of colour jitter")             \
    X(grayscale_prob,   FLOAT,  "0.2",     "[0, 1]",        "probability of grey conversion")           \
    X(blur_prob,        FLOAT,  "0.5",     "[0, 1]",        "probability of Gaussian blur")             \
    X(solarize_prob,    FLOAT,  "0",       "[0, 1]",        "probability of solarization")              \
    X(interpolation,    ENUM,   "bicubic", "bilinear|bicubic", "resize filter")                         \
    X(mean,             FLOATS, "[0.286]", "1..3 of [0, 1]", "per-channel normalisation mean; in_chans values") \
    X(std,              FLOATS, "[0.353]", "1..3 of (0, inf)", "per-channel normalisation std; in_chans values") \
    G("objective")                                                                                      \
    X(mask_ratio,       FLOAT,  "0.4",     "[0, 1)",        "share of patches masked (blockwise)")      \
    X(min_mask_patches, INT,    "4",       "[1, inf)",      "smallest masking block, in patches")       \
    X(replace_ratio,    FLOAT,  "0.1",     "[0, 1)",        "share of all patches replaced by their centroid's pixels") \
    X(num_centroids,    INT,    "512",     "[2, 1048576]",  "tokenizer vocabulary K")                   \
    X(tokenizer_path,   STR,    "",        "",              "centroids file to load; empty: build one in the run folder") \
    X(tokenizer_images_per_class, INT, "100", "[1, inf)",   "images per class sampled to build the tokenizer") \
    X(tokenizer_iters,  INT,    "20",      "[1, 100000]",   "k-means iterations when building the tokenizer") \
    X(tokenizer_max_patches, INT, "1000000", "[0, inf)", "cap on the patches k-means runs on (a seeded random subset); 0: all") \
    X(w_token,          FLOAT,  "1",       "[0, 1000]",     "weight of the centroid-token cross-entropy; 0: branch off") \
    X(w_pixel,          FLOAT,  "1",       "[0, 1000]",     "weight of the pixel MSE; 0: branch off")   \
    X(w_contrast,       FLOAT,  "1",       "[0, 1000]",     "weight of NT-Xent; 0: no second view, no projector") \
    X(temperature,      FLOAT,  "0.2",     "(0, 100]",      "NT-Xent / InfoNCE temperature")            \
    X(proj_hidden,      INT,    "1024",    "[1, 65536]",    "projector MLP hidden width")               \
    X(proj_dim,         INT,    "256",     "[1, 65536]",    "projector output width")                   \
    X(knn_every,        INT,    "500",     "[0, inf)",      "pretraining: every this many updates, a kNN-20 of the last 4 blocks' CLS tokens on knn_images labelled training images (80% bank, 20% queries) in metrics.jsonl and on the progress line; 0: off") \
    X(knn_images,       INT,    "3000",    "[10, 1000000]", "images of the live kNN (the first of data_train)") \
    X(contrast_negatives, ENUM, "global",  "global|local",  "global: every rank's images are negatives (embeddings all-gathered); local: one rank's micro-batch") \
    X(mask_both_views,  BOOL,   "false",   "",              "corrupt the contrastive view too")        \
    X(contrast_warmup_steps, INT, "0",     "[0, inf)",      "ramp w_contrast linearly from 0 over these updates") \
    X(freeze_patch_embed, BOOL, "false",   "",              "keep the random patch embedding fixed (MoCo v3)") \
    X(teacher_momentum, FLOAT,  "0",       "[0, 1)",        "> 0: view2 through an EMA teacher of this momentum, InfoNCE vs view1 (MoCo v3/MSN); 0: NT-Xent over both views") \
    X(teacher_momentum_schedule, ENUM, "constant", "constant|cosine", "cosine: the teacher's momentum rises from teacher_momentum to 1 over the run (BYOL, DINO)") \
    X(local_crops,      INT,    "0",       "[0, 64]",       "multi-crop: local views per image, extra contrastive anchors against the other view (DINO); 0: none") \
    X(local_crop_size,  INT,    "16",      "[1, 4096]",     "local views' side in pixels: a window of whole patches of a view, below img_size") \
    G("fine-tune")                                                                                      \
    X(task,             ENUM,   "pretrain", "pretrain|finetune", "pretrain: CCViT/contrastive; finetune: supervised classification") \
    X(finetune,         STR,    "",        "",              "finetune: pretraining checkpoint to start from; empty: from scratch") \
    X(num_classes,      INT,    "10",      "[1, 1000000]",  "finetune: classes of the new head")        \
    X(smoothing,        FLOAT,  "0.1",     "[0, 1)",        "finetune: label smoothing")                \
    X(mixup,            FLOAT,  "0",       "[0, 100]",      "finetune: mixup's Beta alpha, per pair of images; 0: off") \
    X(cutmix,           FLOAT,  "0",       "[0, 100]",      "finetune: cutmix's Beta alpha; 0: off; with mixup, each pair takes one of the two") \
    X(reprob,           FLOAT,  "0",       "[0, 1]",        "finetune: random erasing's probability per image (timm, pixel mode); 0: off") \
    X(layer_decay,      FLOAT,  "0.75",    "(0, 1]",        "finetune: layer-wise lr decay")            \
    G("run")                                                                                            \
    X(output_dir,       STR,    "checkpoints", "",          "folder that holds one sub-folder per run") \
    X(run_name,         STR,    "",        "",              "run sub-folder; empty: a UTC timestamp")  \
    X(log_every,        INT,    "10",      "[1, inf)",      "updates between metrics lines")           \
    X(save_every,       INT,    "1000",    "[0, inf)",      "updates between checkpoints; 0: only at the end") \
    X(keep_last,        INT,    "3",       "[1, inf)",      "most recent checkpoints kept")             \
    X(keep_every,       INT,    "0",       "[0, inf)",      "also keep for good every checkpoint whose step is a multiple of this; 0: none") \
    X(time_limit_minutes, FLOAT, "0",      "[0, inf)",      "stop (with a checkpoint) after this much training time; 0: no limit") \
    X(stop_at_step,     INT,    "0",       "[0, inf)",      "stop (with a checkpoint) after this update, as a preemption would; the schedule still spans steps; 0: off") \
    X(dist_timeout_s,   FLOAT,  "300",     "(0, inf)",      "under MPI: end the job when a step's collective waits this long for the other ranks (one died or hangs)") \
    X(reduce_overlap,   BOOL,   "true",    "",              "under MPI: reduce each block's gradients while the backward pass goes on (same bits as after it)") \
    X(resume,           STR,    "",        "",              "auto: newest good checkpoint of this run; a path; empty: start fresh")
// clang-format on

typedef struct {
    int n;
    double v[CONFIG_LIST_MAX];
} ConfigFloats;

#define CONFIG_FIELD_(name, type, ...) CONFIG_FIELD_##type(name)
#define CONFIG_FIELD_INT(name) int name;
#define CONFIG_FIELD_FLOAT(name) double name;
#define CONFIG_FIELD_BOOL(name) bool name;
#define CONFIG_FIELD_STR(name) char name[CONFIG_STR_MAX];
#define CONFIG_FIELD_ENUM(name) char name[CONFIG_ENUM_MAX];
#define CONFIG_FIELD_FLOATS(name) ConfigFloats name;
#define CONFIG_NOTHING_(title)

// CFG_lr, CFG_batch_size, ...: a key's index in the table.
#define CONFIG_INDEX_(name, ...) CFG_##name,
enum { CONFIG_KEYS(CONFIG_INDEX_, CONFIG_NOTHING_) CONFIG_NUM_KEYS };

typedef struct Config {
    CONFIG_KEYS(CONFIG_FIELD_, CONFIG_NOTHING_)
    // Not part of the value: where each key was last set, for error messages
    // ("" default, "configs/x.yaml:12", "--lr=3e-4"). config_diff ignores it.
    char origin[CONFIG_NUM_KEYS][CONFIG_ORIGIN_MAX];
} Config;

// ---- building a config ---------------------------------------------------
// The loaders return 0, or -1 with a message in err that names the file (or
// the --key=value argument), the line and column, the key and what is allowed.
// They apply on top of what cfg holds; start from config_defaults().
void config_defaults(Config *cfg);
int config_load_file(Config *cfg, const char *path, char *err, size_t errlen);
// name labels the text in messages, e.g. "checkpoint step_1000.h5".
int config_load_string(Config *cfg, const char *yaml, const char *name, char *err, size_t errlen);
// One override: "--key=value", "key=value" or "--flag" (a bool set to true).
// Dashes in the key read as underscores (--batch-size=64). Lists: "0.5,0.5" or "[0.5, 0.5]".
int config_set(Config *cfg, const char *arg, char *err, size_t errlen);
// Apply the model preset and check the rules that tie keys together.
int config_finalize(Config *cfg, char *err, size_t errlen);

// The rules a training run adds to config_finalize's (eval and the tools still read configs that
// break them): a decaying schedule has a length, and the pretraining heads' combinations hold
// (the pixel head needs depth >= 3; the EMA teacher needs the contrastive term and excludes
// mask_both_views). Pure: 0, or -1 with the message in err. config_check and train call it.
int config_check_training(const Config *cfg, char *err, size_t errlen);

// The fine-tune-only keys (help "finetune: ...") a pretraining config sets to other than their
// default, which it ignores: their count, and a message naming each key and where it was set
// in buf. 0 for task finetune.
int config_ignored_keys(const Config *cfg, char *buf, size_t n);

// The trainer's entry point: defaults, every --config FILE (in order), every
// --key=value (in order, after the files), config_finalize. --help prints the
// usage and config_print_help, then exits 0. Any error: fatal() with the message.
void config_from_args(Config *cfg, int argc, char **argv);

// ---- reading it back -----------------------------------------------------
// Every key in table order as YAML (xmalloc'd; xfree it). Loading the text
// with config_load_string gives a config equal under config_diff.
char *config_to_yaml(const Config *cfg);
void config_print_help(FILE *f);
// Number of keys whose values differ; the first ones are described in buf
// ("lr: 0.001 vs 0.0005; depth: 6 vs 12"), which may be NULL.
int config_diff(const Config *a, const Config *b, char *buf, size_t buflen);
// The same over the keys not named in `ignore` (a NULL-terminated list, or NULL).
int config_diff_except(const Config *a, const Config *b, const char *const *ignore, char *buf, size_t buflen);
// The same over the keys named in `only` alone.
int config_diff_only(const Config *a, const Config *b, const char *const *only, char *buf, size_t buflen);

// The shortest "%.*g" text that reads back (strtod) to exactly v; "nan"/"inf" as printf.
void format_double(char *buf, size_t n, double v);
