// reconstruct: what a pretraining checkpoint does with a few test images. Runs
// the CCViT corruption and both heads once (objective_forward at step 0) on the
// first N images of a split, and writes the panels of the reconstruction grid
// (tools/scripts/plot_reconstruction.py) to one HDF5 file.
//
//   reconstruct CHECKPOINT.h5 [--out F.h5] [--n 8] [--test SRC] [--tokenizer FILE] [--key=value ...]
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "h5io.h"
#include "kernels.h"
#include "loader.h"
#include "objective.h"
#include "setup.h"
#include "tokenizer.h"
#include "vit.h"

#define GREY 0.5f         // masked patches in the corrupted panel
#define EXIT_NOTHING 3    // the checkpoint has neither head: nothing to reconstruct

static void usage(void) {
    printf(
        "usage: reconstruct CHECKPOINT.h5 [options] [--key=value ...]\n"
        "\n"
        "Takes the first N images of a test split (eval mode: resize to img_size, no augmentation),\n"
        "corrupts them as pretraining does (blockwise mask + centroid replacement, the draws of step 0),\n"
        "runs the encoder and the heads once, and writes to an HDF5 file, images [N,C,H,W] in [0,1]:\n"
        "  clean          the crops\n"
        "  corrupted      the encoder input de-normalised; masked patches set to grey (attribute grey)\n"
        "  mask, replaced [N,gh,gw] 1 where the patch was masked / replaced by its centroid\n"
        "  ids            [N,gh,gw] each scored clean patch's centroid id (-1: not scored, not tokenised)\n"
        "  recon_pixel    pixel head: every scored (masked or replaced) patch's prediction de-normalised\n"
        "                 with the clean patch's own mean and unbiased std (x = pred*sqrt(var+1e-6)+mean),\n"
        "                 clipped to [0,1], pasted into the clean image\n"
        "  pixel_pred     [M,d] the pixel head's raw (normalised) predictions, rows in `scored` order\n"
        "  scored         [M] flat image*N+patch of the scored patches, ascending\n"
        "  recon_token    token head: each scored patch drawn as its argmax centroid, pasted likewise\n"
        "  token_pred     [N,gh,gw] argmax centroid id of scored patches, -1 elsewhere\n"
        "A head the checkpoint lacks (w_pixel or w_token = 0) leaves its datasets out\n"
        "(attributes has_pixel_head / has_token_head say which).\n"
        "Exit status 3: the checkpoint has neither head (contrastive only), nothing to reconstruct.\n"
        "\n"
        "options:\n"
        "  --out F.h5         output (default: beside the checkpoint, <name>.recon.h5)\n"
        "  --n N              images (default 8)\n"
        "  --test SRC         split to take them from (default: the config's data_val)\n"
        "  --tokenizer FILE   centroids to use instead of the checkpoint's own\n"
        "  --key=value        any config key, e.g. --num_workers=1 --data_format=imagefolder\n");
}

// The datasets' shapes: [n,C,H,W] images and [n,gh,gw] patch grids.
typedef struct {
    hsize_t img[4], grid[3];
} Shapes;

