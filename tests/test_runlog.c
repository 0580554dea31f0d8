// test_runlog.c: the run folder (mkdir -p, config.yaml, errors), metrics.jsonl
// appends across reopenings, JSON escaping and nulls, the progress line.
// tests/test_runlog.py parses metrics.jsonl with Python's json module.
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "runlog.h"

static char tmpdir[] = "/tmp/test_runlog_XXXXXX";

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

// runlog_open in a child; its exit status and stderr.
static int open_in_child(const char *output_dir, char *out, size_t n) {
    int fd[2];
    if (pipe(fd)) fatal("pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        check_death_child();
        dup2(fd[1], 2);
        close(fd[0]);
        runlog_open(output_dir, "run", "lr: 1\n");
        _exit(0);
    }
    close(fd[1]);
    // Read to EOF: the message comes in several writes, and closing the pipe
    // early would kill the child with SIGPIPE.
    size_t len = 0;
    ssize_t got;
    while ((got = read(fd[0], out + len, n - 1 - len)) > 0) len += (size_t)got;
    out[len] = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_run_folder(void) {
    char out_dir[256], path[320];
    snprintf(out_dir, sizeof out_dir, "%s/a/b/", tmpdir);
    RunLog *rl = runlog_open(out_dir, "run1", "lr: 0.001\n");
    snprintf(path, sizeof path, "%s/a/b/run1", tmpdir);
    CHECK("runlog_dir", strcmp(runlog_dir(rl), path) == 0, "'%s' vs '%s'", runlog_dir(rl), path);
    snprintf(path, sizeof path, "%s/a/b/run1/config.yaml", tmpdir);
    char *text = read_all(path);
    CHECK("runlog_config_yaml", text && strcmp(text, "lr: 0.001\n") == 0, "%s", text ? text : "missing");

    JsonLine *m = runlog_metrics(rl);
    json_int(m, "step", 1);
    json_num(m, "loss", 2.5);
    runlog_metrics_write(rl);
    m = runlog_metrics(rl);
    json_int(m, "step", 2);
    json_num(m, "loss", NAN);
    json_num(m, "grad_norm", -INFINITY);
    json_str(m, "note", "a \"quoted\"\tline\n");
    json_bool(m, "skipped", true);
    runlog_metrics_write(rl);
    snprintf(path, sizeof path, "%s/a/b/run1/metrics.jsonl", tmpdir);
    text = read_all(path);  // flushed on every line: readable before close
    CHECK("runlog_metrics_flushed",
          text && strcmp(text, "{\"step\": 1, \"loss\": 2.5}\n"
                               "{\"step\": 2, \"loss\": null, \"grad_norm\": null, \"note\": \"a \\\"quoted\\\"\\tline\\n\", "
                               "\"skipped\": true}\n") == 0,
          "%s", text ? text : "missing");
    runlog_close(rl);

    rl = runlog_open(out_dir, "run1", "lr: 0.002\n");  // a resumed run appends
    m = runlog_metrics(rl);
    json_int(m, "step", 3);
    runlog_metrics_write(rl);
    runlog_close(rl);
    text = read_all(path);
    int lines = 0;
    for (char *p = text; p && (p = strchr(p, '\n')); p++) lines++;
    CHECK("runlog_metrics_append", lines == 3 && strstr(text, "{\"step\": 3}\n"), "%d lines: %s", lines, text);
    snprintf(path, sizeof path, "%s/a/b/run1/config.yaml", tmpdir);
    text = read_all(path);
    CHECK("runlog_config_replaced", text && strcmp(text, "lr: 0.002\n") == 0, "%s", text ? text : "missing");
}

static void test_errors(void) {
    char out[2048], file[256], bad[300];
    snprintf(file, sizeof file, "%s/plain_file", tmpdir);
    FILE *f = fopen(file, "w");
    fclose(f);
    snprintf(bad, sizeof bad, "%s/sub", file);
    int st = open_in_child(bad, out, sizeof out);
    CHECK("runlog_error_not_a_folder", st == 1 && strstr(out, "error: ") && strstr(out, file) && strstr(out, "not a folder"),
          "status %d: %s", st, out);
    st = open_in_child("/proc/ccvit_not_writable", out, sizeof out);
    CHECK("runlog_error_unwritable", st == 1 && strstr(out, "/proc/ccvit_not_writable") && strstr(out, "output_dir"),
          "status %d: %s", st, out);
}

static void test_progress(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/progress.txt", tmpdir);
    FILE *f = fopen(path, "w");
    Progress p;
    progress_init(&p, f, 0, 1000, 0);
    NamedValue v[] = {{"loss", 5.125}, {"tok", 4.1}, {"lr", 0.0004}};
    progress_update(&p, 0, 0.0, 0.0, v, 3);
    p.t_start -= 10;  // pretend 10 s per 100 steps so far
    progress_update(&p, 100, 0.25, 43.21, v, 3);
    progress_init(&p, f, 0, 0, 60);  // unknown total, one-minute limit
    progress_update(&p, 7, 1.5, 10, v, 1);
    progress_end(&p);
    fclose(f);
    char *text = read_all(path);
    CHECK("progress_plain_lines", text && strstr(text, "step 0/1000 | ep 0.00 | loss 5.125 tok 4.1 lr 0.0004 | 0.0 img/s | ETA ?\n") &&
                                      strstr(text, "step 100/1000 | ep 0.25 |") && strstr(text, "43.2 img/s | ETA 1m30s\n") &&
                                      strstr(text, "step 7 | ep 1.50 | loss 5.125 | 10.0 img/s | ETA ") &&
                                      (strstr(text, "ETA 1m00s\n") || strstr(text, "ETA 59s\n")) &&
                                      !strchr(text, '\r'),
          "%s", text ? text : "missing");
    char name[32];
    runlog_timestamp_name(name, sizeof name);
    CHECK("runlog_timestamp_name", strlen(name) == 15 && name[8] == '-', "'%s'", name);
}

int main(int argc, char **argv) {
    // tests/test_runlog.py: `test_runlog --write DIR` writes a run it then parses.
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        RunLog *rl = runlog_open(argv[2], "py", "lr: 1\n");
        const double nums[] = {0.1, 1.0 / 3, 1e-300, 5e-324, -0.0, 1.7976931348623157e308, 123456789.0, NAN, INFINITY};
        for (size_t i = 0; i < ARRAY_LEN(nums); i++) {
            JsonLine *m = runlog_metrics(rl);
            json_int(m, "i", (long long)i);
            json_int(m, "big", -9007199254740993LL);
            json_num(m, "x", nums[i]);
            json_str(m, "s", "quote\" back\\ nl\n tab\t ctl\x01 del\x7f \xc3\xa9t\xc3\xa9 \xe2\x82\xac");
            json_bool(m, "b", i % 2);
            runlog_metrics_write(rl);
        }
        runlog_close(rl);
        return 0;
    }
    if (!mkdtemp(tmpdir)) fatal("mkdtemp %s", tmpdir);
    test_run_folder();
    test_errors();
    test_progress();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) warn("could not remove %s", tmpdir);
    return check_exit();
}
