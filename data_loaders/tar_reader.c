// tar_reader.c: ustar headers with PAX ('x' per-entry, 'g' global) and GNU
// ('L' long name) extensions, as written by GNU tar and Python's tarfile.
#include "tar_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { BLOCK = 512 };
// Entry sizes beyond this are corrupt headers (base-256 and PAX sizes reach 2^63 - 1,
// and rounding that up to a block overflows int64).
#define TAR_MAX_ENTRY ((int64_t)1 << 50)

int tar_open(TarReader *t, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char magic[2] = {0, 0};
    int gzip = fread(magic, 1, 2, f) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    rewind(f);
    memset(t, 0, sizeof *t);
    t->path = path;
    if (!gzip) {
        t->f = f;
        return 0;
    }
    fclose(f);
    t->gz = gzopen(path, "rb");
    if (!t->gz) return -1;
    gzbuffer(t->gz, 1 << 17);
    return 0;
}

void tar_close(TarReader *t) {
    if (t->f) fclose(t->f);
    if (t->gz) gzclose(t->gz);
    free(t->name);
    free(t->global_path);
    memset(t, 0, sizeof *t);
}

static void set_name(TarReader *t, const char *s, size_t n) {
    if (n + 1 > t->name_cap) {
        t->name_cap = n + 64;
        t->name = realloc(t->name, t->name_cap);
        if (!t->name) fatal("out of memory for a tar entry name in %s", t->path);
    }
    memcpy(t->name, s, n);
    t->name[n] = 0;
}

// Octal field, or GNU base-256 when the top bit is set. -1 if malformed: a
// negative base-256 value (bit 6) or one that does not fit an int64.
static int64_t parse_number(const unsigned char *p, int len) {
    if (p[0] & 0x80) {
        if (p[0] & 0x40) return -1;
        int64_t v = p[0] & 0x3f;
        for (int i = 1; i < len; i++) {
            if (v > (INT64_MAX >> 8)) return -1;
            v = (v << 8) | p[i];
        }
        return v;
    }
    int64_t v = 0;
    int i = 0;
    while (i < len && (p[i] == ' ' || p[i] == 0)) i++;
    if (i == len) return 0;
    for (; i < len && p[i] >= '0' && p[i] <= '7'; i++) v = v * 8 + (p[i] - '0');
    return v;
}

