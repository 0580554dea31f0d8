// image_folder.h: root/<class>/**/<image> trees, ordered like torchvision's
// ImageFolder: classes sorted by name, files by (directory, name).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int num_classes;
    char **class_names;
    int64_t num_files;
    char **paths;       // full paths
    int32_t *labels;    // -1: none (a flat folder, or a list line without one)
} ImageFolder;

// fatal() if root is missing, has no class folders, or no images.
// Only .jpg/.jpeg/.png (any case) are listed.
void image_folder_open(ImageFolder *f, const char *root);
// Every image under root, recursively, with no labels (-1), in the same sorted walk order.
void image_folder_open_flat(ImageFolder *f, const char *root);
// A list file: one image path per line (relative to the list's folder unless absolute), optionally
// followed by an integer label in [0, 2^20); '#' starts a comment line. Classes are named "0".."max label".
void image_list_open(ImageFolder *f, const char *list);
int64_t image_folder_unlabeled(const ImageFolder *f);  // files whose label is -1
void image_folder_free(ImageFolder *f);
// A whole file into a malloc'd buffer: 0, or -1 with errno set.
int image_file_read(const char *path, uint8_t **data, size_t *len);
