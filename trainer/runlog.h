// runlog.h: a run's output folder, its metrics file and the progress line.
// Knows nothing of the model: the trainer passes named values.
//
//   RunLog *rl = runlog_open(cfg.output_dir, cfg.run_name, yaml);   // fatal() on error
//   JsonLine *m = runlog_metrics(rl);
//   json_int(m, "step", step); json_num(m, "loss", loss); json_str(m, "phase", "train");
//   runlog_metrics_write(rl);                 // one line appended to metrics.jsonl, flushed
//   runlog_close(rl);
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

// ---- one JSON object, built field by field -----------------------------------
// Numbers keep every bit (shortest round-trip text); NaN and inf become null.
// Keys and strings are escaped; they should be UTF-8.
typedef struct {
    char *buf;
    size_t len, cap;
    int nfields;
} JsonLine;

void json_begin(JsonLine *j);  // start "{" (reuses j's buffer)
void json_int(JsonLine *j, const char *key, long long v);
void json_num(JsonLine *j, const char *key, double v);
void json_str(JsonLine *j, const char *key, const char *v);
void json_bool(JsonLine *j, const char *key, bool v);
const char *json_end(JsonLine *j);  // close "}"; the text stays valid until the next json_begin
void json_free(JsonLine *j);

// ---- the run folder ---------------------------------------------------------------
typedef struct RunLog RunLog;

// Create <output_dir>/<run_name>/ like mkdir -p, write config_yaml to
// config.yaml there (replacing it atomically), and open metrics.jsonl for
// appending (a resumed run continues the same file). Any failure is fatal()
// with the path and what to do.
RunLog *runlog_open(const char *output_dir, const char *run_name, const char *config_yaml);
const char *runlog_dir(const RunLog *rl);  // "<output_dir>/<run_name>"
JsonLine *runlog_metrics(RunLog *rl);      // begin the next metrics line
void runlog_metrics_write(RunLog *rl);     // end it, append it, flush
// On resume from step `step`: drop the metrics lines of later steps (written after that
// checkpoint by the run that stopped), so the file holds each step once. Returns how many.
long runlog_resume_at(RunLog *rl, long step);
void runlog_close(RunLog *rl);

// A run name for an empty run_name: the UTC time, "20261126-210149".
void runlog_timestamp_name(char *buf, size_t n);

// ---- progress ----------------------------------------------------------------
// On a terminal one line redrawn in place (\r), cut to the terminal's width;
// otherwise (a log file) one plain line per update:
//   step 120/5000 | ep 0.31 | loss 5.123 tok 4.102 | lr 0.0004 | 43.2 img/s | ETA 1h23m
typedef struct {
    const char *name;
    double value;
} NamedValue;

typedef struct {
    FILE *out;
    bool tty, line_open;
    long start_step, total_steps;  // total 0: unknown
    double t_start, deadline;      // deadline 0: none (now_seconds() clock)
} Progress;

// time_limit_s > 0 also bounds the ETA.
void progress_init(Progress *p, FILE *out, long start_step, long total_steps, double time_limit_s);
// values: the named terms shown between the epoch and images/s, in order
// (losses, lr, grad norm...). ETA comes from the mean step rate since init.
void progress_update(Progress *p, long step, double epoch, double images_per_s, const NamedValue *values, int n);
// End the terminal line, before printing anything else and at the end of the run.
void progress_end(Progress *p);