static int checksum_ok(const unsigned char *h) {
    int64_t stored = parse_number(h + 148, 8);
    uint64_t sum = 0;
    for (int i = 0; i < BLOCK; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
    return (int64_t)sum == stored;
}

// ---- the archive's bytes, from the file or inflated from the gzip stream ----

static size_t read_bytes(TarReader *t, void *buf, size_t n) {
    if (!t->gz) return fread(buf, 1, n, t->f);
    size_t done = 0;
    while (done < n) {  // gzread takes an unsigned count
        unsigned chunk = n - done > (1u << 30) ? 1u << 30 : (unsigned)(n - done);
        int got = gzread(t->gz, (char *)buf + done, chunk);
        if (got <= 0) break;
        done += (size_t)got;
    }
    return done;
}

// The end of the archive's bytes, reached cleanly (a gzip stream that ends early is an error instead).
static int clean_eof(TarReader *t) {
    if (!t->gz) return feof(t->f);
    int err = Z_OK;
    gzerror(t->gz, &err);
    return gzeof(t->gz) && err == Z_OK;
}

static int64_t position(TarReader *t) { return t->gz ? (int64_t)gztell(t->gz) : (int64_t)ftello(t->f); }

// A short read's cause: a gzip stream that ends early says so (zlib: "unexpected end of file").
const char *tar_cut_short(TarReader *t, const char *plain) {
    int err = Z_OK;
    if (t->gz) gzerror(t->gz, &err);
    return t->gz && err != Z_OK ? "gzip stream truncated or corrupt" : plain;
}

static int skip_bytes(TarReader *t, int64_t n) {
    if (n <= 0) return 0;
    if (t->gz) return gzseek(t->gz, (z_off_t)n, SEEK_CUR) < 0 ? -1 : 0;  // inflates what it skips
    if (fseeko(t->f, n, SEEK_CUR) != 0) return -1;
    return 0;
}

// Whatever the caller did not read of the previous entry is skipped, and the
// file must actually hold it: seeking past EOF succeeds, so check the size.
static int finish_entry(TarReader *t) {
    int64_t n = t->data_left + t->pad_left;
    t->data_left = t->pad_left = 0;
    if (n == 0) return 0;
    char tmp[BLOCK];
    // Reading the final byte confirms the data is present without reading it all.
    if (n > 1 && skip_bytes(t, n - 1) != 0) return -1;
    return read_bytes(t, tmp, 1) == 1 ? 0 : -1;
}

// Read a whole extension payload (PAX records or a GNU long name).
static char *read_payload(TarReader *t, int64_t size) {
    if (size < 0 || size > (64 << 20)) return NULL;
    int64_t padded = (size + BLOCK - 1) / BLOCK * BLOCK;
    char *buf = malloc(padded + 1);
    if (!buf) return NULL;
    if (padded && read_bytes(t, buf, padded) != (size_t)padded) {
        free(buf);
        return NULL;
    }
    buf[size] = 0;
    return buf;
}

// PAX records: "<len> <key>=<value>\n". Only path and size matter here.
// Returns -1 if a record is malformed (its length does not cover its key, it
// does not end in a newline, or a size is not a non-negative number).
static int parse_pax(const char *buf, int64_t size, char **path, int64_t *psize) {
    const char *p = buf, *end = buf + size;
    while (p < end) {
        char *sp;
        long len = strtol(p, &sp, 10);
        if (len <= 0 || *sp != ' ' || len > end - p || sp + 1 >= p + len || p[len - 1] != '\n') return -1;
        const char *key = sp + 1, *rec_end = p + len - 1;  // points at '\n'
        const char *eq = memchr(key, '=', rec_end - key);
        if (eq) {
            size_t klen = eq - key, vlen = rec_end - (eq + 1);
            if (klen == 4 && !memcmp(key, "path", 4)) {
                free(*path);
                *path = malloc(vlen + 1);
                if (*path) { memcpy(*path, eq + 1, vlen); (*path)[vlen] = 0; }
            } else if (klen == 4 && !memcmp(key, "size", 4) && psize) {
                char *num_end;
                errno = 0;
                long long v = strtoll(eq + 1, &num_end, 10);
                if (errno || num_end != rec_end || num_end == eq + 1 || v < 0) return -1;
                *psize = v;
            }
        }
        p += len;
    }
    return 0;
}

int tar_next(TarReader *t, const char **why) {
    char *long_name = NULL;      // from PAX 'x' path or GNU 'L'
    int64_t pax_size = -1;
    *why = "";
    if (finish_entry(t) != 0) { *why = tar_cut_short(t, "data of the previous entry cut short"); return -1; }
    for (;;) {
        unsigned char h[BLOCK];
        int64_t at = position(t);
        size_t got = read_bytes(t, h, BLOCK);
        if (got == 0 && clean_eof(t)) { free(long_name); return 0; }  // EOF at a block boundary
        if (got != BLOCK) { free(long_name); *why = tar_cut_short(t, "archive ends inside a header"); return -1; }
        int zero = 1;
        for (int i = 0; i < BLOCK && zero; i++) zero = h[i] == 0;
        if (zero) { free(long_name); return 0; }  // end-of-archive marker
        if (!checksum_ok(h)) {
            free(long_name);
            if (at > 0) { *why = "header checksum mismatch"; return -1; }
            *why = t->gz ? "a gzip file that does not hold a tar archive" : "neither a tar archive nor gzip";
            return -2;
        }

        int64_t size = parse_number(h + 124, 12);
        if (size < 0) { free(long_name); *why = "malformed size field in a header"; return -1; }
        if (size > TAR_MAX_ENTRY) { free(long_name); *why = "entry size in a header is over 2^50 bytes"; return -1; }
        char type = h[156];
        int64_t padded = (size + BLOCK - 1) / BLOCK * BLOCK;
        if (type == 'x' || type == 'g' || type == 'L') {
            char *payload = read_payload(t, size);
            if (!payload) { free(long_name); *why = tar_cut_short(t, "archive ends inside an extended header"); return -1; }
            int bad = 0;
            if (type == 'x') bad = parse_pax(payload, size, &long_name, &pax_size) != 0;
            else if (type == 'g') bad = parse_pax(payload, size, &t->global_path, NULL) != 0;
            else {
                free(long_name);
                long_name = payload;
                payload = NULL;
            }
            free(payload);
            if (bad) { free(long_name); *why = "malformed PAX extended header"; return -1; }
            continue;
        }
        if (pax_size > TAR_MAX_ENTRY) { free(long_name); *why = "PAX size is over 2^50 bytes"; return -1; }
        if (pax_size >= 0) {
            size = pax_size;
            padded = (size + BLOCK - 1) / BLOCK * BLOCK;
        }
        if (type != '0' && type != 0 && type != '7') {  // not a regular file: skip its data
            free(long_name);
            long_name = NULL;
            pax_size = -1;
            t->data_left = 0;
            t->pad_left = (type == '5' || type == '1' || type == '2') ? 0 : padded;
            if (finish_entry(t) != 0) { *why = tar_cut_short(t, "archive ends inside a member"); return -1; }
            continue;
        }
        if (long_name) {
            set_name(t, long_name, strlen(long_name));
            free(long_name);
        } else {
            // ustar: prefix (155 bytes at 345) + "/" + name (100 bytes at 0)
            char full[256 + 2];
            size_t n = 0;
            if (!memcmp(h + 257, "ustar", 5) && h[345]) {
                size_t pl = strnlen((char *)h + 345, 155);
                memcpy(full, h + 345, pl);
                n = pl;
                full[n++] = '/';
            }
            size_t nl = strnlen((char *)h, 100);
            memcpy(full + n, h, nl);
            set_name(t, full, n + nl);
        }
        t->size = size;
        t->data_offset = position(t);
        t->data_left = size;
        t->pad_left = padded - size;
        return 1;
    }
}

int tar_read_data(TarReader *t, void *buf) {
    if (t->data_left != t->size) return -1;  // only whole reads
    if (t->size && read_bytes(t, buf, t->size) != (size_t)t->size) {
        t->data_left = 0;
        t->pad_left = 0;
        return -1;
    }
    t->data_left = 0;
    return 0;
}
