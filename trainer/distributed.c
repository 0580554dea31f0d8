// distributed.c: the MPI calls behind distributed.h (Open MPI), or a world of one.
#include "distributed.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#ifdef HAVE_MPI
#include <mpi.h>

static int initialised = 0;

static pthread_t main_thread;
static MPI_Comm comm_scatter, comm_gather;

// One rank's fatal error stops every rank: the others would otherwise wait in a collective.
// Only the main thread may call MPI (MPI_THREAD_FUNNELED); from a loader thread the process
// exits, and mpirun ends the job when a rank exits with an error.
static void abort_world(void) {
    fflush(stderr);
    if (pthread_equal(pthread_self(), main_thread)) MPI_Abort(MPI_COMM_WORLD, 1);
}

void dist_init(int *argc, char ***argv) {
    int provided;
    // Only the main thread calls MPI; decode threads and OpenMP never do.
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) fatal("MPI_Init_thread failed");
    initialised = 1;
    if (provided < MPI_THREAD_FUNNELED) fatal("this MPI library does not support MPI_THREAD_FUNNELED (it offers level %d)", provided);
    int world;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    main_thread = pthread_self();
    if (world > 1) set_fatal_exit(abort_world);
    // The gradient sums' two phases run on their own communicators: collectives must be
    // started in the same order on every rank, and only within each phase is it fixed.
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_scatter);
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_gather);
}

void dist_finalize(void) {
    if (initialised) {
        MPI_Comm_free(&comm_scatter);
        MPI_Comm_free(&comm_gather);
        MPI_Finalize();
    }
    initialised = 0;
}

