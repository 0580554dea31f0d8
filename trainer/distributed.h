// distributed.h: data parallelism over Open MPI. Each rank reads its own
// slice of the shards, computes gradients on its batch, and the gradients are
// averaged across ranks (summed, then scaled by 1/world) before the update, so every rank applies the same step.
// Without MPI (or with one rank) every call is a no-op on a world of one.
#pragma once
#include <stddef.h>

void dist_init(int *argc, char ***argv);   // MPI_Init when built with MPI
void dist_finalize(void);
int dist_rank(void);
int dist_world(void);
void dist_allreduce_sum_floats(float *x, size_t n);     // in place
void dist_allreduce_sum_doubles(double *x, size_t n);   // in place
void dist_allreduce_max_int(int *x);
void dist_broadcast_bytes(void *buf, size_t n);         // from rank 0
// Rank 0 receives every rank's n bytes (rank order) into all [world * n]; others pass all = NULL.
void dist_gather_bytes(const void *mine, size_t n, void *all);
// Every rank receives its own n-byte slice of rank 0's all [world * n].
void dist_scatter_bytes(const void *all, size_t n, void *mine);
void dist_barrier(void);
