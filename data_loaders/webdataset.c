// webdataset.c: sample grouping over tar_reader, and the manifest format.
#include "webdataset.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "loader.h"

// Key and extension of an entry name: "a/b/x.seg.png" -> key "a/b/x", ext "seg.png".
static size_t key_length(const char *name, const char **ext) {
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strchr(base, '.');
    *ext = dot ? dot + 1 : "";
    return dot ? (size_t)(dot - name) : strlen(name);
}

static ImageFormat image_ext_format(const char *ext) {
    if (!strcasecmp(ext, "jpg") || !strcasecmp(ext, "jpeg")) return IMG_JPEG;
    if (!strcasecmp(ext, "png")) return IMG_PNG;
    return IMG_UNKNOWN;
}

int wds_open(WdsReader *r, const char *path) {
    memset(r, 0, sizeof *r);
    return tar_open(&r->tar, path);
}

void wds_close(WdsReader *r) {
    tar_close(&r->tar);
    memset(r, 0, sizeof *r);
}

void wds_sample_clear(WdsSample *s) {
    free(s->key);
    free(s->image);
    memset(s, 0, sizeof *s);
    s->skip = -1;
    s->label = -1;
}

static void mark(WdsSample *s, int why, const char *detail) {
    if (s->skip < 0) {
        s->skip = why;
        snprintf(s->detail, sizeof s->detail, "%s", detail);
    }
}

// Parse ".cls": an ASCII integer, optionally surrounded by whitespace.
static int parse_label(const char *buf, size_t n, int32_t *out) {
    char tmp[32];
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, buf, n);
    tmp[n] = 0;
    char *end;
    long v = strtol(tmp, &end, 10);
    while (*end && isspace((unsigned char)*end)) end++;
    if (*end || end == tmp || v < 0 || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

int wds_next(WdsReader *r, WdsSample *s) {
    wds_sample_clear(s);
    if (r->state == 2) return 0;
    const char *why = "";
    for (;;) {
        if (r->state == 0) {
            int st = tar_next(&r->tar, &why);
            if (st <= 0) {
                r->state = 2;
                if (st < 0) {
                    if (!s->key) s->key = xstrdup(st == -2 ? "(whole shard)" : "(after the last complete entry)");
                    mark(s, st == -2 ? SKIP_UNREADABLE_SHARD : SKIP_TRUNCATED_TAR, why);
                    return 1;
                }
                break;
            }
            r->state = 1;
        }
        const char *ext;
        size_t klen = key_length(r->tar.name, &ext);
        if (s->key && (strlen(s->key) != klen || memcmp(s->key, r->tar.name, klen))) return 1;  // next key: keep pending
        if (!s->key) {
            s->key = xmalloc(klen + 1, "sample key");
            memcpy(s->key, r->tar.name, klen);
            s->key[klen] = 0;
        }
        r->state = 0;
        ImageFormat fmt = image_ext_format(ext);
        int is_cls = !strcasecmp(ext, "cls");
        if (r->count_only) {  // from the names alone: which parts the sample has
            s->has_label |= is_cls;
            s->has_image |= fmt != IMG_UNKNOWN;
            continue;
        }
        if (fmt == IMG_UNKNOWN && !is_cls) continue;  // other extensions are ignored
        if (r->tar.size > (1 << 30)) { mark(s, SKIP_CORRUPT_IMAGE, "entry larger than 1 GiB"); continue; }
        if (!is_cls && r->lazy_images) {  // the caller reads the bytes later, if at all
            free(s->image);
            s->image = NULL;
            s->image_len = r->tar.size;
            s->image_ext = fmt;
            s->has_image = 1;
            s->image_offset = r->tar.data_offset;
            continue;
        }
        uint8_t *buf = xmalloc(r->tar.size + 1, "tar entry");
        if (tar_read_data(&r->tar, buf) != 0) {
            free(buf);
            mark(s, SKIP_TRUNCATED_TAR, tar_cut_short(&r->tar, "archive ends inside a member"));
            r->state = 2;
            return 1;
        }
        if (is_cls) {
            if (parse_label((char *)buf, r->tar.size, &s->label) == 0) s->has_label = 1;
            else mark(s, SKIP_MISSING_PART, "label is not an integer");
            free(buf);
        } else {
            free(s->image);  // several images: the last one wins
            s->image = buf;
            s->image_len = r->tar.size;
            s->image_ext = fmt;
            s->has_image = 1;
            s->image_offset = r->tar.data_offset;
        }
    }
    if (!s->key) return 0;
    return 1;
}

int64_t wds_count_samples(const char *path) { return wds_count_labelled(path, NULL); }

int64_t wds_count_labelled(const char *path, int64_t *labelled) {
    WdsReader r;
    if (wds_open(&r, path) != 0) return -1;
    r.count_only = 1;
    WdsSample s = {0};
    int64_t n = 0;
    if (labelled) *labelled = 0;
    while (wds_next(&r, &s) == 1) {
        n++;
        if (labelled && s.has_label) ++*labelled;
    }
    wds_sample_clear(&s);
    wds_close(&r);
    return n;
}

// ---- manifest ------------------------------------------------------------------

int manifest_read(const char *path, Manifest *m) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int lineno = 0, cls = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        long long a;
        char name[4000];
        if (lineno == 1) {
            if (strncmp(line, "ccvit-manifest 1", 16)) fatal("%s:1: not a ccvit manifest (expected 'ccvit-manifest 1')", path);
        } else if (sscanf(line, "samples %lld", &a) == 1) {
            if (a < 0) fatal("%s:%d: negative sample count %lld", path, lineno, a);
            m->samples = a;
        } else if (sscanf(line, "classes %lld", &a) == 1) {
            if (a < 0 || a > (1 << 24)) fatal("%s:%d: class count %lld outside [0, 2^24]", path, lineno, a);
            if (m->class_names) fatal("%s:%d: a second 'classes' line", path, lineno);
            m->num_classes = (int)a;
            m->class_names = xcalloc(a ? a : 1, sizeof(char *), "class names");
        } else if (!strncmp(line, "class ", 6)) {
            if (cls >= m->num_classes) fatal("%s:%d: more class lines than 'classes' announced", path, lineno);
            m->class_names[cls++] = xstrdup(line + 6);
        } else if (sscanf(line, "shard %3999s %lld", name, &a) == 2) {
            if (a < 0) fatal("%s:%d: negative sample count %lld for shard %s", path, lineno, a, name);
            m->shard_names = realloc(m->shard_names, (m->num_shards + 1) * sizeof(char *));
            m->shard_samples = realloc(m->shard_samples, (m->num_shards + 1) * sizeof(int64_t));
            if (!m->shard_names || !m->shard_samples) fatal("out of memory reading %s", path);
            m->shard_names[m->num_shards] = xstrdup(name);
            m->shard_samples[m->num_shards++] = a;
        } else if (line[0] && line[0] != '#') {
            fatal("%s:%d: unrecognised manifest line '%s'", path, lineno, line);
        }
    }
    fclose(f);
    if (lineno == 0) fatal("%s is empty: not a ccvit manifest (rebuild the shards)", path);
    if (cls != m->num_classes) fatal("%s: %d class lines for 'classes %d'", path, cls, m->num_classes);
    int64_t listed = 0;
    for (int i = 0; i < m->num_shards; i++) listed += m->shard_samples[i];
    if (m->num_shards && listed != m->samples)
        fatal("%s: its shards hold %lld samples, but it says 'samples %lld' (rebuild the shards)", path,
              (long long)listed, (long long)m->samples);
    return 0;
}

