// alloc.c: aligned, zeroed allocation that fails loudly, and the two-pass arenas.
#include "common.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