int dist_rank(void) {
    int r = 0;
    if (initialised) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int dist_world(void) {
    int w = 1;
    if (initialised) MPI_Comm_size(MPI_COMM_WORLD, &w);
    return w;
}

static double timeout_s = 300;
static double comm_seconds = 0;  // in the per-step calls below: waits, starts, polls and the rank-order sums

void dist_set_timeout(double seconds) { timeout_s = seconds; }
double dist_comm_seconds(void) { return comm_seconds; }

// Wait for n requests, or end the job after timeout_s. A dead rank is normally reported by
// mpirun itself (it ends the job when a process exits); a hung one only shows as a
// collective that never completes. Polls with short sleeps: a waiting rank leaves the core to
// the decode threads and to oversubscribed ranks.
static void wait_all(int n, MPI_Request *reqs, const char *what) {
    double t0 = now_seconds();
    for (long polls = 0;; polls++) {
        int done = 0;
        MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (done) {
            comm_seconds += now_seconds() - t0;
            return;
        }
        if (polls > 200) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
        double waited = now_seconds() - t0;
        if (waited > timeout_s) {
            fprintf(stderr, "error: rank %d of %d: %s has waited %.0f s for the other ranks (dist_timeout_s %g): "
                    "a rank has died or hangs (the ranks that print no such line); ending the job\n",
                    dist_rank(), dist_world(), what, waited, timeout_s);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
    }
}

void dist_allreduce_sum_doubles(double *x, size_t n) {
    if (!initialised || dist_world() == 1) return;
    MPI_Request q;
    MPI_Iallreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &q);
    wait_all(1, &q, "the step's loss reduction");
}

void dist_allreduce_max_int(int *x) {
    if (!initialised || dist_world() == 1) return;
    MPI_Request q;
    MPI_Iallreduce(MPI_IN_PLACE, x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &q);
    wait_all(1, &q, "the stop agreement");
}

void dist_broadcast_bytes(void *buf, size_t n) {
    if (initialised && dist_world() > 1) MPI_Bcast(buf, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
}

void dist_gather_bytes(const void *mine, size_t n, void *all) {
    if (!initialised || dist_world() == 1) {
        memcpy(all, mine, n);
        return;
    }
    MPI_Request q;
    MPI_Igather(mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &q);
    wait_all(1, &q, "the checkpoint's cursor gather");
}

void dist_barrier(void) {
    if (initialised && dist_world() > 1) MPI_Barrier(MPI_COMM_WORLD);
}

void dist_allgather_floats(const float *mine, size_t n, float *all) {
    if (!initialised || dist_world() == 1) {
        memcpy(all, mine, sizeof(float) * n);
        return;
    }
    MPI_Request q;
    MPI_Iallgather(mine, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, MPI_COMM_WORLD, &q);
    wait_all(1, &q, "the contrastive embeddings' all-gather");
}

// recv [world][n]: every rank's contribution to one part; out [n] = their sum in rank order.
static void sum_in_rank_order(float *out, const float *recv, size_t n, int world) {
    memcpy(out, recv, sizeof(float) * n);
    for (int q = 1; q < world; q++) {
        const float *in = recv + (size_t)q * n;
        for (size_t i = 0; i < n; i++) out[i] += in[i];
    }
}

void dist_reduce_scatter_sum_floats(const float *all, size_t n, float *mine) {
    int world = dist_world();
    if (!initialised || world == 1) {
        memcpy(mine, all, sizeof(float) * n);
        return;
    }
    float *recv = xmalloc(sizeof(float) * n * world, "reduce-scatter buffer");
    MPI_Request q;
    MPI_Ialltoall(all, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, MPI_COMM_WORLD, &q);
    wait_all(1, &q, "the contrastive gradients' reduce-scatter");
    double t0 = now_seconds();
    sum_in_rank_order(mine, recv, n, world);
    comm_seconds += now_seconds() - t0;
    xfree(recv);
}

// ---- DistSum ----------------------------------------------------------------------------

// MPI counts are ints: slices are started in pieces of at most this many floats.
#define DIST_CHUNK (1 << 28)

typedef struct {
    float *x;
    MPI_Request req;
    float *recv;            // [world][count[rank]]: every rank's copy of my part
    int *count, *start;     // [world] each part's length and offset in x
    int *rcount, *rstart;   // [world] what each rank sends me, where it lands in recv
} SumSlice;                 // MPI reads the count arrays until the call completes: they live here

struct DistSum {
    int world, rank;
    SumSlice *slices;
    int n, cap, next_gather;   // slices [0, next_gather) are in phase 2
    float *scratch;
    size_t used, scratch_cap;
};

DistSum *dist_sum_create(size_t max_floats) {
    DistSum *s = xcalloc(1, sizeof *s, "reduction");
    s->world = dist_world(), s->rank = dist_rank();
    s->scratch_cap = max_floats + (size_t)s->world * 4096;  // + the parts' rounding
    if (s->world > 1) s->scratch = xmalloc(sizeof(float) * s->scratch_cap, "reduction scratch");
    return s;
}

static SumSlice *slice_new(DistSum *s) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        SumSlice *grown = realloc(s->slices, sizeof(SumSlice) * s->cap);
        if (!grown) fatal("out of memory for the gradient reduction");
        s->slices = grown;
    }
    return &s->slices[s->n++];
}

// Phase 1: part q of x goes to rank q.
static void slice_begin(DistSum *s, float *x, size_t n) {
    SumSlice *sl = slice_new(s);
    int W = s->world;
    sl->x = x;
    sl->count = xmalloc(sizeof(int) * 4 * W, "reduction parts");
    sl->start = sl->count + W, sl->rcount = sl->count + 2 * W, sl->rstart = sl->count + 3 * W;
    for (int q = 0; q < W; q++) {
        sl->start[q] = (int)(n * q / W);
        sl->count[q] = (int)(n * (q + 1) / W) - sl->start[q];
    }
    int mine = sl->count[s->rank];
    for (int q = 0; q < W; q++) sl->rcount[q] = mine, sl->rstart[q] = q * mine;
    if (s->used + (size_t)mine * W > s->scratch_cap)
        fatal("dist_sum: more than the %zu floats in flight it was made for", s->scratch_cap);
    sl->recv = s->scratch + s->used;
    s->used += (size_t)mine * W;
    MPI_Ialltoallv(x, sl->count, sl->start, MPI_FLOAT, sl->recv, sl->rcount, sl->rstart, MPI_FLOAT, comm_scatter,
                   &sl->req);
}

