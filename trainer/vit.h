// vit.h: a Vision Transformer with timm's parameter names, shapes and layouts
// (VisionTransformer: pre-norm blocks, LayerNorm eps 1e-6, exact GELU), built
// on kernels.h. Parameters live in a ParamTable shared with the pretraining
// heads; activations and activation gradients each live in one arena.
#pragma once
#include <stdint.h>

#include "common.h"
#include "kernels.h"
#include "heads/classifier_head.h"
#include "params.h"

typedef struct {
    int img_size, patch_size, in_chans;
    int embed_dim, depth, num_heads;
    float mlp_ratio;
    int qkv_bias;              // 1: the qkv projection has a bias
    float layer_scale_init;    // 0: no layer scale; else ls1/ls2 gamma start at this value
    int num_classes;           // 0: no classification head
    int use_mask_token;        // 1: register `mask_token` for masked modeling
} VitConfig;

// ---- one transformer block (also used by the pixel head) -----------------------
typedef struct {
    int D, H, hidden;          // width, heads, MLP hidden width
    int qkv_bias, layer_scale;
} BlockDims;

typedef struct {               // pointers into the param (or grad) arena
    float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ls1;
    float *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *ls2;
} BlockWeights;

typedef struct {               // saved for backward, for B*T tokens
    float *ln1_mean, *ln1_rstd;         // [BT], [BT] (the normalised rows are recomputed)
    float *qkv;                         // [BT,3D]
    float *probs;                       // [B,H,T,T]
    float *attn;                        // [BT,D] heads concatenated, before proj
    // Laid out under precision bf16 instead of qkv and attn, which feed only products that round them
    // to bf16 anyway: the same bits in half the bytes.
    uint16_t *qkv16, *attn16;
    float *attn_proj;                   // [BT,D] proj output (layer scale only)
    float *x_mid;                       // [BT,D] residual stream after attention
    float *ln2_mean, *ln2_rstd;
    float *fc1;                         // [BT,hidden] before GELU (its output is recomputed)
    float *mlp_out;                     // [BT,D] fc2 output (layer scale only)
    float *out;                         // [BT,D] block output
} BlockActs;

// Shared by all blocks (and the pixel head): the layernorm and GELU outputs,
// which the forward uses once and the backward recomputes, so they are not
// kept per block (6 of 16 floats per token and width), and backward scratch.
typedef struct {
    float *ln;                          // [BT,D] norm1 or norm2 output of the block at hand
    float *gelu;                        // [BT,hidden]
    uint16_t *ln16, *gelu16;            // the same in bf16, laid out instead under precision bf16
    float *d_branch, *d_norm;           // [BT,D] each
    float *d_hidden;                    // [BT,hidden]
    float *d_qkv;                       // [BT,3D]
    float *kept;                        // [BT,D] compact rows of a block with a RowSet
    float *attn_scratch;                // threads * attention_scratch_floats(T, D)
} BlockScratch;

BlockDims block_dims(int D, int H, float mlp_ratio, int qkv_bias, float layer_scale_init);
// Registers "<prefix>norm1.weight" ... "<prefix>mlp.fc2.bias"; returns the first index.
int block_register(ParamTable *t, const char *prefix, const BlockDims *d);
void block_bind(BlockWeights *w, BlockWeights *g, const ParamTable *t, int first, const BlockDims *d);
void block_init(const BlockWeights *w, const ParamTable *t, int first, const BlockDims *d, uint64_t seed,
                float layer_scale_init);
void block_layout(BlockActs *a, Arena *acts, const BlockDims *d, int B, int T);
void block_scratch_layout(BlockScratch *s, Arena *grads, const BlockDims *d, int B, int T);
// Stochastic depth: drop [2][B] scales each image's attention (row 0) and MLP
// (row 1) branch by 0 or 1/keep; NULL means no drop path.
// x_in [B,T,D] -> a->out [B,T,D]
// rows (NULL: all) limits the block to the token rows a caller reads: only
// they go through attention's queries, proj and the MLP (every row still gives
// keys and values); a row not kept leaves as it came in (out = x_in there), and
// its d(out) passes straight to d(x_in). Cached activations after attention are
// then compact, [rows->total, ...].
void block_forward(BlockActs *a, const BlockWeights *w, const BlockScratch *s, const BlockDims *d, const float *x_in,
                   const float *drop, const RowSet *rows, int B, int T);
