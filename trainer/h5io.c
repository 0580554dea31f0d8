// h5io.c: HDF5 helpers with errors that name the file and object.
#include "h5io.h"

#include <string.h>

#include "common.h"

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

// "'<file>' object '<path>/<name>'" for error messages.
static const char *where(hid_t loc, const char *name) {
    static char buf[1024];
    char file[512] = "?", path[384] = "";
    if (H5Fget_name(loc, file, sizeof file) < 0) strcpy(file, "?");
    if (H5Iget_name(loc, path, sizeof path) < 0) path[0] = 0;
    size_t pl = strlen(path);
    snprintf(buf, sizeof buf, "file '%s', object '%s%s%s'", file, path, (pl && path[pl - 1] == '/') ? "" : "/",
             name ? name : "");
    return buf;
}

hid_t h5_create(const char *path) {
    h5_quiet();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) fatal("cannot create HDF5 file '%s' (check the folder exists and is writable)", path);
    return f;
}

hid_t h5_open(const char *path, int writable) {
    h5_quiet();
    FILE *probe = fopen(path, "rb");
    if (!probe) fatal("cannot open HDF5 file '%s': no such file or not readable", path);
    fclose(probe);
    if (H5Fis_hdf5(path) <= 0) fatal("'%s' is not an HDF5 file (corrupt or wrong file?)", path);
    hid_t f = H5Fopen(path, writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fatal("cannot open HDF5 file '%s' (corrupt or truncated?)", path);
    return f;
}

void h5_close(hid_t file) {
    if (H5Fclose(file) < 0) fatal("closing an HDF5 file failed (disk full?)");
}

hid_t h5_group_create(hid_t loc, const char *name) {
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) fatal("cannot create group: %s (already exists?)", where(loc, name));
    return g;
}

hid_t h5_group_open(hid_t loc, const char *name) {
    if (!h5_exists(loc, name)) fatal("missing group: %s", where(loc, name));
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) fatal("cannot open group: %s (corrupt file?)", where(loc, name));
    return g;
}

int h5_exists(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

void h5_group_close(hid_t group) { H5Gclose(group); }

// ---- datasets ---------------------------------------------------------------

static void write_ds(hid_t loc, const char *name, hid_t type, const void *data, int rank, const hsize_t *dims) {
    if (rank < 1 || rank > 8) fatal("h5_write: rank %d unsupported for %s", rank, where(loc, name));
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    size_t esize = H5Tget_size(type), total = esize;
    int empty = 0;
    for (int i = 0; i < rank; i++) {
        total *= dims[i];
        if (dims[i] == 0) empty = 1;
    }
    if (!empty) {
        // Chunks of about 1 MiB: shrink the leading dimensions until it fits.
        hsize_t chunk[8];
        for (int i = 0; i < rank; i++) chunk[i] = dims[i];
        size_t bytes = total;
        for (int i = 0; i < rank && bytes > (1u << 20); i++) {
            size_t inner = bytes / chunk[i];
            hsize_t c = (1u << 20) / (inner ? inner : 1);
            chunk[i] = c ? c : 1;
            bytes = inner * chunk[i];
        }
        H5Pset_chunk(dcpl, rank, chunk);
        H5Pset_fletcher32(dcpl);
    }
    if (h5_exists(loc, name) && H5Ldelete(loc, name, H5P_DEFAULT) < 0)
        fatal("cannot replace dataset: %s", where(loc, name));
    hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0) fatal("cannot create dataset: %s", where(loc, name));
    if (total && H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        fatal("cannot write dataset: %s (disk full?)", where(loc, name));
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
}

static void shape_str(char *buf, size_t n, int rank, const hsize_t *dims) {
    size_t o = snprintf(buf, n, "[");
    for (int i = 0; i < rank && o < n; i++) o += snprintf(buf + o, n - o, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static hid_t open_ds(hid_t loc, const char *name) {
    if (!h5_exists(loc, name)) fatal("missing dataset: %s", where(loc, name));
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) fatal("cannot open dataset: %s (corrupt file?)", where(loc, name));
    return ds;
}

int h5_shape(hid_t loc, const char *name, hsize_t *dims, int max_rank) {
    hid_t ds = open_ds(loc, name);
    hid_t space = H5Dget_space(ds);
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0 || rank > max_rank) fatal("dataset %s has rank %d, expected at most %d", where(loc, name), rank, max_rank);
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    H5Dclose(ds);
    return rank;
}

static void read_ds(hid_t loc, const char *name, hid_t type, void *out, int rank, const hsize_t *dims) {
    hsize_t got[8];
    int r = h5_shape(loc, name, got, 8);
    int same = r == rank;
    for (int i = 0; same && i < rank; i++) same = got[i] == dims[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, r, got);
        shape_str(b, sizeof b, rank, dims);
        fatal("dataset %s has shape %s, expected %s", where(loc, name), a, b);
    }
    hid_t ds = open_ds(loc, name);
    size_t total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    if (total && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        fatal("cannot read dataset %s (checksum mismatch or truncated file: the file is corrupt, rebuild it)", where(loc, name));
    H5Dclose(ds);
}

void h5_write_f32(hid_t l, const char *n, const float *d, int r, const hsize_t *s) { write_ds(l, n, H5T_NATIVE_FLOAT, d, r, s); }
void h5_write_i32(hid_t l, const char *n, const int32_t *d, int r, const hsize_t *s) { write_ds(l, n, H5T_NATIVE_INT32, d, r, s); }
void h5_write_f64(hid_t l, const char *n, const double *d, int r, const hsize_t *s) { write_ds(l, n, H5T_NATIVE_DOUBLE, d, r, s); }
void h5_read_f32(hid_t l, const char *n, float *o, int r, const hsize_t *s) { read_ds(l, n, H5T_NATIVE_FLOAT, o, r, s); }
void h5_read_i32(hid_t l, const char *n, int32_t *o, int r, const hsize_t *s) { read_ds(l, n, H5T_NATIVE_INT32, o, r, s); }
void h5_read_f64(hid_t l, const char *n, double *o, int r, const hsize_t *s) { read_ds(l, n, H5T_NATIVE_DOUBLE, o, r, s); }

// ---- attributes -------------------------------------------------------------

static void write_attr(hid_t loc, const char *name, hid_t type, hid_t space, const void *v) {
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, type, v) < 0) fatal("cannot write attribute '%s' on %s", name, where(loc, NULL));
    H5Aclose(a);
}

