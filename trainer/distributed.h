// distributed.h: data parallelism over Open MPI. Every rank takes its slice of
// one global batch (loader.h), computes gradients on it, and the gradients are
// averaged across ranks (summed, then scaled by 1/world) before the update, so
// every rank applies the same step. Without MPI (or with one rank) every call
// is a no-op on a world of one.
//
// The per-step collectives are non-blocking calls waited on with a deadline
// (dist_set_timeout): a rank that dies or hangs ends the job with a message
// instead of leaving the others waiting for ever.
#pragma once
#include <stddef.h>

void dist_init(int *argc, char ***argv);   // MPI_Init when built with MPI
void dist_finalize(void);
int dist_rank(void);
int dist_world(void);
// Seconds a per-step collective may wait for the other ranks before the job is ended.
void dist_set_timeout(double seconds);
// Seconds this process has spent in the per-step collectives (waiting, starting, polling and
// the rank-order sums): the communication a step does not hide.
double dist_comm_seconds(void);
void dist_allreduce_sum_doubles(double *x, size_t n);   // in place
void dist_allreduce_max_int(int *x);
void dist_broadcast_bytes(void *buf, size_t n);         // from rank 0
// Rank 0 receives every rank's n bytes (rank order) into all [world * n]; others pass all = NULL.
void dist_gather_bytes(const void *mine, size_t n, void *all);
void dist_barrier(void);                                 // start-up only: no deadline
// Every rank receives every rank's n floats, in rank order, into all [world * n].
void dist_allgather_floats(const float *mine, size_t n, float *all);
// all [world * n] on every rank; mine [n] = the sum over ranks of their slice `rank`,
// added in rank order (the same bits whatever MPI's algorithm).
void dist_reduce_scatter_sum_floats(const float *all, size_t n, float *mine);

// Sums of float slices over ranks, in flight while the caller computes: each
// element is added in rank order 0, 1, ..., so the bits do not depend on how the
// buffer is sliced nor on MPI's algorithm (blocking and overlapped reductions agree).
// Each slice is scattered in parts (alltoall), summed by its part's owner, then
// gathered back (allgather): the volume of a ring allreduce.
typedef struct DistSum DistSum;
DistSum *dist_sum_create(size_t max_floats);   // scratch for max_floats in flight at once
void dist_sum_start(DistSum *s, float *x, size_t n);   // x [n] becomes the sum over ranks
void dist_sum_poll(DistSum *s);                 // advance slices in flight (call between pieces of work)
void dist_sum_wait(DistSum *s, const char *what);  // every slice done; `what` names it on a timeout
void dist_sum_free(DistSum *s);