// dres: on entry d(out) [B,T,D], on return d(x_in). Parameter gradients accumulate into g.
void block_backward(float *dres, const BlockWeights *g, const BlockScratch *s, const BlockActs *a,
                    const BlockWeights *w, const BlockDims *d, const float *x_in, const float *drop, const RowSet *rows,
                    int B, int T);

// ---- the encoder -------------------------------------------------------------------
typedef struct {
    float *cls_token, *pos_embed, *patch_w, *patch_b, *mask_token, *norm_w, *norm_b;
    BlockWeights *blocks;
} VitWeights;

typedef struct {
    VitConfig cfg;
    int grid, N, T, D, patch_dim, max_batch;
    BlockDims bdims;
    ParamTable *params;
    int first_index, last_index;   // this model's tensors in the table: [first, last)
    char prefix[32];               // before every tensor name ("" for the encoder; the teacher's copy has one)
    int *block_first;              // per block, its first tensor index
    VitWeights w, g;               // values and gradients

    Arena acts, grads;             // activations; activation gradients + scratch
    // activations, sized for max_batch
    float *patches;                // [B,N,patch_dim]
    float *emb;                    // [B,N,D] patch embeddings (mask tokens substituted)
    uint8_t *mask;                 // [B,N] copy of the forward's mask (all 0 when none)
    int has_mask;
    float *x0;                     // [B,T,D] input to block 0
    BlockActs *blocks;
    float *final, *final_mean, *final_rstd;  // [B,T,D] after the final norm
    ClassifierHead head;           // num_classes > 0: fine-tuning's classification head
    // activation gradients
    float *dres;                   // [B,T,D] residual-stream gradient
    float *demb;                   // [B,N,D]
    BlockScratch scratch;
    int freeze_patch_embed;        // 1: skip the patch-embedding weight gradient
    float drop_path_rate;          // stochastic depth of the last block (timm: linear from 0)
    float *drop_scale;             // [depth][2][max_batch] this step's branch scales
    int drop_active;               // 1: vit_forward applies drop_scale (training steps only)
    int forward_only;              // 1: two blocks' activations, reused in turn (no vit_backward)
    void *owner;                   // vit_create's Model (model.h)
    // The last block's rows the caller will read (NULL: all; see block_forward):
    // the pretraining objective reads CLS and the scored patches only. Set for
    // one vit_forward / vit_backward pair; other rows of final are then stale.
    const RowSet *last_rows;
    // Told during vit_backward as parameter gradients become final, so that their
    // reduction over ranks can start: VIT_GRADS_TAIL after the final norm (every tensor
    // registered after the blocks), block l after its backward, VIT_GRADS_HEAD at the
    // end (the tensors before block 0). NULL: nobody listens.
    void (*grads_ready)(void *ctx, int part);
    void *grads_ready_ctx;
    // Position rows of the patch tokens, [B,N] 1-based into pos_embed (NULL: 1 + n): a
    // weight-sharing encoder of a smaller image (vit_share) sees windows of the grid.
    const int32_t *pos_rows;
    int shares_weights;            // 1: w, g and the table belong to another Vit (vit_share)
} Vit;

enum { VIT_GRADS_TAIL = -1, VIT_GRADS_HEAD = -2 };

