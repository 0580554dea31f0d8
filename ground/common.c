// common.c: errors, aligned allocation, clocks, RSS, and the seeded RNG.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void (*fatal_exit)(void);

void set_fatal_exit(void (*fn)(void)) { fatal_exit = fn; }

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (fatal_exit) fatal_exit();
    exit(1);
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fputs("warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

// Buffers of 2 MiB or more (arenas, scratch) sit on 2 MiB boundaries and ask for transparent huge
// pages: the GEMM tiles read activations in place, row by row, across hundreds of 4 KiB pages.
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

void *xmalloc(size_t size, const char *what) {
    if (size == 0) size = 64;
    size_t align = size >= HUGE_PAGE_BYTES ? HUGE_PAGE_BYTES : 64;
    void *p = NULL;
    if (posix_memalign(&p, align, align_up(size, align)) != 0 || !p)
        fatal("out of memory allocating %zu bytes for %s", size, what);
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE_BYTES) madvise(p, align_up(size, align), MADV_HUGEPAGE);  // a hint: no error if refused
#endif
    return p;
}

void *xcalloc(size_t count, size_t size, const char *what) {
    if (size && count > SIZE_MAX / size)
        fatal("allocation size overflow for %s (%zu x %zu)", what, count, size);
    void *p = xmalloc(count * size, what);
    memset(p, 0, count * size);
    return p;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n, "string");
    memcpy(p, s, n);
    return p;
}

void xfree(void *p) { free(p); }

float *xreserve_floats(float **buf, size_t *capacity, size_t count, const char *what) {
    if (count > *capacity) {
        xfree(*buf);
        *buf = xmalloc(count * sizeof(float), what);
        *capacity = count;
    }
    return *buf;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t read_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0) {
            kb = strtoull(line + klen, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

size_t peak_rss_bytes(void) { return read_status_kb("VmHWM:"); }
size_t current_rss_bytes(void) { return read_status_kb("VmRSS:"); }

// ---- RNG ------------------------------------------------------------------

uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed, uint64_t stream) {
    uint64_t sm = seed ^ (stream * 0xd1b54a32d192ed03ULL + 0x2545f4914f6cdd1dULL);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&sm);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[0] + s[3], 23) + s[0];
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t rng_below(Rng *r, uint32_t n) {
    // Lemire's multiply-shift with rejection: unbiased and branch-light.
    uint64_t m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (lo < threshold) {
            m = (uint64_t)(uint32_t)(rng_u64(r) >> 32) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

double rng_uniform(Rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

double rng_uniform_range(Rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

double rng_normal(Rng *r) {
    // Box-Muller; u1 in (0,1] so log() is finite. log/cos/sqrt are correctly
    // rounded enough in glibc that the same binary gives the same bits.
    double u1 = 1.0 - rng_uniform(r);
    double u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double rng_trunc_normal(Rng *r, double std, double lo, double hi) {
    for (;;) {
        double x = std * rng_normal(r);
        if (x >= lo && x <= hi) return x;
    }
}

void rng_shuffle_u32(Rng *r, uint32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(r, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

// ---- arenas -------------------------------------------------------------------

void *arena_bytes(Arena *a, size_t bytes) {
    size_t at = a->used;
    a->used += align_up(bytes, 64);
    if (!a->base) return NULL;  // counting pass
    if (a->used > a->capacity)
        fatal("arena '%s' overflow: layout asked for %zu bytes, %zu committed (layout must not change between passes)",
              a->what ? a->what : "?", a->used, a->capacity);
    return a->base + at;
}

float *arena_floats(Arena *a, size_t count) { return arena_bytes(a, count * sizeof(float)); }

void arena_commit(Arena *a, const char *what) {
    a->capacity = a->used;
    a->what = what;
    a->base = xcalloc(a->capacity ? a->capacity : 64, 1, what);
    a->used = 0;
}

void arena_free(Arena *a) {
    xfree(a->base);
    a->base = NULL;
    a->used = a->capacity = 0;
}

// ---- files ----------------------------------------------------------------------

void fsync_folder_of(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int file_error(char *err, size_t errlen, const char *what, const char *path, int e) {
    const char *hint = (e == ENOSPC || e == EDQUOT) ? " (disk full: free space or move output_dir)"
                       : e == EFBIG                 ? " (file size limit reached)"
                                                    : "";
    snprintf(err, errlen, "%s '%s': %s%s", what, path, strerror(e), hint);
    return -1;
}

int file_write_atomic(const char *path, const void *buf, size_t n, const char *kind, char *err, size_t errlen) {
    char tmp[PATH_MAX + 32], what[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(what, sizeof what, "cannot create %s file", kind);
        return file_error(err, errlen, what, tmp, errno);
    }
    const char *p = buf;
    size_t left = n;
    int e = 0;
    while (left && !e) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno != EINTR) e = errno;
        if (w > 0) p += w, left -= (size_t)w;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        snprintf(what, sizeof what, "cannot write %s (partial file removed, the previous %ss kept)", kind, kind);
        return file_error(err, errlen, what, path, e);
    }
    fsync_folder_of(path);
    return 0;
}

// ---- command-line numbers ---------------------------------------------------------

long long arg_int(const char *opt, const char *v, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) fatal("%s: '%s' is not an integer", opt, v);
    if (x < lo || x > hi) fatal("%s: %lld is outside [%lld, %lld]", opt, x, lo, hi);
    return x;
}

double arg_real(const char *opt, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) fatal("%s: '%s' is not a number", opt, v);
    if (x < lo || x > hi) fatal("%s: %g is outside [%g, %g]", opt, x, lo, hi);
    return x;
}
