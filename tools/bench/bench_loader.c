// bench_loader: images/s of the training pipeline (decode, RandomResizedCrop,
// flip, normalise) over shards, and how it shares the cores with an OpenMP
// compute loop standing in for the trainer's step.
// usage: bench_loader [--rank R --world W] SHARDS THREADS [images=2000] [size=224] [interp=bicubic] [channels=3]
//        bench_loader --shared SHARDS THREADS NICE STEP_MS [steps=40] [batch=32]
// --rank/--world: this process is rank R of W (batch 32 per rank; the other ranks
// are not run). It also prints the bytes the process read in one epoch.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
static int omp_threads(void) { return omp_get_max_threads(); }
#else
static int omp_threads(void) { return 1; }
#endif

#include "common.h"
#include "loader.h"

static Loader *open_train(const char *shards, int threads, int batch, int size, const char *interp, int nice,
                          int channels, int rank, int world) {
    LoaderConfig c;
    loader_config_defaults(&c);
    c.shards = shards;
    c.num_threads = threads;
    c.batch_size = batch;
    c.image_size = size;
    c.interp = strcmp(interp, "bilinear") ? INTERP_BICUBIC : INTERP_BILINEAR;
    c.nice = nice;
    c.channels = channels;
    c.queue_batches = 2;
    c.rank = rank, c.world_size = world;
    return loader_open(&c);
}

// A fixed amount of OpenMP arithmetic, tuned to take ~step_ms alone.
static double compute_work(long iters) {
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (long i = 0; i < iters; i++) {
        double x = (double)i;
        for (int k = 0; k < 64; k++) x = x * 0.999999 + 1e-3;
        total += x;
    }
    return total;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Steps alternate: a "busy" step right after taking a batch (the decoders
// refill the queue during it), a settling step, and an "idle" step (queue
// full, decoders blocked). Other processes on the machine then weigh on both
// kinds alike, and the medians compare them.
static int shared_mode(int argc, char **argv) {
    const char *shards = argv[2];
    int threads = atoi(argv[3]), nice = atoi(argv[4]);
    double step_ms = atof(argv[5]);
    int steps = argc > 6 ? atoi(argv[6]) : 20, batch = argc > 7 ? atoi(argv[7]) : 32;
    long iters = 1000000;
    compute_work(iters);  // starts the OpenMP pool
    double t = now_seconds();
    compute_work(iters);
    iters = (long)(step_ms * 1e-3 / ((now_seconds() - t) / iters));

    Loader *L = open_train(shards, threads, batch, 224, "bicubic", nice, 3, 0, 1);
    Batch b;
    loader_next(L, &b);  // start-up not counted
    compute_work(iters);
    double *busy = xcalloc(steps, sizeof(double), "times"), *idle = xcalloc(steps, sizeof(double), "times");
    double wait = 0, busy_total = 0;
    for (int s = 0; s < steps; s++) {
        double a = now_seconds();
        loader_next(L, &b);
        double m = now_seconds();
        compute_work(iters);
        double e = now_seconds();
        wait += m - a;
        busy[s] = e - m;
        busy_total += e - a;
        compute_work(iters);
        double i0 = now_seconds();
        compute_work(iters);
        idle[s] = now_seconds() - i0;
    }
    qsort(busy, steps, sizeof(double), cmp_double);
    qsort(idle, steps, sizeof(double), cmp_double);
    double mb = busy[steps / 2], mi = idle[steps / 2];
    printf("shared: %d decode threads at nice %d, %d OpenMP threads: step median %.1f ms with decoding vs %.1f ms "
           "without (x%.2f); waiting for data %.2f%% of step time\n",
           threads, nice, omp_threads(), mb * 1e3, mi * 1e3, mb / mi, 100 * wait / busy_total);
    printf("bench: loader_shared_cores_nice%d ours=%.1f peer=%.1f ratio=%.3f unit=steps/s\n", nice, 1 / mb, 1 / mi,
           mi / mb);
    free(busy);
    free(idle);
    loader_close(L);
    return 0;
}

// The process's rchar (bytes through read calls, page cache hits included) from /proc/self/io.
static long long bytes_read(void) {
    FILE *f = fopen("/proc/self/io", "r");
    long long v = -1;
    char key[64];
    long long x;
    while (f && fscanf(f, "%63[^:]: %lld\n", key, &x) == 2)
        if (!strcmp(key, "rchar")) v = x;
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--shared")) {
        if (argc < 6) fatal("usage: bench_loader --shared SHARDS THREADS NICE STEP_MS [steps] [batch]");
        return shared_mode(argc, argv);
    }
    int rank = 0, world = 1;
    while (argc > 2 && (!strcmp(argv[1], "--rank") || !strcmp(argv[1], "--world"))) {
        *(!strcmp(argv[1], "--rank") ? &rank : &world) = atoi(argv[2]);
        argc -= 2, argv += 2;
    }
    if (argc < 3) fatal("usage: bench_loader [--rank R --world W] SHARDS THREADS [images] [size] [interp] [channels]");
    int threads = atoi(argv[2]), images = argc > 3 ? atoi(argv[3]) : 2000, size = argc > 4 ? atoi(argv[4]) : 224;
    const char *interp = argc > 5 ? argv[5] : "bicubic";
    int channels = argc > 6 ? atoi(argv[6]) : 3, batch = 32;
    Loader *L = open_train(argv[1], threads, batch, size, interp, 0, channels, rank, world);
    Batch b;
    loader_next(L, &b);  // warm-up: thread start, first batch
    int n = 0;
    // Bytes of one epoch: between the first batches of epochs 1 and 2, where the reader is as
    // far ahead (shuffle buffer, queue) at both ends.
    long long io[3] = {-1, -1, -1};
    double t = now_seconds();
    while (n < images && loader_next(L, &b)) {
        n += b.n;
        if (b.step == 0 && b.epoch >= 1 && b.epoch <= 2) io[b.epoch] = bytes_read();
    }
    double dt = now_seconds() - t;
    int64_t skipped = 0;
    for (int r = 0; r < SKIP_NUM_REASONS; r++) skipped += loader_skipped(L, r);
    printf("ours: %d images in %.2f s with %d decode threads: %.1f images/s (%.1f per thread), %lld skipped\n", n, dt,
           threads, n / dt, n / dt / threads, (long long)skipped);
    if (io[2] >= 0)
        printf("read: rank %d of %d, batch %d per rank: %.1f MB in epoch 1 (%lld steps), %.1f KB per image of this rank\n",
               rank, world, batch, (io[2] - io[1]) / 1e6, (long long)loader_steps_per_epoch(L),
               (io[2] - io[1]) / 1e3 / (loader_steps_per_epoch(L) * batch));
    else
        printf("read: fewer than two epochs taken, no per-epoch figure (give more images)\n");
    loader_close(L);
    return 0;
}
