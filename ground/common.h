// common.h: the one home for error reporting, allocation, timing and the RNG.
// Every other file uses these instead of rolling its own. One header; each
// section's functions live in the ground/*.c file its heading names.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ---- errors (errors.c) ---------------------------------------------------
// fatal: print "error: ..." to stderr and exit(1). For start-up and
// unrecoverable errors; the message must name the file, key or line.
void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
// set_fatal_exit: a function fatal() calls before exit(1), e.g. MPI_Abort, so that one
// rank's error stops its peers instead of leaving them blocked in a collective.
void set_fatal_exit(void (*fn)(void));
// warn: print "warning: ..." to stderr and continue.
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- allocation (alloc.c) ------------------------------------------------
// 64-byte aligned, zeroed; fatal() with the byte count and purpose on failure.
void *xcalloc(size_t count, size_t size, const char *what);
void *xmalloc(size_t size, const char *what);
char *xstrdup(const char *s);
void xfree(void *p);
// Scratch of at least `count` floats in *buf, grown (contents dropped) only when *capacity is short.
float *xreserve_floats(float **buf, size_t *capacity, size_t count, const char *what);

// ---- time and memory (timing.c) ------------------------------------------
double now_seconds(void);          // monotonic clock
size_t peak_rss_bytes(void);       // VmHWM of this process
size_t current_rss_bytes(void);    // VmRSS of this process

// ---- command-line numbers (errors.c) -------------------------------------
// The whole string must be a number in [lo, hi]; otherwise fatal() naming the option
// ("--k: '512abc' is not an integer"), never atoi's silent 0 or prefix.
long long arg_int(const char *opt, const char *v, long long lo, long long hi);
double arg_real(const char *opt, const char *v, double lo, double hi);

// ---- files (files.c) -----------------------------------------------------
// buf -> path, atomically: `<path>.tmp.<pid>`, fsync, rename, fsync the folder.
// On failure the temporary is removed, path is untouched, and err names the file,
// the errno and (disk full) what to do; `kind` ("checkpoint") goes into the message.
int file_write_atomic(const char *path, const void *buf, size_t n, const char *kind, char *err, size_t errlen);
int file_error(char *err, size_t errlen, const char *what, const char *path, int e);  // -1, err filled
void fsync_folder_of(const char *path);

// ---- random numbers (rng.c) ----------------------------------------------
// xoshiro256++ seeded through splitmix64. The state is four words, so it can
// be saved in a checkpoint and restored bit-exactly. Results are identical on
// every machine: no libm call takes part in drawing integers or uniforms.
typedef struct { uint64_t s[4]; } Rng;

uint64_t splitmix64(uint64_t *state);
// Seed a generator for (seed, stream): distinct streams give independent
// sequences, so each consumer (init, masking, loader sample i) owns one.
void rng_seed(Rng *r, uint64_t seed, uint64_t stream);
// The stream of an image (its index in the global batch) at update step: masks, drop path,
// erasing and mixing draw from it, so R ranks holding slices draw what one process would.
void rng_seed_image(Rng *r, uint64_t seed, int64_t step, int64_t image);
uint64_t rng_u64(Rng *r);
uint32_t rng_below(Rng *r, uint32_t n);        // uniform in [0, n), unbiased
double rng_uniform(Rng *r);                     // uniform in [0, 1), 53 bits
double rng_uniform_range(Rng *r, double lo, double hi);
double rng_normal(Rng *r);                      // N(0,1), Box-Muller without a cached spare
// Truncated normal N(0, std) cut at [lo, hi] by rejection, as timm's
// trunc_normal_(std=0.02, a=-2, b=2) draws it (cut in absolute units).
double rng_trunc_normal(Rng *r, double std, double lo, double hi);
void rng_shuffle_u32(Rng *r, uint32_t *a, size_t n);  // Fisher-Yates

// ---- small helpers --------------------------------------------------------
static inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

// ---- arenas (alloc.c) --------------------------------------------------------
// One allocation per kind of state. Layout runs twice: first with no memory
// (arena_floats only counts and returns NULL), then after arena_commit the same
// calls hand out 64-byte aligned slices of one zeroed block.
typedef struct {
    char *base;
    size_t used, capacity;
    const char *what;
} Arena;

float *arena_floats(Arena *a, size_t count);
void *arena_bytes(Arena *a, size_t bytes);
void arena_commit(Arena *a, const char *what);  // allocate what the counting pass asked for
void arena_free(Arena *a);
