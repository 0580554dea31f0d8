// live_knn.c: the pretraining's live kNN signal (live_knn.h).
#include "live_knn.h"

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "frozen_features.h"
#include "loader.h"
#include "probe.h"
#include "setup.h"

struct LiveKnn {
    LoaderConfig lc;      // an eval loader over data_train, opened afresh each time
    int images;           // to read: the first 4/5 vote, the rest are the queries
    float *features;      // [images, D]
    int32_t *labels;      // [images]
    int evals;
    double seconds;
};

LiveKnn *live_knn_open(const Config *cfg, int images) {
    LoaderConfig lc = loader_config_from(cfg, cfg->data_train, LOADER_EVAL, 0);
    lc.require_labels = 0;
    Loader *l = loader_open(&lc);
    int64_t unlabeled = loader_unlabeled_samples(l), total = loader_num_samples(l);
    loader_close(l);
    if (unlabeled > 0) {
        printf("live kNN: off (%lld of the training samples have no label)\n", (long long)unlabeled);
        return NULL;
    }
    if (images > total) images = (int)total;
    if (images < 10) {
        printf("live kNN: off (%lld training samples; it needs 10)\n", (long long)total);
        return NULL;
    }
    LiveKnn *k = xcalloc(1, sizeof *k, "live kNN");
    k->lc = lc;
    k->images = images;
    k->labels = xmalloc(sizeof(int32_t) * images, "live kNN labels");
    return k;
}

// The CLS tokens of the last 4 blocks (DINO's n = 4), the kNN feature the full recipe reports.
static FeatureSpec live_feature(const Vit *vit) {
    return (FeatureSpec){.kind = FEAT_CLS, .block = -1, .n_blocks = vit->cfg.depth < 4 ? vit->cfg.depth : 4};
}

// Features and labels of the split; returns the images read (a skipped image is left out).
static int read_features(LiveKnn *k, Vit *vit) {
    FeatureSpec spec = live_feature(vit);
    int D = features_dim(vit, &spec);
    if (!k->features) k->features = xmalloc(sizeof(float) * (size_t)k->images * D, "live kNN features");
    LoaderConfig lc = k->lc;
    lc.batch_size = vit->max_batch;
    Loader *l = loader_open(&lc);
    FeatureScratch scratch;
    features_scratch_alloc(&scratch, vit, vit->max_batch, &spec);
    Batch b;
    int n = 0;
    while (n < k->images && loader_next(l, &b) == 1) {
        int take = b.n < k->images - n ? b.n : k->images - n;
        features_forward(vit, b.view1, take, &spec, &scratch, k->features + (size_t)n * D, D);
        memcpy(k->labels + n, b.labels, sizeof(int32_t) * take);
        n += take;
    }
    features_scratch_free(&scratch);
    loader_close(l);
    return n;
}

double live_knn_eval(LiveKnn *k, Vit *vit) {
    double t0 = now_seconds();
    FeatureSpec spec = live_feature(vit);
    int n = read_features(k, vit), D = features_dim(vit, &spec), bank = n * 4 / 5, classes = 0;
    for (int i = 0; i < n; i++)
        if (k->labels[i] + 1 > classes) classes = k->labels[i] + 1;
    double top1 = 0, top5 = 0;
    if (bank > 0 && n > bank)
        knn_eval(k->features, k->labels, (size_t)bank, k->features + (size_t)bank * D, k->labels + bank,
                 (size_t)(n - bank), D, classes, 20, 0.07, &top1, &top5);
    k->seconds += now_seconds() - t0;
    k->evals++;
    return top1;
}

double live_knn_seconds(const LiveKnn *k) { return k ? k->seconds : 0; }
int live_knn_count(const LiveKnn *k) { return k ? k->evals : 0; }

void live_knn_close(LiveKnn *k) {
    if (!k) return;
    xfree(k->features);
    xfree(k->labels);
    xfree(k);
}
