// files.c: atomic file writes (temporary, fsync, rename, fsync the folder) and their error messages.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

void fsync_folder_of(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int file_error(char *err, size_t errlen, const char *what, const char *path, int e) {
    const char *hint = (e == ENOSPC || e == EDQUOT) ? " (disk full: free space or move output_dir)"
                       : e == EFBIG                 ? " (file size limit reached)"
                                                    : "";
    snprintf(err, errlen, "%s '%s': %s%s", what, path, strerror(e), hint);
    return -1;
}

int file_write_atomic(const char *path, const void *buf, size_t n, const char *kind, char *err, size_t errlen) {
    char tmp[PATH_MAX + 32], what[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(what, sizeof what, "cannot create %s file", kind);
        return file_error(err, errlen, what, tmp, errno);
    }
    const char *p = buf;
    size_t left = n;
    int e = 0;
    while (left && !e) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno != EINTR) e = errno;
        if (w > 0) p += w, left -= (size_t)w;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        snprintf(what, sizeof what, "cannot write %s (partial file removed, the previous %ss kept)", kind, kind);
        return file_error(err, errlen, what, path, e);
    }
    fsync_folder_of(path);
    return 0;
}