void manifest_write(const char *path, const Manifest *m) {
    char *text = NULL, err[1024];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) fatal("cannot build manifest %s: %s", path, strerror(errno));
    fprintf(f, "ccvit-manifest 1\nsamples %lld\nclasses %d\n", (long long)m->samples, m->num_classes);
    for (int i = 0; i < m->num_classes; i++) fprintf(f, "class %s\n", m->class_names[i]);
    for (int i = 0; i < m->num_shards; i++) fprintf(f, "shard %s %lld\n", m->shard_names[i], (long long)m->shard_samples[i]);
    fclose(f);
    // atomically: a manifest is what marks the shards complete (make shards, the loader)
    if (file_write_atomic(path, text, len, "manifest", err, sizeof err) != 0) fatal("%s", err);
    free(text);
}

void manifest_free(Manifest *m) {
    for (int i = 0; i < m->num_classes; i++) free(m->class_names[i]);
    for (int i = 0; i < m->num_shards; i++) free(m->shard_names[i]);
    free(m->class_names);
    free(m->shard_names);
    free(m->shard_samples);
    memset(m, 0, sizeof *m);
}

int64_t manifest_shard_samples(const Manifest *m, const char *shard_path) {
    const char *base = strrchr(shard_path, '/');
    base = base ? base + 1 : shard_path;
    for (int i = 0; i < m->num_shards; i++)
        if (!strcmp(m->shard_names[i], base)) return m->shard_samples[i];
    return -1;
}
