// runlog.c: run folder (mkdir -p, config.yaml), metrics.jsonl, progress line.
#include "runlog.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "config.h"

// ---- JSON ------------------------------------------------------------------------

static void json_put(JsonLine *j, const char *s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->len + n + 1) cap *= 2;
        char *b = xmalloc(cap, "JSON line");
        if (j->buf) memcpy(b, j->buf, j->len);
        xfree(j->buf);
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = 0;
}

static void json_puts(JsonLine *j, const char *s) { json_put(j, s, strlen(s)); }

static void json_quoted(JsonLine *j, const char *s) {
    json_put(j, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': json_puts(j, "\\\""); break;
        case '\\': json_puts(j, "\\\\"); break;
        case '\n': json_puts(j, "\\n"); break;
        case '\r': json_puts(j, "\\r"); break;
        case '\t': json_puts(j, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                json_puts(j, esc);
            } else {
                json_put(j, (const char *)p, 1);
            }
        }
    }
    json_put(j, "\"", 1);
}

static void json_key(JsonLine *j, const char *key) {
    if (j->nfields++) json_put(j, ", ", 2);
    json_quoted(j, key);
    json_put(j, ": ", 2);
}

void json_begin(JsonLine *j) {
    j->len = 0;
    j->nfields = 0;
    json_put(j, "{", 1);
}

void json_int(JsonLine *j, const char *key, long long v) {
    char num[32];
    snprintf(num, sizeof num, "%lld", v);
    json_key(j, key);
    json_puts(j, num);
}

void json_num(JsonLine *j, const char *key, double v) {
    char num[40];
    if (v == 0 && signbit(v))
        strcpy(num, "-0.0");  // "-0" would read back as the integer 0
    else if (isfinite(v))
        format_double(num, sizeof num, v);
    else
        strcpy(num, "null");
    json_key(j, key);
    json_puts(j, num);
}

void json_str(JsonLine *j, const char *key, const char *v) {
    json_key(j, key);
    if (v)
        json_quoted(j, v);
    else
        json_puts(j, "null");
}

void json_bool(JsonLine *j, const char *key, bool v) {
    json_key(j, key);
    json_puts(j, v ? "true" : "false");
}

const char *json_end(JsonLine *j) {
    json_put(j, "}", 1);
    return j->buf;
}

void json_free(JsonLine *j) {
    xfree(j->buf);
    *j = (JsonLine){0};
}

// ---- the run folder ---------------------------------------------------------------

struct RunLog {
    char *dir;
    FILE *metrics;
    char *metrics_path;
    JsonLine line;
};

static char *join_path(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = xmalloc(n, "path");
    snprintf(p, n, "%s%s%s", a, (a[0] && a[strlen(a) - 1] != '/') ? "/" : "", b);
    return p;
}

// mkdir -p: create every missing component of path.
static void make_dirs(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0) continue;
        char c = *s;
        *s = 0;
        struct stat st;
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            fatal("cannot create the run folder '%s': %s at '%s'; set output_dir to a writable folder", path,
                  strerror(errno), p);
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
            fatal("cannot create the run folder '%s': '%s' exists and is not a folder", path, p);
        *s = c;
        if (!c) break;
    }
    xfree(p);
}

// Replace path's content atomically (a temporary file, fsync, rename).
static void write_file_atomic(const char *path, const char *text) {
    char err[1024];
    if (file_write_atomic(path, text, strlen(text), "run file", err, sizeof err) != 0)
        fatal("%s; set output_dir to a writable folder", err);
}

RunLog *runlog_open(const char *output_dir, const char *run_name, const char *config_yaml) {
    if (!run_name || !run_name[0])
        fatal("runlog_open: run_name is empty; fill it first (runlog_timestamp_name) so config.yaml records it");
    if (strchr(run_name, '/') || strcmp(run_name, ".") == 0 || strcmp(run_name, "..") == 0)
        fatal("run_name '%s' must be a plain folder name (no '/', not '.' or '..')", run_name);
    RunLog *rl = xcalloc(1, sizeof *rl, "run log");
    rl->dir = join_path(output_dir[0] ? output_dir : ".", run_name);
    make_dirs(rl->dir);
    if (access(rl->dir, W_OK) != 0)
        fatal("the run folder '%s' is not writable: %s; set output_dir to a writable folder", rl->dir, strerror(errno));
    char *cfg_path = join_path(rl->dir, "config.yaml");
    write_file_atomic(cfg_path, config_yaml);
    xfree(cfg_path);
    rl->metrics_path = join_path(rl->dir, "metrics.jsonl");
    rl->metrics = fopen(rl->metrics_path, "a");
    if (!rl->metrics) fatal("cannot open '%s' for appending: %s", rl->metrics_path, strerror(errno));
    return rl;
}

const char *runlog_dir(const RunLog *rl) { return rl->dir; }

