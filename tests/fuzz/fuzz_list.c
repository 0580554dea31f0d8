// fuzz_list: data_loaders/image_folder.c: the list-file parser (image_list_open)
// and the folder walks (image_folder_open_flat, image_folder_open).
//
// Input: a list file, or, when it starts with "%%TREE%%\n", a folder tree to
// build in a scratch folder and walk: one entry per line, "a/b/c.png" (a file;
// its folders are made), "a/b/" (a folder), or "a/l -> ../x" (a symlink).
// Names and symlink targets are kept inside the scratch folder (no absolute paths,
// no ".." above it).
#include "fuzz_common.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "image_folder.h"

static char root[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void check(const ImageFolder *f) {
    if (f->num_files < 1 || f->num_classes < 0) abort();
    for (int64_t i = 0; i < f->num_files; i++)
        if (!f->paths[i] || f->labels[i] < -1 || f->labels[i] >= (f->num_classes ? f->num_classes : 1 << 30)) abort();
    for (int i = 0; i < f->num_classes; i++)
        if (!f->class_names[i]) abort();
    (void)image_folder_unlabeled(f);
}

// A safe relative name: components of [A-Za-z0-9._-] (not "." or ".."), at most 8 deep.
static int safe(const char *s) {
    if (!*s || *s == '/' || strlen(s) > 200) return 0;
    int depth = 0;
    for (const char *c = s; *c;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 && e) return 0;
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return 0;
        for (size_t i = 0; i < n; i++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", c[i])) return 0;
        if (++depth > 8) return 0;
        c += n + (e ? 1 : 0);
    }
    return 1;
}

static void remove_root(void) { nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

// A symlink target that stays inside the scratch folder: relative, of safe names, "." and
// "..", with no more ".." than the link has folders above it (a link to "/" walked the machine).
static int inside(const char *link, const char *target) {
    int depth = 0;
    for (const char *c = link; *c; c++) depth += *c == '/';
    if (!*target || *target == '/' || strlen(target) > 200) return 0;
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", target);
    char *save = NULL;
    for (char *part = strtok_r(tmp, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, "..")) {
            if (--depth < 0) return 0;
        } else if (strcmp(part, ".")) {
            for (const char *c = part; *c; c++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *c)) return 0;
            depth++;
        }
    }
    return 1;
}

static void make_parents(const char *path) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + strlen(root) + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(tmp, 0755); *p = '/'; }
}

static void build_tree(char *text) {
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(root, 0755);
    int entries = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && entries < 64; line = strtok_r(NULL, "\n", &save)) {
        char *arrow = strstr(line, " -> "), path[512];
        if (arrow) *arrow = 0;
        size_t n = strlen(line);
        int is_dir = n && line[n - 1] == '/';
        if (is_dir) line[n - 1] = 0;
        if (!safe(line)) continue;
        entries++;
        snprintf(path, sizeof path, "%s/%s", root, line);
        make_parents(path);
        if (arrow) {
            if (!inside(line, arrow + 4) || symlink(arrow + 4, path) != 0) continue;
        } else if (is_dir) {
            mkdir(path, 0755);
        } else {
            int fd = open(path, O_CREAT | O_WRONLY, 0644);
            if (fd >= 0) close(fd);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 8192) return 0;
    if (!root[0]) {
        snprintf(root, sizeof root, "/tmp/ccvit-fuzz-list-%d", (int)getpid());
        mkdir(root, 0755);
        atexit(remove_root);
    }
    ImageFolder f;
    int failed;
    static const char tree_tag[] = "%%TREE%%\n";
    if (size >= sizeof tree_tag - 1 && !memcmp(data, tree_tag, sizeof tree_tag - 1)) {
        char *text = fuzz_strndup(data + sizeof tree_tag - 1, size - (sizeof tree_tag - 1));
        build_tree(text);
        free(text);
        FUZZ_TRY(failed, image_folder_open_flat(&f, root));
        if (!failed) { check(&f); image_folder_free(&f); }
        FUZZ_TRY(failed, image_folder_open(&f, root));
        if (!failed) { check(&f); image_folder_free(&f); }
        return 0;
    }
    const char *path = fuzz_path(0, data, size);
    FUZZ_TRY(failed, image_list_open(&f, path));
    if (!failed) { check(&f); image_folder_free(&f); }
    return 0;
}
