// check.h: the tiny harness every C test uses. Each CHECK group prints one
// "PASS name" or "FAIL name: why" line; tests/run_tests.py counts them.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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

static inline int check_exit(void) {
    return check_failures ? 1 : 0;
}
