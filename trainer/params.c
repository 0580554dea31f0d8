// params.c: registration and the flat value/gradient arenas.
#include "params.h"

#include <string.h>

#include "common.h"

// Each tensor starts on a 16-float (64-byte) boundary so kernels see aligned rows.
#define PARAM_ALIGN_FLOATS 16

int params_add(ParamTable *t, const char *name, int d0, int d1, int d2, int d3) {
    if (t->data) fatal("params_add(%s): the parameter arena is already allocated", name);
    if (params_find(t, name) >= 0) fatal("params_add: duplicate parameter name '%s'", name);
    if (strlen(name) >= PARAM_NAME_MAX) fatal("params_add: name too long: '%s'", name);
    if (t->count == t->capacity) {
        int cap = t->capacity ? 2 * t->capacity : 64;
        ParamInfo *grown = xcalloc(cap, sizeof(ParamInfo), "parameter table");
        if (t->info) memcpy(grown, t->info, sizeof(ParamInfo) * t->count);
        xfree(t->info);
        t->info = grown;
        t->capacity = cap;
    }
    ParamInfo *p = &t->info[t->count];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    int dims[4] = {d0, d1, d2, d3};
    p->numel = 1;
    for (int i = 0; i < 4 && dims[i] > 0; i++) {
        p->shape[p->ndim++] = dims[i];
        p->numel *= (size_t)dims[i];
    }
    p->lr_scale = 1.0f;
    p->offset = t->total;
    t->total += align_up(p->numel, PARAM_ALIGN_FLOATS);
    const char *base = strrchr(name, '.') ? strrchr(name, '.') + 1 : name;
    int is_token = strstr(name, "pos_embed") || strstr(name, "cls_token") || strstr(name, "mask_token");
    p->weight_decay = p->ndim >= 2 && !is_token && strcmp(base, "bias") != 0;
    return t->count++;
}

void params_allocate(ParamTable *t) {
    t->data = xcalloc(t->total, sizeof(float), "parameters");
    t->grad = xcalloc(t->total, sizeof(float), "gradients");
}

void params_free(ParamTable *t) {
    xfree(t->info);
    xfree(t->data);
    xfree(t->grad);
    memset(t, 0, sizeof *t);
}

float *params_data(const ParamTable *t, int index) { return t->data + t->info[index].offset; }
float *params_grad(const ParamTable *t, int index) { return t->grad + t->info[index].offset; }

int params_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->count; i++)
        if (strcmp(t->info[i].name, name) == 0) return i;
    return -1;
}

void params_zero_grad(ParamTable *t) { memset(t->grad, 0, sizeof(float) * t->total); }

size_t params_bytes(const ParamTable *t) { return sizeof(float) * t->total; }

void params_set_lr_scale(ParamTable *t, int index, float scale) { t->info[index].lr_scale = scale; }
float params_lr_scale(const ParamTable *t, int index) { return t->info[index].lr_scale; }

int params_count(const ParamTable *t) { return t->count; }
const char *params_name(const ParamTable *t, int index) { return t->info[index].name; }
int params_ndim(const ParamTable *t, int index) { return t->info[index].ndim; }
int params_dim(const ParamTable *t, int index, int axis) { return t->info[index].shape[axis]; }
size_t params_numel(const ParamTable *t, int index) { return t->info[index].numel; }

uint64_t params_name_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

void params_init_trunc_normal(float *x, const ParamTable *t, int index, uint64_t seed, double std) {
    Rng r;
    rng_seed(&r, seed, params_name_hash(params_name(t, index)));
    size_t n = params_numel(t, index);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_trunc_normal(&r, std, -2.0, 2.0);
}

void params_fill_floats(float *x, size_t n, float value) {
    for (size_t i = 0; i < n; i++) x[i] = value;
}