static void write_grid_u8(hid_t f, const char *name, const uint8_t *v, long count, const Shapes *s) {
    int32_t *tmp = xmalloc(count * sizeof(int32_t) + 1, name);
    for (long i = 0; i < count; i++) tmp[i] = v[i];
    h5_write_i32(f, name, tmp, 3, s->grid);
    xfree(tmp);
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *test = NULL, *tok_path = NULL;
    int n_images = 8;
    char err[4096];
    char **keys = xcalloc(argc + 1, sizeof(char *), "args");
    int nkeys = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE() (v ? (i++, v) : (fatal("%s needs a value (see --help)", a), ""))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--out")) out = VALUE();
        else if (!strcmp(a, "--n")) n_images = (int)arg_int(a, VALUE(), 1, 4096);
        else if (!strcmp(a, "--test")) test = VALUE();
        else if (!strcmp(a, "--tokenizer")) tok_path = VALUE();
        else if (!strncmp(a, "--", 2)) keys[nkeys++] = argv[i];
        else if (!ckpt) ckpt = a;
        else fatal("unexpected argument '%s' (one checkpoint; see --help)", a);
#undef VALUE
    }
    if (!ckpt) fatal("give a pretraining checkpoint (see --help)");
    if (n_images < 1 || n_images > 4096) fatal("--n %d: give 1..4096 images", n_images);

    // The config the checkpoint was trained with, then --key=value.
    Config cfg;
    config_defaults(&cfg);
    CheckpointInfo info = {0};
    if (checkpoint_read_info(ckpt, &info, err, sizeof err)) fatal("%s", err);
    if (config_load_string(&cfg, info.config_yaml, ckpt, err, sizeof err)) fatal("config stored in %s", err);
    for (int i = 0; i < nkeys; i++)
        if (config_set(&cfg, keys[i], err, sizeof err)) fatal("%s", err);
    if (config_finalize(&cfg, err, sizeof err)) fatal("%s", err);
    if (!test) test = cfg.data_val;
    if (!test[0]) fatal("no test data: give --test SRC (or data_val in the config)");
    int corrupt = cfg.w_token > 0 || cfg.w_pixel > 0;
    if (!corrupt) {
        fprintf(stderr, "reconstruct: %s was trained with w_token = w_pixel = 0 (contrastive only): no corruption "
                        "and no head to reconstruct with; nothing written\n", ckpt);
        return EXIT_NOTHING;
    }

    // Model, heads and tokenizer, in the trainer's order (train.c).
    LoaderConfig lc = loader_config_from(&cfg, test, LOADER_EVAL, 0);
    ObjectiveConfig oc = objective_config_from(&cfg, &lc);
    int views = objective_views(&oc);
    Tokenizer *tok = tok_path ? tokenizer_load(tok_path) : checkpoint_load_tokenizer(ckpt, err, sizeof err);
    if (!tok) fatal("%s\nHINT: give the centroids the run used with --tokenizer FILE", err);
    tokenizer_check(tok, cfg.patch_size, cfg.in_chans, "the checkpoint's model");

    ParamTable params = {0};
    Vit vit;
    VitConfig vc = vit_config_from(&cfg, 1, 0);
    vit_register(&vit, &params, &vc);
    Objective obj;
    objective_register(&obj, &vit, tok, &oc);
    params_allocate(&params);
    vit_bind(&vit);
    objective_bind(&obj);
    CheckpointState cs = {.params = &params, .config_yaml = info.config_yaml, .mode = CKPT_LOAD_FULL};
    if (checkpoint_load(ckpt, &cs, err, sizeof err)) fatal("%s", err);
    vit_allocate_activations(&vit, views * n_images);
    objective_allocate(&obj, n_images);

    // The first n images, as eval sees them: resized to img_size, no crop.
    lc.batch_size = n_images;
    lc.eval_resize = (float)cfg.img_size;
    lc.num_threads = 1;
    lc.require_labels = 0;  // reconstructions need images only
    Loader *L = loader_open(&lc);
    Batch b;
    if (loader_next(L, &b) != 1 || b.n < 1) fatal("test split '%s' gave no images", test);
    int n = b.n;
    if (n < n_images) fprintf(stderr, "reconstruct: the split '%s' gave %d images, fewer than --n %d\n", test, n, n_images);

    // the contrastive term wants a second view (the same image here), whether the
    // encoder or the EMA teacher takes it
    ObjectiveLosses loss = objective_forward(&obj, b.view1, b.clean1, objective_loader_views(&oc) == 2 ? b.view1 : NULL,
                                             n, 0, -1);

    // Every panel is built as patches [n,N,d] from the clean ones, then unpatchified.
    int C = vc.in_chans, S = vc.img_size, P = vc.patch_size, N = vit.N, d = obj.patch_dim, M = loss.scored;
    long pix = (long)n * C * S * S, npatch = (long)n * N;
    Shapes sh = {{(hsize_t)n, (hsize_t)C, (hsize_t)S, (hsize_t)S}, {(hsize_t)n, (hsize_t)vit.grid, (hsize_t)vit.grid}};
    float *patches = xmalloc(npatch * d * sizeof(float), "patches");
    float *img = xmalloc(pix * sizeof(float), "panel");
    const float *clean_p = obj.clean_patches;

    if (!out) {
        static char buf[4096];
        snprintf(buf, sizeof buf, "%s", ckpt);
        char *dot = strrchr(buf, '.');
        if (dot && !strcmp(dot, ".h5")) *dot = 0;
        strncat(buf, ".recon.h5", sizeof buf - strlen(buf) - 1);
        out = buf;
    }
    hid_t f = h5_create(out);
    h5_write_f32(f, "clean", b.clean1, 4, sh.img);

    // Corrupted: the encoder input de-normalised; masked patches grey (the encoder saw mask tokens there).
    for (long i = 0; i < pix; i++) {
        int c = (int)((i / ((long)S * S)) % C);
        img[i] = obj.images[i] * lc.std[c] + lc.mean[c];
    }
    patchify(patches, img, n, C, S, S, P);
    for (long i = 0; i < npatch; i++)
        if (obj.mask[i])
            for (int j = 0; j < d; j++) patches[i * d + j] = GREY;
    unpatchify(img, patches, n, C, S, S, P);
    h5_write_f32(f, "corrupted", img, 4, sh.img);
    write_grid_u8(f, "mask", obj.mask, npatch, &sh);
    write_grid_u8(f, "replaced", obj.replaced, npatch, &sh);
    h5_write_i32(f, "ids", obj.ids, 3, sh.grid);
    if (M > 0) {
        hsize_t dm[1] = {(hsize_t)M};
        h5_write_i32(f, "scored", obj.scored, 1, dm);
    }

    // Pixel head: de-normalise each prediction with its clean patch's statistics (the target's own).
    double clipped = 0;
    if (obj.use_pixel && M > 0) {
        memcpy(patches, clean_p, npatch * d * sizeof(float));
        for (int m = 0; m < M; m++) {
            const float *x = clean_p + (long)obj.scored[m] * d, *pred = obj.pixel.pred + (long)m * d;
            float *y = patches + (long)obj.scored[m] * d;
            double mean = 0, var = 0;
            for (int j = 0; j < d; j++) mean += x[j];
            mean /= d;
            for (int j = 0; j < d; j++) var += (x[j] - mean) * (x[j] - mean);
            var /= (d > 1 ? d - 1 : 1);
            double sd = sqrt(var + 1e-6);
            for (int j = 0; j < d; j++) {
                double v = pred[j] * sd + mean;
                clipped += v < 0 || v > 1;
                y[j] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
            }
        }
        unpatchify(img, patches, n, C, S, S, P);
        h5_write_f32(f, "recon_pixel", img, 4, sh.img);
        hsize_t dp[2] = {(hsize_t)M, (hsize_t)d};
        h5_write_f32(f, "pixel_pred", obj.pixel.pred, 2, dp);
        clipped /= (double)M * d;
    }

    // Token head: each scored patch drawn as its argmax centroid.
    double correct = 0;
    if (obj.use_token && M > 0) {
        int32_t *pred_ids = xmalloc(npatch * sizeof(int32_t), "token ids");
        for (long i = 0; i < npatch; i++) pred_ids[i] = -1;
        memcpy(patches, clean_p, npatch * d * sizeof(float));
        for (int m = 0; m < M; m++) {
            const float *lg = obj.token.logits + (long)m * obj.K;
            int best = 0;
            for (int k = 1; k < obj.K; k++)
                if (lg[k] > lg[best]) best = k;
            pred_ids[obj.scored[m]] = best;
            correct += best == obj.scored_ids[m];
            memcpy(patches + (long)obj.scored[m] * d, tok->centroids + (long)best * d, d * sizeof(float));
        }
        unpatchify(img, patches, n, C, S, S, P);
        h5_write_f32(f, "recon_token", img, 4, sh.img);
        h5_write_i32(f, "token_pred", pred_ids, 3, sh.grid);
        xfree(pred_ids);
        correct /= M;
    }

    h5_attr_write_str(f, "checkpoint", ckpt);
    h5_attr_write_str(f, "source", test);
    h5_attr_write_i64(f, "step", info.step);
    h5_attr_write_i64(f, "patch_size", P);
    h5_attr_write_f64(f, "grey", GREY);
    h5_attr_write_i64(f, "has_pixel_head", obj.use_pixel);
    h5_attr_write_i64(f, "has_token_head", obj.use_token);
    h5_attr_write_i64(f, "num_centroids", tok->k);
    h5_attr_write_f64(f, "loss_pixel", obj.use_pixel ? loss.pixel : NAN);
    h5_attr_write_f64(f, "loss_token", obj.use_token ? loss.token : NAN);
    h5_attr_write_f64(f, "token_accuracy", obj.use_token && M > 0 ? correct : NAN);
    h5_attr_write_f64(f, "recon_pixel_clipped_share", obj.use_pixel && M > 0 ? clipped : NAN);
    h5_close(f);

    printf("%s: %d images of %s, checkpoint step %lld; %d of %d patches scored (%d masked, %d replaced per image)\n",
           out, n, test, (long long)info.step, M, n * N, obj.n_mask, obj.n_replace);
    if (obj.use_pixel) printf("  pixel head: MSE %.4f (normalised), %.1f%% of values clipped to [0,1]\n", loss.pixel, 100 * clipped);
    else printf("  pixel head: absent (w_pixel = 0), recon_pixel left out\n");
    if (obj.use_token) printf("  token head: CE %.4f, argmax = clean centroid on %.1f%%\n", loss.token, 100 * correct);
    else printf("  token head: absent (w_token = 0), recon_token left out\n");

    loader_close(L);
    xfree(patches), xfree(img), xfree(keys);
    params_free(&params);
    tokenizer_free(tok);
    checkpoint_info_free(&info);
    return 0;
}
