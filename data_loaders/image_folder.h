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
    int32_t *labels;
} ImageFolder;

// fatal() if root is missing, has no class folders, or no images.
// Only .jpg/.jpeg/.png (any case) are listed.
void image_folder_open(ImageFolder *f, const char *root);
void image_folder_free(ImageFolder *f);
// A whole file into a malloc'd buffer: 0, or -1 with errno set.
int image_file_read(const char *path, uint8_t **data, size_t *len);
