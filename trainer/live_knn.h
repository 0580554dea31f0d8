// live_knn.h: a kNN-20 (DINO's protocol: cosine, k 20, T 0.07) of the CLS tokens
// of the encoder's last 4 blocks (the full recipe's kNN feature) on a small labelled
// split of the training data, taken every N updates while pretraining runs, so that
// a user sees the features improve, or collapse, without stopping the run. The first
// `images` samples of data_train in the eval loader's order: the first 80% are the
// bank, the rest the queries. Their labels are used here only, never by the training.
#pragma once
#include "config.h"
#include "vit.h"

typedef struct LiveKnn LiveKnn;

// NULL, with a note, when the training data has samples without labels.
LiveKnn *live_knn_open(const Config *cfg, int images);
// Top-1 in percent for the encoder's current weights (its activations are overwritten).
double live_knn_eval(LiveKnn *k, Vit *vit);
double live_knn_seconds(const LiveKnn *k);   // spent in live_knn_eval so far
int live_knn_count(const LiveKnn *k);        // evaluations so far
void live_knn_close(LiveKnn *k);
