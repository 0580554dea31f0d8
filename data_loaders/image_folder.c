// image_folder.c: the tree walk. torchvision sorts class names with Python's
// sorted() (code point order), the same as strcmp on UTF-8 bytes.
#include "image_folder.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

static char *join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = xmalloc(na + nb + 2, "path");
    memcpy(s, a, na);  // NOLINT(bugprone-not-null-terminated-result): the NUL comes with the second memcpy (nb + 1 bytes)
    s[na] = '/';
    memcpy(s + na + 1, b, nb + 1);
    return s;
}

// Sorted entry names of dir (without . and ..); *n = count.
static char **list_dir(const char *dir, int *n) {
    DIR *d = opendir(dir);
    if (!d) fatal("cannot read folder %s: %s", dir, strerror(errno));
    char **v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            v = realloc(v, cap * sizeof *v);
            if (!v) fatal("out of memory listing %s", dir);
        }
        v[cnt++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (cnt > 1) qsort(v, cnt, sizeof *v, cmp_str);  // an empty folder leaves v NULL, which qsort may not take
    *n = cnt;
    return v;
}

// The folders a walk is inside, innermost first: a symlink back to one of them is a loop.
typedef struct Visit { dev_t dev; ino_t ino; const struct Visit *up; } Visit;

// os.walk order, sorted: a directory's files come before its subdirectories'
// (sorted(os.walk()) sorts by directory path, and "a" < "a/b"). Symlinked folders
// are followed, except one that leads back into the walk's own path (a loop).
static void walk(ImageFolder *f, const char *dir, int32_t label, int64_t *cap, const Visit *up) {
    struct stat st;
    if (stat(dir, &st) != 0) return;
    for (const Visit *v = up; v; v = v->up)
        if (v->dev == st.st_dev && v->ino == st.st_ino) {
            warn("%s is a symlink loop (a folder that contains it); not followed", dir);
            return;
        }
    Visit here = {st.st_dev, st.st_ino, up};
    int n;
    char **names = list_dir(dir, &n);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            char *p = join(dir, names[i]);
            int d = is_dir(p);
            if (pass == 0 && !d && has_image_ext(names[i])) {
                if (f->num_files == *cap) {
                    *cap = *cap ? 2 * *cap : 1024;
                    f->paths = realloc(f->paths, *cap * sizeof(char *));
                    f->labels = realloc(f->labels, *cap * sizeof(int32_t));
                    if (!f->paths || !f->labels) fatal("out of memory listing %s", dir);
                }
                f->paths[f->num_files] = p;
                f->labels[f->num_files++] = label;
                continue;
            }
            if (pass == 1 && d) walk(f, p, label, cap, &here);
            free(p);
        }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

void image_folder_open(ImageFolder *f, const char *root) {
    memset(f, 0, sizeof *f);
    if (!is_dir(root)) fatal("image folder %s does not exist or is not a directory", root);
    int n;
    char **names = list_dir(root, &n);
    f->class_names = xcalloc(n ? n : 1, sizeof(char *), "class names");
    struct stat st;
    Visit top = {0, 0, NULL};
    if (stat(root, &st) == 0) top.dev = st.st_dev, top.ino = st.st_ino;
    int64_t cap = 0;
    for (int i = 0; i < n; i++) {
        char *p = join(root, names[i]);
        if (is_dir(p)) {
            int64_t before = f->num_files;
            f->class_names[f->num_classes] = names[i];
            names[i] = NULL;
            walk(f, p, f->num_classes++, &cap, &top);
            // as torchvision's ImageFolder: a class without images (an empty or stray folder,
            // .ipynb_checkpoints) would shift every later label and is an error
            if (f->num_files == before) {
                char msg[8192];
                snprintf(msg, sizeof msg, "image folder %s: class folder '%s' holds no .jpg/.jpeg/.png file; remove it or add images",
                         root, f->class_names[f->num_classes - 1]);
                free(p);
                for (int j = i; j < n; j++) free(names[j]);
                free(names);
                image_folder_free(f);
                fatal("%s", msg);
            }
        }
        free(p);
        free(names[i]);
    }
    free(names);
    if (f->num_classes == 0) {
        image_folder_free(f);  // what fatal() would leave is freed first, so a harness can catch it
        fatal("image folder %s has no class subfolders (expected root/<class>/<image>)", root);
    }
    if (f->num_files == 0) fatal("image folder %s has no .jpg/.jpeg/.png files under its class folders", root);
}

