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