static hid_t open_attr(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) fatal("missing attribute '%s' on %s", name, where(loc, NULL));
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) fatal("cannot open attribute '%s' on %s", name, where(loc, NULL));
    return a;
}

static void read_attr(hid_t loc, const char *name, hid_t type, void *out) {
    hid_t a = open_attr(loc, name);
    hid_t space = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    if (n != 1) fatal("attribute '%s' on %s has %lld values, expected 1", name, where(loc, NULL), (long long)n);
    if (H5Aread(a, type, out) < 0) fatal("attribute '%s' on %s has the wrong type", name, where(loc, NULL));
    H5Aclose(a);
}

void h5_attr_write_i64(hid_t loc, const char *name, int64_t v) {
    hid_t s = H5Screate(H5S_SCALAR);
    write_attr(loc, name, H5T_NATIVE_INT64, s, &v);
    H5Sclose(s);
}

void h5_attr_write_f64(hid_t loc, const char *name, double v) {
    hid_t s = H5Screate(H5S_SCALAR);
    write_attr(loc, name, H5T_NATIVE_DOUBLE, s, &v);
    H5Sclose(s);
}

void h5_attr_write_f64s(hid_t loc, const char *name, const double *v, size_t n) {
    hsize_t dim = n;
    hid_t s = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_NULL);
    if (n) write_attr(loc, name, H5T_NATIVE_DOUBLE, s, v);
    else {
        if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
        hid_t a = H5Acreate2(loc, name, H5T_NATIVE_DOUBLE, s, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0) fatal("cannot write attribute '%s' on %s", name, where(loc, NULL));
        H5Aclose(a);
    }
    H5Sclose(s);
}

void h5_attr_write_str(hid_t loc, const char *name, const char *str) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(str) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    hid_t s = H5Screate(H5S_SCALAR);
    write_attr(loc, name, t, s, str);
    H5Sclose(s);
    H5Tclose(t);
}

int64_t h5_attr_read_i64(hid_t loc, const char *name) {
    int64_t v;
    read_attr(loc, name, H5T_NATIVE_INT64, &v);
    return v;
}

double h5_attr_read_f64(hid_t loc, const char *name) {
    double v;
    read_attr(loc, name, H5T_NATIVE_DOUBLE, &v);
    return v;
}

double *h5_attr_read_f64s(hid_t loc, const char *name, size_t *n) {
    hid_t a = open_attr(loc, name);
    hid_t space = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_type(space) == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    double *v = xcalloc(np ? np : 1, sizeof(double), name);
    if (np && H5Aread(a, H5T_NATIVE_DOUBLE, v) < 0) fatal("attribute '%s' on %s is not numeric", name, where(loc, NULL));
    H5Aclose(a);
    *n = (size_t)np;
    return v;
}

char *h5_attr_read_str(hid_t loc, const char *name) {
    hid_t a = open_attr(loc, name);
    hid_t ft = H5Aget_type(a);
    if (H5Tget_class(ft) != H5T_STRING) fatal("attribute '%s' on %s is not a string", name, where(loc, NULL));
    if (H5Tis_variable_str(ft) > 0) fatal("attribute '%s' on %s is a variable-length string; expected fixed", name, where(loc, NULL));
    size_t len = H5Tget_size(ft);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, len + 1);
    char *s = xcalloc(len + 1, 1, name);
    if (H5Aread(a, mt, s) < 0) fatal("cannot read attribute '%s' on %s", name, where(loc, NULL));
    H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
    return s;
}
