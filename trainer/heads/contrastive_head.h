// contrastive_head.h: the projector and the contrastive losses.
//
// Projector: z = normalise(fc2(GELU(fc1(cls)))) over R CLS rows, D -> H -> O.
// NT-Xent (SimCLR): the 2B projections of both views; row i's positive is its
// other view, every other row a negative. InfoNCE (MoCo v3, with the EMA
// teacher): B queries against the teacher's B keys; key i is query i's positive.
#pragma once
#include <stdint.h>

#include "common.h"
#include "params.h"

typedef struct {
    int D, H, O, first;               // first: fc1.weight's index in the table
    float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    float *gfc1_w, *gfc1_b, *gfc2_w, *gfc2_b;
    float *in, *h, *g, *u, *z, *norm;  // [R,D] [R,H] (pre-GELU) [R,H] [R,O] [R,O] [R]
    float *d_in, *d_h, *d_u, *d_z;     // [R,D] [R,H] [R,O] [R,O]; NULL when forward only
} Projector;

// "<prefix>fc1.weight" ... "<prefix>fc2.bias"
void projector_register(Projector *p, ParamTable *t, const char *prefix, int D, int H, int O);
void projector_bind(Projector *p, const ParamTable *t);
void projector_init(Projector *p, const ParamTable *t, uint64_t seed);
// R rows; grads NULL: forward only (the teacher's copy).
void projector_layout(Projector *p, Arena *acts, Arena *grads, long R);
// tokens [R,T,D]: the projector reads each row's CLS (token 0). Result in p->z.
void projector_forward(Projector *p, const float *tokens, int R, int T);
// From p->d_z: parameter gradients accumulate; d_tokens [R,T,D] += d loss / d CLS.
void projector_backward(Projector *p, float *d_tokens, int R, int T);
double projector_forward_flops(const Projector *p, double R);

// Global negatives (world > 1): every rank's projections (NT-Xent) or the teacher's keys
// (InfoNCE) are all-gathered, so this rank's R rows score against all world * R rows,
// arranged as one process holding the whole batch would hold them (view1 of every image,
// then view2). The loss is the mean over this rank's rows; the gradient of the gathered
// rows (NT-Xent: each row is a negative of every rank's anchors) is summed over ranks and
// each rank keeps its own rows'. Averaged over ranks, that is the one-process loss and gradient.
typedef struct {
    Projector proj;
    float tau;
    int world, rank;                   // world > 1: global negatives
    int R, C, R_max;                   // rows of the last forward; columns (world * R); rows laid out
    int with_keys;                     // 1: InfoNCE against keys; 0: NT-Xent
    const float *keys;                 // [C,O] the (gathered) teacher's keys, constant
    float *others;                     // [C,O] world > 1: the gathered rows in one-process order
    float *gathered, *d_gathered;      // [C,O] world > 1: in rank order (the all-gather's), their gradient
    float *sim;                        // [R,C] softmax of the last forward; its backward reuses it in place
    float *row_loss;                   // [R]
    int *self_col, *pos_col;           // [R] each row's own column (-1: none) and its positive's
    // Multi-crop: local views' rows are anchors only, scored against the same C columns.
    Projector local;                   // the projector's weights; its own activations
    int RL, T_local;                   // local rows of the last forward (0: none), their tokens per row
    float *sim_local, *row_loss_local; // [RL,C], [RL]
    int *local_self, *local_pos;       // [RL] all -1; each local row's positive column
    float *d_local_tokens;             // [RL,T_local,D] where the backward adds the local rows' gradient
} ContrastiveHead;

// world: ranks whose rows are negatives (1: this rank's alone).
void contrastive_head_register(ContrastiveHead *c, ParamTable *t, int D, int H, int O, float tau, int world);
void contrastive_head_bind(ContrastiveHead *c, const ParamTable *t);
void contrastive_head_init(ContrastiveHead *c, const ParamTable *t, uint64_t seed);
void contrastive_head_layout(ContrastiveHead *c, Arena *acts, Arena *grads, long R);
// Projects the R CLS rows of tokens [R,T,D]; keys [R,O] (InfoNCE) or NULL (NT-Xent over
// R = 2B rows, view1's B then view2's B). Returns the mean loss over the R rows.
double contrastive_head_forward(ContrastiveHead *c, const float *tokens, int R, int T, const float *keys);
// Room for up to RL local rows (multi-crop); after contrastive_head_bind and _layout, whose
// weights and row count it takes.
void contrastive_head_layout_local(ContrastiveHead *c, Arena *acts, Arena *grads, long RL);
// After contrastive_head_forward: RL local rows (CLS of tokens [RL,T,D]) as extra anchors,
// row i's positive the column pos_col[i] (a global view of its image), every other column a
// negative. Returns their mean loss; the head's loss is then the mean over all R + RL rows,
// and the backward adds the local rows' gradient to d_tokens [RL,T,D].
double contrastive_head_local_forward(ContrastiveHead *c, const float *tokens, float *d_tokens, int RL, int T,
                                      const int *pos_col);
// d_tokens [R,T,D] += d (scale * loss) / d tokens (CLS rows), and the local rows' (above).
void contrastive_head_backward(ContrastiveHead *c, float *d_tokens, int T, float scale);
// Forward of R rows: the projector and the similarity product.
double contrastive_head_forward_flops(const ContrastiveHead *c, double R);