JsonLine *runlog_metrics(RunLog *rl) {
    json_begin(&rl->line);
    return &rl->line;
}

void runlog_metrics_write(RunLog *rl) {
    json_end(&rl->line);
    json_put(&rl->line, "\n", 1);
    if (fwrite(rl->line.buf, 1, rl->line.len, rl->metrics) != rl->line.len || fflush(rl->metrics) != 0)
        fatal("cannot append to '%s': %s", rl->metrics_path, strerror(errno));
}

long runlog_resume_at(RunLog *rl, long step) {
    FILE *f = fopen(rl->metrics_path, "r");
    if (!f) fatal("cannot read '%s': %s", rl->metrics_path, strerror(errno));
    char *kept = NULL;  // the lines to keep, as one text
    size_t kept_size = 0;
    FILE *out = open_memstream(&kept, &kept_size);
    if (!out) fatal("open_memstream: %s", strerror(errno));
    long dropped = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        long line_step;
        // every metrics line starts with its step; a line a crash cut short has no newline
        int later = sscanf(line, "{\"step\": %ld", &line_step) == 1 && line_step > step;  // NOLINT(cert-err34-c): the step of a line this trainer wrote
        if (later || line[n - 1] != '\n') dropped++;
        else fwrite(line, 1, (size_t)n, out);
    }
    int read_error = ferror(f) ? errno : 0;
    free(line);
    fclose(f);
    if (fclose(out) != 0) fatal("out of memory rewriting '%s'", rl->metrics_path);  // kept: a NUL-terminated text
    if (read_error) fatal("cannot read '%s': %s", rl->metrics_path, strerror(read_error));
    if (dropped) {
        if (fclose(rl->metrics) != 0) fatal("closing '%s': %s", rl->metrics_path, strerror(errno));
        write_file_atomic(rl->metrics_path, kept);
        rl->metrics = fopen(rl->metrics_path, "a");
        if (!rl->metrics) fatal("cannot open '%s' for appending: %s", rl->metrics_path, strerror(errno));
    }
    free(kept);
    return dropped;
}

void runlog_close(RunLog *rl) {
    if (!rl) return;
    if (fclose(rl->metrics) != 0) warn("closing '%s': %s", rl->metrics_path, strerror(errno));
    json_free(&rl->line);
    xfree(rl->metrics_path);
    xfree(rl->dir);
    xfree(rl);
}

void runlog_timestamp_name(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y%m%d-%H%M%S", &tm);
}

// ---- progress ----------------------------------------------------------------

void progress_init(Progress *p, FILE *out, long start_step, long total_steps, double time_limit_s) {
    p->out = out;
    p->tty = isatty(fileno(out));
    p->line_open = false;
    p->start_step = start_step;
    p->total_steps = total_steps;
    p->t_start = now_seconds();
    p->deadline = time_limit_s > 0 ? p->t_start + time_limit_s : 0;
}

// "2d03h", "1h23m", "4m05s", "12s"
static void format_duration(char *buf, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 86400)
        snprintf(buf, n, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
    else if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t % 3600 / 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

void progress_update(Progress *p, long step, double epoch, double images_per_s, const NamedValue *values, int n) {
    char line[1024];
    size_t len = 0;
#define ADD(...) len += (size_t)snprintf(line + len, len < sizeof line ? sizeof line - len : 0, __VA_ARGS__)
    if (p->total_steps > 0)
        ADD("step %ld/%ld", step, p->total_steps);
    else
        ADD("step %ld", step);
    ADD(" | ep %.2f |", epoch);
    for (int i = 0; i < n; i++) ADD(" %s %.4g", values[i].name, values[i].value);
    ADD(" | %.1f img/s", images_per_s);
    double now = now_seconds(), eta = -1;
    if (p->total_steps > 0 && step > p->start_step && now > p->t_start)
        eta = (double)(p->total_steps - step) * (now - p->t_start) / (double)(step - p->start_step);
    if (p->deadline > 0 && (eta < 0 || p->deadline - now < eta)) eta = p->deadline - now > 0 ? p->deadline - now : 0;
    char dur[32];
    if (eta >= 0) format_duration(dur, sizeof dur, eta);
    ADD(" | ETA %s", eta >= 0 ? dur : "?");
#undef ADD
    if (len >= sizeof line) len = sizeof line - 1;
    if (p->tty) {
        struct winsize ws;
        if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && len > (size_t)ws.ws_col - 1)
            len = ws.ws_col - 1;  // a wrapped line could not be redrawn in place
        fprintf(p->out, "\r%.*s\033[K", (int)len, line);
        p->line_open = true;
    } else {
        fprintf(p->out, "%.*s\n", (int)len, line);
    }
    fflush(p->out);
}

void progress_end(Progress *p) {
    if (p->line_open) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    p->line_open = false;
}