void image_folder_open_flat(ImageFolder *f, const char *root) {
    memset(f, 0, sizeof *f);
    if (!is_dir(root)) fatal("image folder %s does not exist or is not a directory", root);
    int64_t cap = 0;
    walk(f, root, -1, &cap, NULL);  // every image below root, unlabeled, in the sorted walk's order
    if (f->num_files == 0) fatal("image folder %s holds no .jpg/.jpeg/.png file (searched recursively)", root);
}

// "path [label]": the path relative to the list's folder unless absolute. 0, or -1 with the
// message in err (the caller frees what it holds before fatal()).
static int list_line(ImageFolder *f, const char *list, int lineno, char *line, const char *dir, int64_t *cap, char *err,
                     size_t errlen) {
    char *end = line + strlen(line);
    while (end > line && (end[-1] == ' ' || end[-1] == '\t')) *--end = 0;
    char *sep = strrchr(line, '\t') ? strrchr(line, '\t') : strrchr(line, ' ');
    int32_t label = -1;
    if (sep) {  // a last field of digits is the label; a path may hold spaces
        char *num = sep + 1, *stop;
        long v = strtol(num, &stop, 10);
        if (*num && !*stop) {
            // classes are named "0".."max label", one string each: 2^20 of them is ~64 MB (ImageNet-21k has 21841)
            if (v < 0 || v >= (1 << 20)) return snprintf(err, errlen, "%s:%d: label %s is outside [0, 2^20)", list, lineno, num), -1;
            label = (int32_t)v;
            *sep = 0;
            while (sep > line && (sep[-1] == ' ' || sep[-1] == '\t')) *--sep = 0;
        }
    }
    if (!*line) return snprintf(err, errlen, "%s:%d: a label without a path", list, lineno), -1;
    if (f->num_files == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        char **paths = realloc(f->paths, *cap * sizeof(char *));
        if (paths) f->paths = paths;
        int32_t *labels = realloc(f->labels, *cap * sizeof(int32_t));
        if (labels) f->labels = labels;
        if (!paths || !labels) return snprintf(err, errlen, "out of memory reading %s", list), -1;
    }
    f->paths[f->num_files] = line[0] == '/' || !dir ? xstrdup(line) : join(dir, line);
    f->labels[f->num_files++] = label;
    if (label >= f->num_classes) f->num_classes = label + 1;
    return 0;
}

void image_list_open(ImageFolder *f, const char *list) {
    memset(f, 0, sizeof *f);
    FILE *in = fopen(list, "r");
    if (!in) fatal("cannot read the image list %s: %s", list, strerror(errno));
    const char *slash = strrchr(list, '/');
    char *dir = slash ? xstrdup(list) : NULL;
    if (dir) dir[slash - list] = 0;
    char *line = NULL, err[8192];
    size_t cap_line = 0;
    int64_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap_line, in) > 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p && *p != '#') rc = list_line(f, list, lineno, p, dir, &cap, err, sizeof err);
    }
    free(line);
    free(dir);
    fclose(in);
    if (rc != 0) {
        f->num_classes = 0;  // no class names yet
        image_folder_free(f);
        fatal("%s", err);
    }
    if (f->num_files == 0) fatal("the image list %s names no image (one path per line, an optional label after it)", list);
    f->class_names = xcalloc(f->num_classes ? f->num_classes : 1, sizeof(char *), "class names");
    for (int i = 0; i < f->num_classes; i++) {
        char name[32];
        snprintf(name, sizeof name, "%d", i);
        f->class_names[i] = xstrdup(name);
    }
}

int64_t image_folder_unlabeled(const ImageFolder *f) {
    int64_t n = 0;
    for (int64_t i = 0; i < f->num_files; i++) n += f->labels[i] < 0;
    return n;
}

void image_folder_free(ImageFolder *f) {
    for (int i = 0; i < f->num_classes; i++) free(f->class_names[i]);
    for (int64_t i = 0; i < f->num_files; i++) free(f->paths[i]);
    free(f->class_names);
    free(f->paths);
    free(f->labels);
    memset(f, 0, sizeof *f);
}

int image_file_read(const char *path, uint8_t **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseeko(f, 0, SEEK_END);
    off_t n = ftello(f);
    fseeko(f, 0, SEEK_SET);
    *data = xmalloc(n > 0 ? n : 1, "image file");
    size_t got = n > 0 ? fread(*data, 1, n, f) : 0;
    fclose(f);
    if ((off_t)got != n) { free(*data); *data = NULL; return -1; }
    *len = n;
    return 0;
}
