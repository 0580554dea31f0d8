// step.h: one optimiser update: accum_steps micro-batches from the loader
// through the objective (pretraining heads or classification), the ranks'
// gradients summed, clipped, AdamW, then the EMA teacher.
#pragma once
#include <stdint.h>

#include "distributed.h"
#include "loader.h"
#include "model.h"

typedef struct {
    double token, pixel, contrast, total;  // mean over micro-batches (and ranks); classify: CE in token/total
    double grad_norm;                      // before clipping
    int clipped;                           // 1: the norm was above clip_grad
    long images;                           // every rank's images in this update
    double data_wait_s, compute_s;         // this rank's seconds waiting for batches, computing them
    double comm_s;                         // this rank's seconds in collectives (dist_comm_seconds)
    long skipped[SKIP_NUM_REASONS];        // samples skipped so far, every rank's
    int64_t epoch;                         // the loader's epoch of the last batch
    int failed;                            // 1: a non-finite loss or gradient; no update applied, see Stepper.err
} StepStats;

typedef struct {
    Model *model;
    Loader *loader;
    int accum_steps;
    double clip_grad;                      // <= 0: no clipping
    int rank, world;
    int batch_size;                        // per rank: this rank's slice of a global batch starts at rank * batch_size
    size_t reduced_floats;                 // gradients summed over ranks: the table's trained head
    int overlap;                           // 1: each block's gradients are reduced as its backward ends
    DistSum *sum;                          // the reduction in flight (world > 1); train_step makes it
    long steps_per_epoch;                  // two epochs of empty batches mean the data has no usable image
    const char *data_train;                // named by the empty-data error
    long fault_step;                       // tests: this step's first loss becomes NaN; -1: none
    int64_t *micro_steps;                  // the masking / drop-path stream, advanced per micro-batch
    long empty_batches;                    // batches with no usable image, passed over
    char err[512];                         // why the last step failed
} Stepper;

// The Stepper's reduction state, made by the first train_step; free it after the last.
void stepper_release(Stepper *s);
// Update `step` with learning rate lr, contrastive weight w_contrast (phase-in)
// and EMA teacher momentum teacher_momentum (no-op without a teacher).
StepStats train_step(Stepper *s, long step, double lr, float w_contrast, float teacher_momentum);
