// checkpoint.h: one self-describing HDF5 file per checkpoint, written atomically.
//
// Layout (every dataset chunked + Fletcher32; metadata checksummed too):
//   /encoder/<timm name>          encoder tensors with their real shapes ("blocks.3.attn.qkv.weight")
//   /pretrain_heads/<name>        "mask_token" and every "pretrain.*" tensor, prefix stripped
//   /optimizer/m/<name>, /optimizer/v/<name>   AdamW moments (full table names), when saved
//   /tokenizer                    tokenizer_save_group, when given
//   root attributes: format_version, step, epoch, adamw_step, adamw_beta1/beta2/eps/weight_decay,
//     config_yaml, code_version, created_utc, rng_states (bytes), loader_cursor (bytes)
// `h5ls -r file.h5` lists every tensor; h5py reads them by name.
//
// Every function returns 0 on success, or -1 with a message in err naming the
// file, tensor or attribute and what to do. Nothing here calls fatal() on a bad file.
//
// The trainer:
//   CheckpointState s = {.params = &table, .opt = &opt, .tokenizer = tok, .config_yaml = yaml,
//                        .step = step, .epoch = epoch, .rng = rngs, .rng_size = sizeof rngs,
//                        .cursor = cur, .cursor_size = loader_cursor_size()};
//   loader_cursor_save(loader, cur);
//   if (checkpoint_save_step(run_dir, &s, cfg.keep_last, cfg.keep_every, err, sizeof err)) ... (disk full: stop)
// Resume: checkpoint_find_resume(run_dir, path, ...) for `auto`; checkpoint_read_info(path) for
// its config; build the model and optimizer from it; checkpoint_load(path, &s) fills params,
// m, v, opt.step, s.step, s.epoch, rngs and cur; then loader_cursor_restore(loader, cur).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "optim.h"
#include "params.h"
#include "tokenizer.h"

#define CHECKPOINT_FORMAT_VERSION 1

typedef enum {
    CKPT_LOAD_FULL = 0,     // every tensor of the table and of the file must match one to one (resume)
    CKPT_LOAD_ENCODER = 1,  // only the table's encoder tensors except head.* (eval, fine-tune); the
                            // file's heads / optimizer are ignored, the table's head keeps its values
    CKPT_LOAD_TEACHER = 2,  // as ENCODER, from the EMA teacher's copies (/pretrain_heads/teacher.<name>)
} CheckpointLoadMode;

// What a checkpoint holds. The trainer fills the pointers for a save, and points
// them at its already-built state for a load.
typedef struct {
    ParamTable *params;          // required
    AdamW *opt;                  // NULL: no optimizer state written / read
    const Tokenizer *tokenizer;  // save: embedded when non-NULL
    const char *config_yaml;     // save: the effective config (config_to_yaml). load: if non-NULL, a
                                 // shape mismatch also names the config keys that differ
    const char *code_version;    // save: NULL -> `git describe --always --dirty` of the cwd, or "unknown"
    int64_t step, epoch;         // load: filled from the file
    void *rng;                   // opaque bytes (RNG states); load: must be rng_size bytes in the file
    size_t rng_size;
    void *cursor;                // opaque bytes (loader_cursor_save); same rule
    size_t cursor_size;
    CheckpointLoadMode mode;     // load only
} CheckpointState;

// Atomic save: writes the whole file image in memory, then `<path>.tmp.<pid>` in
// the same folder, fsync, rename over path, fsync the folder. On any failure
// (ENOSPC, EFBIG, EIO...) the partial file is removed and an existing `path` is
// untouched.
int checkpoint_save(const char *path, const CheckpointState *s, char *err, size_t errlen);

// Load into already-built state (params / opt allocated with the same model).
// Checks the format version, every tensor's presence and shape, and every
// checksum; all data is staged first, so on failure nothing in *s is modified.
// Reads step, epoch, adamw step, rng and cursor bytes.
int checkpoint_load(const char *path, CheckpointState *s, char *err, size_t errlen);

// Load the embedded tokenizer (caller frees with tokenizer_free). NULL with a
// message when the file has none or it is unreadable.
Tokenizer *checkpoint_load_tokenizer(const char *path, char *err, size_t errlen);

// The attributes alone (cheap): for --resume (config) and the tools.
typedef struct {
    int64_t format_version, step, epoch, adamw_step;
    char *config_yaml;           // xmalloc'd
    char *code_version;          // xmalloc'd
    char *created_utc;           // xmalloc'd
    int has_optimizer, has_tokenizer;
} CheckpointInfo;
int checkpoint_read_info(const char *path, CheckpointInfo *info, char *err, size_t errlen);
// The config a checkpoint was trained with (its config_yaml, read back and finalized), for
// comparing with the config at hand. -1 (err) when it stores none or it does not read back.
int checkpoint_config(const CheckpointInfo *info, const char *path, Config *out, char *err, size_t errlen);
void checkpoint_info_free(CheckpointInfo *info);

// Integrity only: the file opens, the version is known, and every dataset reads
// back with a good checksum. No model needed. Runs in a child process, so that a
// crash inside libhdf5 on a damaged file is a failed verification;
// checkpoint_verify_in_process is the same check in this process (the fuzz harness).
int checkpoint_verify(const char *path, char *err, size_t errlen);
int checkpoint_verify_in_process(const char *path, char *err, size_t errlen);

// ---- run folders ------------------------------------------------------------
// Files are <run_dir>/ckpt_step00001000.h5; `latest` is a symlink to the newest
// complete one, replaced atomically.
void checkpoint_path(char *out, size_t n, const char *run_dir, int64_t step);

// checkpoint_save to checkpoint_path(step), point `latest` at it, then
// checkpoint_prune. On failure the previous checkpoints and `latest` stay.
int checkpoint_save_step(const char *run_dir, const CheckpointState *s, int keep_last, int keep_every, char *err,
                         size_t errlen);

// Keep the newest keep_last checkpoints, every one whose step is a multiple of
// keep_every (> 0), and the one `latest` names; remove the others and leftover
// temporary files of dead processes. Returns the number removed.
int checkpoint_prune(const char *run_dir, int keep_last, int keep_every);

// For `--resume auto`: the newest checkpoint in run_dir that passes
// checkpoint_verify; each one that fails is reported with warn() ("... fails
// verification: ...; falling back to the previous one"). Returns 1 with its path
// in out, 0 when run_dir holds no checkpoint, -1 (err) when none is good.
int checkpoint_find_resume(const char *run_dir, char *out, size_t n, char *err, size_t errlen);

// On resume from step `step`: the run folder's checkpoints of later steps belong to a
// branch the resume abandons (an explicit --resume of an older file, or ones that failed
// verification). Left in place, --resume=auto and pruning (both by step number) would
// prefer them over the new branch. They are moved, not deleted, into
// <run_dir>/set_aside_after_stepNNNNNNNN[.k]/ (named in folder). Returns how many.
int checkpoint_set_aside_after(const char *run_dir, int64_t step, char *folder, size_t folder_len);