// Phase 2 once the parts are in: sum mine, then gather every rank's summed part.
static void slice_gather(DistSum *s, SumSlice *sl) {
    int r = s->rank;
    sum_in_rank_order(sl->x + sl->start[r], sl->recv, (size_t)sl->count[r], s->world);
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, sl->x, sl->count, sl->start, MPI_FLOAT, comm_gather, &sl->req);
}

void dist_sum_start(DistSum *s, float *x, size_t n) {
    if (s->world == 1 || n == 0) return;
    double t0 = now_seconds();
    for (size_t at = 0; at < n; at += DIST_CHUNK) slice_begin(s, x + at, n - at < DIST_CHUNK ? n - at : DIST_CHUNK);
    comm_seconds += now_seconds() - t0;
}

// Slices enter phase 2 in the order they were started, the same order on every rank.
void dist_sum_poll(DistSum *s) {
    double t0 = now_seconds();
    while (s->next_gather < s->n) {
        SumSlice *sl = &s->slices[s->next_gather];
        int done = 0;
        MPI_Test(&sl->req, &done, MPI_STATUS_IGNORE);
        if (!done) break;
        slice_gather(s, sl);
        s->next_gather++;
    }
    comm_seconds += now_seconds() - t0;
}

void dist_sum_wait(DistSum *s, const char *what) {
    for (; s->next_gather < s->n; s->next_gather++) {
        SumSlice *sl = &s->slices[s->next_gather];
        wait_all(1, &sl->req, what);
        double t0 = now_seconds();
        slice_gather(s, sl);
        comm_seconds += now_seconds() - t0;
    }
    for (int i = 0; i < s->n; i++) {
        wait_all(1, &s->slices[i].req, what);
        xfree(s->slices[i].count);
    }
    s->n = 0, s->used = 0, s->next_gather = 0;
}

void dist_sum_free(DistSum *s) {
    if (!s) return;
    free(s->slices);
    xfree(s->scratch);
    xfree(s);
}

#else  // a world of one

#include <stdlib.h>

// Built without MPI but started by mpirun (or an MPICH/PMI launcher): each process would train
// alone on all the data and overwrite the others' checkpoints in the same run
// folder. The launchers say the world size in the environment.
void dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static const char *sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        const char *v = getenv(sizes[i]);
        if (v && atoi(v) > 1)
            fatal("started as one of %s processes (%s), but this build has no MPI: install libopenmpi-dev and "
                  "rebuild without NO_MPI=1 (`make clean all`), or run a single process", v, sizes[i]);
    }
}
void dist_finalize(void) {}
int dist_rank(void) { return 0; }
int dist_world(void) { return 1; }
void dist_set_timeout(double seconds) { (void)seconds; }
double dist_comm_seconds(void) { return 0; }
void dist_allreduce_sum_doubles(double *x, size_t n) { (void)x, (void)n; }
void dist_allreduce_max_int(int *x) { (void)x; }
void dist_broadcast_bytes(void *buf, size_t n) { (void)buf, (void)n; }
void dist_gather_bytes(const void *mine, size_t n, void *all) { memcpy(all, mine, n); }
void dist_barrier(void) {}
void dist_allgather_floats(const float *mine, size_t n, float *all) { memcpy(all, mine, sizeof(float) * n); }
void dist_reduce_scatter_sum_floats(const float *all, size_t n, float *mine) { memcpy(mine, all, sizeof(float) * n); }

struct DistSum {
    int unused;
};
DistSum *dist_sum_create(size_t max_floats) {
    (void)max_floats;
    return xcalloc(1, sizeof(DistSum), "reduction");
}
void dist_sum_start(DistSum *s, float *x, size_t n) { (void)s, (void)x, (void)n; }
void dist_sum_poll(DistSum *s) { (void)s; }
void dist_sum_wait(DistSum *s, const char *what) { (void)s, (void)what; }
void dist_sum_free(DistSum *s) { xfree(s); }

#endif
