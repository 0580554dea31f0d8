// tokenizer.h: CCViT's centroid tokenizer. A patch is [0,1] pixels flattened
// in (c, y, x) order, d = channels * patch * patch, the same order as the ViT
// patch-embedding weight [D, C, P, P]; its token is its nearest centroid.
#pragma once
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "kmeans.h"

typedef struct {
    int k, patch, channels, d;
    float *centroids;        // [k, d] pixels in [0,1], (c, y, x) order
    int32_t *counts;         // [k] cluster sizes in the build sample
    int64_t samples;         // patches the k-means ran on
    uint64_t seed;
    char *normalisation;     // how pixels were scaled before k-means
    char *source;            // where the patches came from
    double *objective;       // [iters] mean squared distance per Lloyd iteration
    int iters;
    KmeansIndex *index;      // derived: assignment state, built on creation/load
} Tokenizer;

// Run k-means on patches [n, d] (seeding + Lloyd per `o`) and wrap the result.
Tokenizer *tokenizer_build(const float *patches, size_t n, int patch, int channels, const KmeansOptions *o, const char *source);
// Wrap given centroids [k, d] (copied); counts may be NULL.
Tokenizer *tokenizer_from_centroids(const float *centroids, const int32_t *counts, int k, int patch, int channels);
void tokenizer_free(Tokenizer *t);

// ids [n] <- nearest centroid of each patch [n, d]; pixels [n, d] (optional)
// <- that centroid's pixels (for centroid replacement). No allocation.
void tokenizer_assign(Tokenizer *t, const float *patches, size_t n, int32_t *ids, float *pixels);

// fatal() unless the tokenizer's patch size and channels equal the model's.
void tokenizer_check(const Tokenizer *t, int patch, int channels, const char *model_name);

// HDF5: into/from a group (a checkpoint embeds one), or a standalone file
// whose root holds the group "tokenizer".
void tokenizer_save_group(const Tokenizer *t, hid_t group);
Tokenizer *tokenizer_load_group(hid_t group);
void tokenizer_save(const Tokenizer *t, const char *path);
Tokenizer *tokenizer_load(const char *path);
