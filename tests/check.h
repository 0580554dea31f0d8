// check.h: the tiny harness every C test uses. Each CHECK group prints one
// "PASS name" or "FAIL name: why" line; tests/run_tests.py counts them.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"

static int check_failures = 0, check_passes = 0;

// Report one named check. cond false -> FAIL with the formatted reason.
#define CHECK(name, cond, ...)                                             \
    do {                                                                   \
        if (cond) {                                                        \
            printf("PASS %s\n", name);                                     \
            check_passes++;                                                \
        } else {                                                           \
            printf("FAIL %s: ", name);                                     \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
            check_failures++;                                              \
        }                                                                  \
        fflush(stdout);                                                    \
    } while (0)

// Largest |a-b| / (atol + rtol*|b|) over n elements; <= 1 means within tolerance.
static inline double check_close_ratio(const float *a, const float *b, size_t n, double atol, double rtol) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(d <= worst)) worst = d;  // NaN propagates as failure
    }
    return worst;
}

// check_death_child(): the first call in a child forked to watch fatal() end it.
// In an AddressSanitizer build (build-asan/), fatal() then ends the child with
// _exit(1), without LeakSanitizer's at-exit check: what a process holds when
// fatal() ends it is not a leak, and the report would change the exit status
// and stderr the test reads. In other builds it does nothing.
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_ASAN 1
#endif
#endif
#ifdef CHECK_ASAN
static void check_fatal_without_leak_check(void) {
    fflush(NULL);
    _exit(1);
}
static inline void check_death_child(void) { set_fatal_exit(check_fatal_without_leak_check); }
#else
static inline void check_death_child(void) {}
#endif

static inline int check_exit(void) {
    return check_failures ? 1 : 0;
}
