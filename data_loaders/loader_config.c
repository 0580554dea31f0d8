// loader_config.c: LoaderConfig fields by name, so a config file or a Python
// test can fill the struct without mirroring its layout.
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"

typedef enum { F_STR, F_INT, F_I64, F_U64, F_SIZE, F_FLOAT } FieldType;
typedef struct { const char *name; FieldType type; size_t offset; int count; } Field;

#define FIELD(name, type, count) {#name, type, offsetof(LoaderConfig, name), count}
static const Field fields[] = {
    FIELD(shards, F_STR, 1),          FIELD(image_folder, F_STR, 1),     FIELD(manifest, F_STR, 1),
    FIELD(batch_size, F_INT, 1),      FIELD(image_size, F_INT, 1),       FIELD(channels, F_INT, 1),
    FIELD(two_views, F_INT, 1),       FIELD(drop_last, F_INT, 1),        FIELD(crop_scale, F_FLOAT, 2),
    FIELD(crop_ratio, F_FLOAT, 2),    FIELD(flip_p, F_FLOAT, 1),         FIELD(eval_resize, F_FLOAT, 1),
    FIELD(jitter_p, F_FLOAT, 1),      FIELD(brightness, F_FLOAT, 1),     FIELD(contrast, F_FLOAT, 1),
    FIELD(saturation, F_FLOAT, 1),    FIELD(hue, F_FLOAT, 1),            FIELD(grayscale_p, F_FLOAT, 1),
    FIELD(blur_p, F_FLOAT, 1),        FIELD(blur_sigma, F_FLOAT, 2),     FIELD(solarize_p, F_FLOAT, 1),
    FIELD(solarize_threshold, F_FLOAT, 1), FIELD(mean, F_FLOAT, 3),      FIELD(std, F_FLOAT, 3),
    FIELD(num_threads, F_INT, 1),     FIELD(queue_batches, F_INT, 1),    FIELD(shuffle_bytes, F_SIZE, 1),
    FIELD(seed, F_U64, 1),            FIELD(rank, F_INT, 1),             FIELD(world_size, F_INT, 1),
    FIELD(max_skip_fraction, F_FLOAT, 1), FIELD(max_pixels, F_I64, 1),   FIELD(warn_limit, F_INT, 1),
    FIELD(nice, F_INT, 1),            FIELD(require_labels, F_INT, 1),   FIELD(folder_flat, F_INT, 1),
    FIELD(image_list, F_STR, 1),
};
#undef FIELD

int loader_config_set(LoaderConfig *cfg, const char *key, const char *value, char *err, size_t errlen) {
    char *base = (char *)cfg, *end;
    if (!strcmp(key, "mode")) {
        if (!strcmp(value, "train")) cfg->mode = LOADER_TRAIN;
        else if (!strcmp(value, "eval")) cfg->mode = LOADER_EVAL;
        else return snprintf(err, errlen, "loader key 'mode': '%s' is not train or eval", value), -1;
        return 0;
    }
    if (!strcmp(key, "interp")) {
        if (!strcmp(value, "bilinear")) cfg->interp = INTERP_BILINEAR;
        else if (!strcmp(value, "bicubic")) cfg->interp = INTERP_BICUBIC;
        else return snprintf(err, errlen, "loader key 'interp': '%s' is not bilinear or bicubic", value), -1;
        return 0;
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const Field *f = &fields[i];
        if (strcmp(f->name, key)) continue;
        void *p = base + f->offset;
        const char *v = value;
        for (int k = 0; k < f->count; k++) {
            switch (f->type) {
            case F_STR: *(const char **)p = value; return 0;
            case F_INT: ((int *)p)[k] = (int)strtol(v, &end, 10); break;
            case F_I64: ((int64_t *)p)[k] = strtoll(v, &end, 10); break;
            case F_U64: ((uint64_t *)p)[k] = strtoull(v, &end, 10); break;
            case F_SIZE: ((size_t *)p)[k] = strtoull(v, &end, 10); break;
            case F_FLOAT: ((float *)p)[k] = strtof(v, &end); break;
            }
            if (end == v) return snprintf(err, errlen, "loader key '%s': cannot read a number from '%s'", key, value), -1;
            while (*end == ' ') end++;
            if (k + 1 < f->count) {
                if (*end != ',') return snprintf(err, errlen, "loader key '%s' wants %d comma-separated numbers, got '%s'", key, f->count, value), -1;
                v = end + 1;
            } else if (*end) {
                return snprintf(err, errlen, "loader key '%s': trailing text in '%s'", key, value), -1;
            }
        }
        return 0;
    }
    snprintf(err, errlen, "unknown loader key '%s'", key);
    return -1;
}
