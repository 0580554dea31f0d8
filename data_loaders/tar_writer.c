// tar_writer.c: regular-file entries with mode 0644 and mtime 0, so shards
// written twice from the same input are byte-identical.
#include "tar_writer.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

void tar_writer_open(TarWriter *w, const char *path) {
    size_t n = strlen(path) + 32;
    w->tmp = xmalloc(n, "path");
    snprintf(w->tmp, n, "%s.tmp.%d", path, (int)getpid());
    w->f = fopen(w->tmp, "wb");
    w->path = path;
    if (!w->f) fatal("cannot create %s: %s", w->tmp, strerror(errno));
}

void tar_header_seal(unsigned char h[512]) {
    memset(h + 148, ' ', 8);  // the checksum counts its own field as spaces
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

void tar_writer_add(TarWriter *w, const char *name, const void *data, size_t len) {
    unsigned char h[512] = {0};
    size_t nl = strlen(name);
    if (nl <= 100) {
        memcpy(h, name, nl);  // NOLINT(bugprone-not-null-terminated-result): a ustar name field is NUL-padded by the zeroed header, not terminated
    } else {
        const char *split = NULL;  // prefix/name split at a '/'
        for (const char *p = name; *p; p++)
            if (*p == '/' && p - name <= 155 && strlen(p + 1) <= 100) { split = p; break; }
        if (!split) fatal("tar entry name too long for ustar (%zu bytes): %s", nl, name);
        memcpy(h + 345, name, split - name);
        memcpy(h, split + 1, strlen(split + 1));
    }
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)len);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);  // NOLINT(bugprone-not-null-terminated-result): ustar version "00" has no NUL by the format
    tar_header_seal(h);
    static const unsigned char zeros[512];
    size_t pad = (512 - len % 512) % 512;
    if (fwrite(h, 1, 512, w->f) != 512 || (len && fwrite(data, 1, len, w->f) != len) ||
        (pad && fwrite(zeros, 1, pad, w->f) != pad))
        fatal("cannot write %s: %s", w->path, strerror(errno));
}

void tar_writer_close(TarWriter *w) {
    static const unsigned char zeros[1024];
    if (fwrite(zeros, 1, 1024, w->f) != 1024 || fflush(w->f) != 0 || fsync(fileno(w->f)) != 0 || fclose(w->f) != 0) {
        int e = errno;
        unlink(w->tmp);
        fatal("cannot write %s: %s (partial file removed)", w->path, strerror(e));
    }
    if (rename(w->tmp, w->path) != 0) fatal("cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
    fsync_folder_of(w->path);  // as file_write_atomic: the rename itself survives a crash
    w->f = NULL;
    xfree(w->tmp);
    w->tmp = NULL;
}
