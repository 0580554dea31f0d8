// distributed.c: the MPI calls behind distributed.h (Open MPI), or a world of one.
#include "distributed.h"

#include <pthread.h>
#include <string.h>

#include "common.h"

#ifdef HAVE_MPI
#include <mpi.h>

static int initialised = 0;

static pthread_t main_thread;

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
}

void dist_finalize(void) {
    if (initialised) MPI_Finalize();
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

// MPI counts are ints: reduce large buffers in pieces.
#define DIST_CHUNK (1 << 28)

void dist_allreduce_sum_floats(float *x, size_t n) {
    if (!initialised || dist_world() == 1) return;
    for (size_t at = 0; at < n; at += DIST_CHUNK) {
        int count = (int)(n - at < DIST_CHUNK ? n - at : DIST_CHUNK);
        MPI_Allreduce(MPI_IN_PLACE, x + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

void dist_allreduce_sum_doubles(double *x, size_t n) {
    if (initialised && dist_world() > 1) MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void dist_allreduce_max_int(int *x) {
    if (initialised && dist_world() > 1) MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
}

void dist_broadcast_bytes(void *buf, size_t n) {
    if (initialised && dist_world() > 1) MPI_Bcast(buf, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
}

void dist_gather_bytes(const void *mine, size_t n, void *all) {
    if (!initialised || dist_world() == 1) {
        memcpy(all, mine, n);
        return;
    }
    MPI_Gather(mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
}

void dist_scatter_bytes(const void *all, size_t n, void *mine) {
    if (!initialised || dist_world() == 1) {
        memcpy(mine, all, n);
        return;
    }
    MPI_Scatter(all, (int)n, MPI_BYTE, mine, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
}

void dist_barrier(void) {
    if (initialised && dist_world() > 1) MPI_Barrier(MPI_COMM_WORLD);
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
void dist_allreduce_sum_floats(float *x, size_t n) { (void)x, (void)n; }
void dist_allreduce_sum_doubles(double *x, size_t n) { (void)x, (void)n; }
void dist_allreduce_max_int(int *x) { (void)x; }
void dist_broadcast_bytes(void *buf, size_t n) { (void)buf, (void)n; }
void dist_gather_bytes(const void *mine, size_t n, void *all) { memcpy(all, mine, n); }
void dist_scatter_bytes(const void *all, size_t n, void *mine) { memcpy(mine, all, n); }
void dist_barrier(void) {}

#endif
