// h5io.h: the project's one home for HDF5 helpers (tokenizer, checkpoints).
// Every failure calls fatal() with a message naming the file and the object;
// HDF5's own error stack printing is switched off by h5_quiet().
#pragma once
#include <hdf5.h>
#include <stdint.h>

void h5_quiet(void);                                   // silence HDF5's stack (idempotent)
hid_t h5_create(const char *path);                     // truncate or create
hid_t h5_open(const char *path, int writable);         // fatal if missing or not HDF5
void h5_close(hid_t file);
hid_t h5_group_create(hid_t loc, const char *name);
hid_t h5_group_open(hid_t loc, const char *name);      // fatal if missing
int h5_exists(hid_t loc, const char *name);            // link exists (no fatal)
void h5_group_close(hid_t group);

// Datasets: chunked, Fletcher32-checksummed. Reads check rank and shape
// against `dims` and fail naming the file, dataset and both shapes.
void h5_write_f32(hid_t loc, const char *name, const float *data, int rank, const hsize_t *dims);
void h5_write_i32(hid_t loc, const char *name, const int32_t *data, int rank, const hsize_t *dims);
void h5_write_f64(hid_t loc, const char *name, const double *data, int rank, const hsize_t *dims);
void h5_read_f32(hid_t loc, const char *name, float *out, int rank, const hsize_t *dims);
void h5_read_i32(hid_t loc, const char *name, int32_t *out, int rank, const hsize_t *dims);
void h5_read_f64(hid_t loc, const char *name, double *out, int rank, const hsize_t *dims);
// Shape of a dataset; returns its rank (<= max_rank, fatal otherwise).
int h5_shape(hid_t loc, const char *name, hsize_t *dims, int max_rank);

// Attributes on a group or file (overwritten if present).
void h5_attr_write_i64(hid_t loc, const char *name, int64_t v);
void h5_attr_write_f64(hid_t loc, const char *name, double v);
void h5_attr_write_str(hid_t loc, const char *name, const char *s);
void h5_attr_write_f64s(hid_t loc, const char *name, const double *v, size_t n);
int64_t h5_attr_read_i64(hid_t loc, const char *name);
double h5_attr_read_f64(hid_t loc, const char *name);
char *h5_attr_read_str(hid_t loc, const char *name);            // xmalloc'd; xfree it
double *h5_attr_read_f64s(hid_t loc, const char *name, size_t *n); // xmalloc'd; xfree it

// ---- non-fatal variants, for checkpoints that must be verified with fallback ----
// Same checks and messages as above, but they return -1 (or a negative hid, or
// NULL) with the message in err instead of calling fatal().
hid_t h5_try_open(const char *path, char *err, size_t errlen);   // read-only
int h5_try_shape(hid_t loc, const char *name, hsize_t *dims, int max_rank, char *err, size_t errlen);  // rank
// The dataset exists with exactly this shape (h5_try_read's first check, for sizing a buffer).
int h5_try_check_shape(hid_t loc, const char *name, int rank, const hsize_t *dims, char *err, size_t errlen);
// Reads a whole dataset of the given memory type; the shape must equal dims.
// A checksum failure is reported as corruption naming the dataset.
int h5_try_read(hid_t loc, const char *name, hid_t memtype, void *out, int rank, const hsize_t *dims, char *err,
                size_t errlen);
int h5_try_attr_i64(hid_t loc, const char *name, int64_t *v, char *err, size_t errlen);
char *h5_try_attr_str(hid_t loc, const char *name, char *err, size_t errlen);  // xmalloc'd
// Opaque bytes as a uint8 attribute; the reader requires exactly n bytes.
void h5_attr_write_bytes(hid_t loc, const char *name, const void *v, size_t n);
int h5_try_attr_bytes(hid_t loc, const char *name, void *out, size_t n, char *err, size_t errlen);

// ---- whole files in memory (atomic writers) ----------------------------------
// A file held in memory by the core driver, with checksummed metadata (libver
// >= 1.8). HDF5 never touches the disk, so nothing here fails for lack of
// space; the caller writes img->data[0, size) itself and handles I/O errors.
typedef struct {
    void *data;              // the file's bytes after h5_close_in_memory
    size_t size, capacity;   // file size; allocated bytes
} H5Image;
hid_t h5_create_in_memory(H5Image *img);
void h5_close_in_memory(hid_t file, H5Image *img);
void h5_image_free(H5Image *img);
