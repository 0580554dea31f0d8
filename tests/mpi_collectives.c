// mpi_collectives.c: the distributed pieces under mpirun, run with 2 and 4 ranks by
// tests/test_distributed.py (a world of one has nothing to check and is refused).
//  - dist_sum: the sum over ranks of a buffer is, bit for bit, the rank-order sum
//    every rank can recompute from the others' seeds, whether it is reduced as one
//    slice (blocking) or as many slices polled in between (overlapped).
//  - Global negatives: ranks holding slices of a batch compute, averaged over ranks,
//    the NT-Xent / InfoNCE loss and gradients one process computes on the whole batch.
#include <math.h>
#include <string.h>

#include "check.h"
#include "common.h"
#include "distributed.h"
#include "heads/contrastive_head.h"

// Values of mixed magnitudes: their float sum depends on the order of addition.
static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed, 11);
    for (size_t i = 0; i < n; i++) x[i] = (float)((rng_uniform(&r) - 0.5) * pow(10.0, (double)(i % 7) - 3));
}

static void check_dist_sum(int W, int rank) {
    size_t n = 1000003;  // parts of unequal length
    float *all = xmalloc(sizeof(float) * n * W, "every rank's values");
    float *want = xmalloc(sizeof(float) * n, "want"), *x = xmalloc(sizeof(float) * n, "x"), *y = xmalloc(sizeof(float) * n, "y");
    for (int q = 0; q < W; q++) fill(all + (size_t)q * n, n, (uint64_t)q);
    long reversed_differs = 0;  // how much the order matters for these values: the check's teeth
    for (size_t i = 0; i < n; i++) {
        float fwd = all[i], rev = all[(size_t)(W - 1) * n + i];
        for (int q = 1; q < W; q++) fwd += all[(size_t)q * n + i], rev += all[(size_t)(W - 1 - q) * n + i];
        want[i] = fwd;
        reversed_differs += fwd != rev;
    }
    memcpy(x, all + (size_t)rank * n, sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    DistSum *s = dist_sum_create(n);
    dist_sum_start(s, x, n);
    dist_sum_wait(s, "test sum");
    Rng r;
    rng_seed(&r, 7, 7);
    for (size_t at = 0; at < n;) {  // slices of random length, polled in between, as the backward pass does
        size_t len = 1 + rng_below(&r, 200000);
        if (len > n - at) len = n - at;
        dist_sum_start(s, y + at, len);
        dist_sum_poll(s);
        at += len;
    }
    dist_sum_wait(s, "test sum");
    dist_sum_free(s);
    CHECK("dist_sum as one slice equals the rank-order sum, bit for bit", !memcmp(x, want, sizeof(float) * n),
          "differs");
    CHECK("dist_sum in many polled slices equals the one-slice sum, bit for bit", !memcmp(y, x, sizeof(float) * n),
          "differs");
    printf("  rank %d: %ld of %zu elements differ when summed in reverse rank order\n", rank, reversed_differs, n);
    xfree(all), xfree(want), xfree(x), xfree(y);
}

typedef struct {
    ParamTable t;
    ContrastiveHead c;
    Arena acts, grads;
} HeadFixture;

enum { D = 24, T = 3, HID = 40, O = 16, PER_RANK = 5, LOCAL = 3 };

// rows: global rows laid out; local: local rows laid out (multi-crop), 0 for none.
static void head_make(HeadFixture *h, int world, long rows, long local) {
    memset(h, 0, sizeof *h);
    contrastive_head_register(&h->c, &h->t, D, HID, O, 0.2f, world);
    params_allocate(&h->t);
    contrastive_head_bind(&h->c, &h->t);
    contrastive_head_init(&h->c, &h->t, 5);  // the same weights on every rank and in the reference
    for (int pass = 0; pass < 2; pass++) {  // count, then hand out the memory
        contrastive_head_layout(&h->c, &h->acts, &h->grads, rows);
        if (local) contrastive_head_layout_local(&h->c, &h->acts, &h->grads, local);
        if (pass) break;
        arena_commit(&h->acts, "head activations");
        arena_commit(&h->grads, "head gradients");
    }
}

static void head_free(HeadFixture *h) {
    arena_free(&h->acts);
    arena_free(&h->grads);
    params_free(&h->t);
}

typedef struct {  // multi-crop's local rows: tokens [RL,T,D], their positive columns, their gradient
    const float *tokens;
    const int *pos_col;
    float *d_tokens;
    int RL;
} LocalRows;

// Forward and backward (scale 1) of rows [R,T,D] (and local rows, if any); d_tokens [R,T,D]
// zeroed first. Returns the mean loss over all anchor rows.
static double head_step(HeadFixture *h, const float *tokens, int R, const float *keys, float *d_tokens,
                        const LocalRows *l) {
    params_zero_grad(&h->t);
    memset(d_tokens, 0, sizeof(float) * R * T * D);
    double loss = contrastive_head_forward(&h->c, tokens, R, T, keys);
    if (l) {
        memset(l->d_tokens, 0, sizeof(float) * l->RL * T * D);
        double local = contrastive_head_local_forward(&h->c, l->tokens, l->d_tokens, l->RL, T, l->pos_col);
        loss = (loss * R + local * l->RL) / (R + l->RL);
    }
    contrastive_head_backward(&h->c, d_tokens, T, 1.0f);
    return loss;
}

// Multi-crop: LOCAL local rows per image, crop k of image g at row k * images + g, its positive
// the column of view1 (even k, NT-Xent: a crop of view2) or view2 of image g; InfoNCE: key g.
static void local_positives(int *pos, int images, int first, int G, int infonce) {
    for (int k = 0; k < LOCAL; k++)
        for (int i = 0; i < images; i++) pos[k * images + i] = first + i + (infonce || k % 2 == 0 ? 0 : G);
}

// Global negatives on W ranks against one process holding the whole batch of G = W * PER_RANK
// images. Tolerance: the rows see the same columns in the same order, so the losses agree to a
// few ulps; a gradient sums its terms over ranks in another association than one process's
// GEMM does (over 2G <= 40 terms), so 1e-4 relative (+ 1e-6 of the largest) covers it.
static void check_contrast(int W, int rank, int infonce, int multicrop) {
    int b = PER_RANK, G = W * b, views = infonce ? 1 : 2, Rg = views * G, Rl = views * b;
    int LG = multicrop ? LOCAL * G : 0, LR = multicrop ? LOCAL * b : 0;
    float *tokens = xmalloc(sizeof(float) * Rg * T * D, "tokens"), *keys = xmalloc(sizeof(float) * G * O, "keys");
    fill(tokens, (size_t)Rg * T * D, 21);
    Rng r;
    rng_seed(&r, 3, 3);
    for (int i = 0; i < G; i++) {  // unit keys, as the teacher's projector gives
        double ss = 0;
        for (int j = 0; j < O; j++) keys[i * O + j] = (float)rng_normal(&r), ss += keys[i * O + j] * keys[i * O + j];
        for (int j = 0; j < O; j++) keys[i * O + j] /= (float)sqrt(ss);
    }
    float *mine = xmalloc(sizeof(float) * Rl * T * D, "my rows");
    for (int v = 0; v < views; v++)  // my slice of each view, as the loader and objective lay it out
        memcpy(mine + (size_t)v * b * T * D, tokens + ((size_t)v * G + (size_t)rank * b) * T * D, sizeof(float) * b * T * D);
    // local rows: all of them for the reference, this rank's images' for the rank
    float *ltok = xmalloc(sizeof(float) * (LG + 1) * T * D, "local rows"), *lmine = xmalloc(sizeof(float) * (LR + 1) * T * D, "mine");
    float *d_lref = xmalloc(sizeof(float) * (LG + 1) * T * D, "d"), *d_lmine = xmalloc(sizeof(float) * (LR + 1) * T * D, "d");
    int *pos_ref = xmalloc(sizeof(int) * (LG + 1), "pos"), *pos_mine = xmalloc(sizeof(int) * (LR + 1), "pos");
    fill(ltok, (size_t)LG * T * D, 33);
    for (int k = 0; k < (multicrop ? LOCAL : 0); k++)
        memcpy(lmine + (size_t)k * b * T * D, ltok + ((size_t)k * G + (size_t)rank * b) * T * D, sizeof(float) * b * T * D);
    if (multicrop) local_positives(pos_ref, G, 0, G, infonce), local_positives(pos_mine, b, rank * b, G, infonce);
    LocalRows lref = {ltok, pos_ref, d_lref, LG}, lm = {lmine, pos_mine, d_lmine, LR};
    const LocalRows *lr = multicrop ? &lref : NULL, *lme = multicrop ? &lm : NULL;
    HeadFixture ref, dist;
    head_make(&ref, 1, Rg, LG);
    head_make(&dist, W, Rl, LR);
    float *d_ref = xmalloc(sizeof(float) * Rg * T * D, "d ref"), *d_mine = xmalloc(sizeof(float) * Rl * T * D, "d mine");
    double loss_ref = head_step(&ref, tokens, Rg, infonce ? keys : NULL, d_ref, lr);
    double loss = head_step(&dist, mine, Rl, infonce ? keys + (size_t)rank * b * O : NULL, d_mine, lme);
    dist_allreduce_sum_doubles(&loss, 1);
    loss /= W;
    HeadFixture local;  // the control: one rank's negatives alone give another loss
    head_make(&local, 1, Rl, 0);
    double loss_local = head_step(&local, mine, Rl, infonce ? keys + (size_t)rank * b * O : NULL, d_mine, NULL);
    dist_allreduce_sum_doubles(&loss_local, 1);
    loss_local /= W;
    head_free(&local);
    loss = head_step(&dist, mine, Rl, infonce ? keys + (size_t)rank * b * O : NULL, d_mine, lme);  // again: d_mine was reused
    dist_allreduce_sum_doubles(&loss, 1);
    loss /= W;
    size_t P = dist.t.total;
    DistSum *s = dist_sum_create(P);
    dist_sum_start(s, dist.t.grad, P);
    dist_sum_wait(s, "test gradients");
    dist_sum_free(s);
    float gmax = 0;
    for (size_t i = 0; i < P; i++) dist.t.grad[i] /= (float)W, gmax = fmaxf(gmax, fabsf(ref.t.grad[i]));
    double worst_tok = 0;
    for (int v = 0; v < views; v++)
        for (int i = 0; i < b; i++) {
            float *got = d_mine + ((size_t)v * b + i) * T * D, *want = d_ref + ((size_t)v * G + (size_t)rank * b + i) * T * D;
            for (int k = 0; k < T * D; k++) got[k] /= (float)W;  // the mean over ranks' losses
            double w = check_close_ratio(got, want, (size_t)T * D, 1e-7, 1e-4);
            if (!(w <= worst_tok)) worst_tok = w;
        }
    for (int k = 0; k < (multicrop ? LOCAL : 0); k++)
        for (int i = 0; i < b; i++) {
            float *got = d_lmine + ((size_t)k * b + i) * T * D, *want = d_lref + ((size_t)k * G + (size_t)rank * b + i) * T * D;
            for (int j = 0; j < T * D; j++) got[j] /= (float)W;
            double w = check_close_ratio(got, want, (size_t)T * D, 1e-7, 1e-4);
            if (!(w <= worst_tok)) worst_tok = w;
        }
    double worst_par = check_close_ratio(dist.t.grad, ref.t.grad, P, 1e-6 * gmax, 1e-4);
    const char *what = infonce ? (multicrop ? "InfoNCE + local views" : "InfoNCE")
                               : (multicrop ? "NT-Xent + local views" : "NT-Xent");
    char name[160];
    printf("  rank %d %s: loss %.9f vs one process %.9f; worst token-gradient ratio %.3g, parameter %.3g\n", rank, what,
           loss, loss_ref, worst_tok, worst_par);
    snprintf(name, sizeof name, "%s with global negatives: the mean loss over %d ranks is one process's", what, W);
    CHECK(name, fabs(loss - loss_ref) <= 1e-6 * fabs(loss_ref), "%.9f vs %.9f", loss, loss_ref);
    snprintf(name, sizeof name, "%s with local negatives (the control) differs from one process's", what);
    CHECK(name, fabs(loss_local - loss_ref) > 1e-3 * fabs(loss_ref), "%.9f vs %.9f", loss_local, loss_ref);
    snprintf(name, sizeof name, "%s with global negatives: each rank's input gradients are one process's rows", what);
    CHECK(name, worst_tok <= 1, "worst ratio %.3g", worst_tok);
    snprintf(name, sizeof name, "%s with global negatives: the averaged projector gradients are one process's", what);
    CHECK(name, worst_par <= 1, "worst ratio %.3g", worst_par);
    head_free(&ref), head_free(&dist);
    xfree(tokens), xfree(keys), xfree(mine), xfree(d_ref), xfree(d_mine);
    xfree(ltok), xfree(lmine), xfree(d_lref), xfree(d_lmine), xfree(pos_ref), xfree(pos_mine);
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int W = dist_world(), rank = dist_rank();
    if (W < 2) {
        fprintf(stderr, "mpi_collectives: run under mpirun with 2 or more ranks (tests/test_distributed.py does)\n");
        dist_finalize();
        return 2;
    }
    check_dist_sum(W, rank);
    for (int multicrop = 0; multicrop < 2; multicrop++) {
        check_contrast(W, rank, 0, multicrop);
        check_contrast(W, rank, 1, multicrop);
    }
    dist_finalize();
    return check_failures ? 1 : 0;
}
