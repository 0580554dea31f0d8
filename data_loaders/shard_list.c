// shard_list.c: brace expansion. Recursive: expand the first top-level brace
// group of a pattern, then expand each result again.
#include "shard_list.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

// The expansion so far, and the first error (every fatal() is made by shard_list_expand
// after it has freed the list, so nothing is left behind for a caller that catches it).
typedef struct { char **v; int n, cap; size_t bytes; char err[512]; } StrList;

static int push(StrList *l, char *s) {
    // products of ranges ({0000..9999}{0000..9999}) are bounded as a whole, not per range
    if (l->n >= 1000000) {
        free(s);
        return snprintf(l->err, sizeof l->err, "shard pattern expands to more than a million names"), -1;
    }
    l->bytes += strlen(s) + 1;
    if (l->bytes > (64u << 20)) {  // a million names of a long pattern: gigabytes
        free(s);
        return snprintf(l->err, sizeof l->err, "shard pattern expands to more than 64 MiB of names"), -1;
    }
    if (l->n == l->cap) {
        char **v = realloc(l->v, (l->cap ? 2 * l->cap : 16) * sizeof *l->v);
        if (!v) {
            free(s);
            return snprintf(l->err, sizeof l->err, "out of memory expanding shard list"), -1;
        }
        l->v = v;
        l->cap = l->cap ? 2 * l->cap : 16;
    }
    l->v[l->n++] = s;
    return 0;
}

static char *concat3(const char *a, size_t na, const char *b, size_t nb, const char *c) {
    size_t nc = strlen(c);
    char *s = xmalloc(na + nb + nc + 1, "shard name");
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    memcpy(s + na + nb, c, nc + 1);
    return s;
}

// "{lo..hi}" body -> 1 with the bounds and width if it is a numeric range.
static int parse_range(const char *body, size_t len, long *lo, long *hi, int *width) {
    const char *dots = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (body[i] == '.' && body[i + 1] == '.') { dots = body + i; break; }
    if (!dots) return 0;
    for (const char *p = body; p < dots; p++) if (!isdigit((unsigned char)*p)) return 0;
    for (const char *p = dots + 2; p < body + len; p++) if (!isdigit((unsigned char)*p)) return 0;
    if (dots == body || dots + 2 == body + len) return 0;
    size_t lo_len = (size_t)(dots - body), hi_len = len - lo_len - 2;
    if (lo_len > 15 || hi_len > 15) return -1;  // far beyond any shard count, and safe from overflow
    *lo = strtol(body, NULL, 10);
    *hi = strtol(dots + 2, NULL, 10);
    // A leading zero on either bound pads every number to the wider bound (as bash does).
    int padded = (body[0] == '0' && lo_len > 1) || (dots[2] == '0' && hi_len > 1);
    *width = padded ? (int)(lo_len > hi_len ? lo_len : hi_len) : 0;
    return 1;
}

// 0, or -1 with out->err set.
static int expand_one(const char *pat, const char *whole, StrList *out) {
    const char *open = strchr(pat, '{');
    if (!open) return push(out, xstrdup(pat));
    int depth = 0;
    const char *close = NULL;
    for (const char *p = open; *p; p++) {
        if (*p == '{') depth++;
        else if (*p == '}' && --depth == 0) { close = p; break; }
    }
    if (!close) return snprintf(out->err, sizeof out->err, "shard pattern '%s': unbalanced '{'", whole), -1;
    const char *body = open + 1, *rest = close + 1;
    size_t blen = close - body, plen = open - pat;
    long lo, hi;
    int width;
    int range = parse_range(body, blen, &lo, &hi, &width);
    if (range < 0)
        return snprintf(out->err, sizeof out->err, "shard pattern '%s': range {%.*s} has a bound over 15 digits", whole,
                        (int)blen, body), -1;
    if (range) {
        if (hi < lo || hi - lo >= 1000000)
            return snprintf(out->err, sizeof out->err, "shard pattern '%s': bad range {%.*s}", whole, (int)blen, body), -1;
        for (long i = lo; i <= hi; i++) {
            char num[32];
            int nn = snprintf(num, sizeof num, "%0*ld", width, i);
            char *s = concat3(pat, plen, num, nn, rest);
            int rc = expand_one(s, whole, out);
            free(s);
            if (rc) return rc;
        }
        return 0;
    }
    // Alternatives split at top-level commas inside the braces.
    const char *start = body;
    depth = 0;
    for (const char *p = body; p <= close; p++) {
        if (*p == '{') depth++;
        else if (*p == '}' && p != close) depth--;
        if ((*p == ',' && depth == 0) || p == close) {
            char *s = concat3(pat, plen, start, p - start, rest);
            int rc = expand_one(s, whole, out);
            free(s);
            if (rc) return rc;
            start = p + 1;
        }
    }
    return 0;
}

char **shard_list_expand(const char *patterns, int *n) {
    StrList out = {0};
    const char *p = patterns ? patterns : "";
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == ',')) p++;
        if (!*p) break;
        // One pattern runs to the next whitespace or comma outside braces.
        const char *start = p;
        int depth = 0;
        while (*p && !((isspace((unsigned char)*p) || *p == ',') && depth == 0)) {
            if (*p == '{') depth++;
            else if (*p == '}') depth--;
            p++;
        }
        size_t len = p - start;
        char *one = xmalloc(len + 1, "shard pattern");
        memcpy(one, start, len);
        one[len] = 0;
        int rc = expand_one(one, one, &out);
        free(one);
        if (rc) {
            shard_list_free(out.v, out.n);
            fatal("%s", out.err);
        }
    }
    *n = out.n;
    return out.v;
}

void shard_list_free(char **list, int n) {
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}
