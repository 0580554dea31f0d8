// fuzz_common.h: what every libFuzzer harness shares.
//
// - fuzz_path(slot, data, size): the input as a file the library can open by
//   path (a memfd, named /proc/self/fd/N), so the harnesses call the same
//   path-based functions the trainer calls.
// - FUZZ_TRY(...): runs a call that may end in fatal() (the documented answer to
//   a malformed config, list or shard pattern). fatal() prints its message and
//   calls the set_fatal_exit hook, which jumps back here instead of exit(1), so
//   the fuzzer goes on; fuzz_fatals counts such endings. Any other way out (a
//   crash, an abort, a sanitizer report, exit) is a finding.
#pragma once
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

static jmp_buf fuzz_jump;
static volatile int fuzz_armed;
static volatile long fuzz_fatals;

__attribute__((unused)) static void fuzz_fatal_exit(void) {
    if (!fuzz_armed) return;  // not inside FUZZ_TRY: a real exit, which libFuzzer reports
    fuzz_armed = 0;
    longjmp(fuzz_jump, 1);
}

// Statements that may end in fatal(); `failed` (an int lvalue) is set to 1 if they did.
#define FUZZ_TRY(failed, ...)                        \
    do {                                             \
        set_fatal_exit(fuzz_fatal_exit);             \
        if (setjmp(fuzz_jump) == 0) {                \
            fuzz_armed = 1;                          \
            __VA_ARGS__;                             \
            fuzz_armed = 0;                          \
            (failed) = 0;                            \
        } else {                                     \
            fuzz_fatals++;                           \
            (failed) = 1;                            \
        }                                            \
    } while (0)

// The bytes as a file: slot 0..3 each keep one memfd for the process's life.
__attribute__((unused)) static const char *fuzz_path(int slot, const uint8_t *data, size_t size) {
    static int fd[4] = {-1, -1, -1, -1};
    static char path[4][40];
    if (fd[slot] < 0) {
        fd[slot] = memfd_create("ccvit-fuzz", 0);
        if (fd[slot] < 0) { perror("memfd_create"); abort(); }
        snprintf(path[slot], sizeof path[slot], "/proc/self/fd/%d", fd[slot]);
    }
    if (ftruncate(fd[slot], 0) != 0) { perror("ftruncate"); abort(); }
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd[slot], data + done, size - done, (off_t)done);
        if (w <= 0) { perror("pwrite"); abort(); }
        done += (size_t)w;
    }
    return path[slot];
}

// A NUL-terminated copy (malloc'd) of data[0, size).
__attribute__((unused)) static char *fuzz_strndup(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

// Splits data at the first occurrence of sep: *rest/*rest_size get what follows it
// (NULL/0 if absent); returns the length of the first part.
__attribute__((unused)) static size_t fuzz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **rest, size_t *rest_size) {
    size_t n = strlen(sep);
    const uint8_t *hit = n <= size ? memmem(data, size, sep, n) : NULL;
    if (!hit) { *rest = NULL; *rest_size = 0; return size; }
    *rest = hit + n;
    *rest_size = size - (size_t)(hit - data) - n;
    return (size_t)(hit - data);
}

// The bytes as a real file (/dev/shm/ccvit-fuzz-<pid>.<ext>, removed at exit), for
// libraries that resolve a path's real name (libhdf5 cannot open a memfd's
// /proc/self/fd/N: "can't retrieve real path for file").
static char fuzz_real_file_name[64];
__attribute__((unused)) static void fuzz_real_file_remove(void) { unlink(fuzz_real_file_name); }
__attribute__((unused)) static const char *fuzz_real_path(const uint8_t *data, size_t size, const char *ext) {
    if (!fuzz_real_file_name[0]) {
        snprintf(fuzz_real_file_name, sizeof fuzz_real_file_name, "/dev/shm/ccvit-fuzz-%d.%s", (int)getpid(), ext);
        atexit(fuzz_real_file_remove);
    }
    FILE *f = fopen(fuzz_real_file_name, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) { perror(fuzz_real_file_name); abort(); }
    return fuzz_real_file_name;
}
