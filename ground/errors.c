// errors.c: fatal() and warn(), and the command-line number parsers that fail through fatal().
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

static void (*fatal_exit)(void);

void set_fatal_exit(void (*fn)(void)) { fatal_exit = fn; }

// "<kind>: <message>\n" on stderr, after what stdout holds so far.
static void report(const char *kind, const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "%s: ", kind);
    vfprintf(stderr, fmt, ap);  // NOLINT(clang-analyzer-valist.Uninitialized): the callers' va_start; a known analyser false positive
    fputc('\n', stderr);
}

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report("error", fmt, ap);
    va_end(ap);
    if (fatal_exit) fatal_exit();
    exit(1);
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report("warning", fmt, ap);
    va_end(ap);
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