// Checks a config; returns NULL if valid, else a message naming the bad field.
const char *vit_config_error(const VitConfig *cfg);
// Registers the encoder's tensors in t under timm's names (prefix "" ).
void vit_register(Vit *vit, ParamTable *t, const VitConfig *cfg);
// The same under "<prefix><timm name>": a second encoder in one table (the EMA teacher).
void vit_register_prefixed(Vit *vit, ParamTable *t, const VitConfig *cfg, const char *prefix);
// After params_allocate: resolve pointers, then initialise (timm: trunc normal 0.02
// for weights and pos_embed, zeros for biases, ones for norms, cls_token N(0, 1e-6)).
void vit_bind(Vit *vit);
void vit_init_weights(Vit *vit, uint64_t seed);
// dst: an encoder of img_size-pixel images (a whole number of patches, at most the
// source's) on src's weights and gradients, with its own activations (allocate them).
// Its position embedding is src's, read through pos_rows (a window of src's grid per
// image): multi-crop's local views. Gradients accumulate into src's.
void vit_share(Vit *dst, const Vit *src, int img_size);
// Size and allocate the activation arenas for up to max_batch images.
void vit_allocate_activations(Vit *vit, int max_batch);
size_t vit_activation_bytes(const Vit *vit);
// The same for a model that only runs forward (the EMA teacher): blocks reuse two
// sets of buffers in turn, so the memory does not grow with depth; vit_backward
// refuses it. Only the final tokens and the last two blocks' outputs survive.
void vit_allocate_forward_activations(Vit *vit, int max_batch);

// images [B,C,H,W] normalised; mask [B,N] (nonzero: replace by mask_token) or NULL.
// Results: vit->final [B,T,D], and every block's output vit->blocks[l].out.
void vit_forward(Vit *vit, const float *images, const uint8_t *mask, int B);
// dfinal: d loss / d final [B,T,D] or NULL. dblock: NULL, or depth pointers
// where dblock[l] (if non-NULL) is d loss / d blocks[l].out, added on the way down.
// Parameter gradients accumulate into the grad arena.
void vit_backward(Vit *vit, const float *dfinal, float *const *dblock, int B);

// Classification head on the final features: pool 0 = CLS token, 1 = mean of the
// patch tokens. Returns the mean cross-entropy; vit_head_backward fills vit->dfinal.
float vit_head_forward(Vit *vit, const int32_t *labels, int B, int pool);
void vit_head_backward(Vit *vit, const int32_t *labels, int B, int pool, float dloss);

// Draw this step's stochastic-depth scales for B images from (seed, step) and
// switch them on; vit->drop_active = 0 switches them off (evaluation).
// Drop-path draws for images first_image .. first_image + B - 1 of step's global batch:
// each image's draws depend on (seed, step, its index) alone, so that ranks holding
// slices of a batch draw what one process holding all of it would.
void vit_sample_drop_path(Vit *vit, int B, uint64_t seed, int64_t step, int64_t first_image);

// Keep only these rows of the last block (NULL: all) from the next vit_forward
// through its vit_backward; vit->last_rows above.
void vit_set_last_rows(Vit *vit, const RowSet *rows);

// Forward FLOPs per image of the encoder (2 per multiply-add), for MFU figures.
double vit_forward_flops_per_image(const VitConfig *cfg);
// Its patch-embedding term alone (2 N D C P^2): a step runs no input gradient for it.
double vit_patch_embed_flops_per_image(const VitConfig *cfg);
// Forward FLOPs of one block on T tokens per image of which R are kept rows.
double block_forward_flops(double T, double R, double D, double hidden);

// Its activations and bookkeeping, not the table (a model registered in another's table).
void vit_release(Vit *vit);
ParamTable *vit_params(Vit *vit);

// Views of the forward's results (for tests and the objective).
float *vit_final_tokens(Vit *vit);          // [B,T,D]
float *vit_block_output(Vit *vit, int l);   // [B,T,D]
float *vit_logits(Vit *vit);                // [B,num_classes]
float *vit_head_dfinal(Vit *vit);           // [B,T,D] filled by vit_head_backward
// Keep the random patch embedding fixed (MoCo v3): the optimiser skips its two
// tensors and vit_backward computes no gradient for them.
void vit_freeze_patch_embed(Vit *vit);
// Layer-wise lr decay (BEiT) on the encoder's table: the final norm and head get
// lr, blocks.i lr * decay^(depth - i), the embeddings lr * decay^(depth + 1).
void vit_set_layer_decay(Vit *vit, double decay);
// Fine-tuning regularisers: stochastic depth rate and label smoothing.
void vit_set_regularisation(Vit *vit, float drop_path_rate, float label_smoothing);
float *vit_drop_scales(Vit *vit);           // [depth][2][max_batch]
