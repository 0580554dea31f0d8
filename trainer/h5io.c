// h5io.c: HDF5 helpers with errors that name the file and object.
#include "h5io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

#define H5_ERR_MAX 1536

static hid_t try_open_ds(hid_t loc, const char *name, char *err, size_t errlen) {
    if (!h5_exists(loc, name)) {
        snprintf(err, errlen, "missing dataset: %s", where(loc, name));
        return -1;
    }
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) snprintf(err, errlen, "cannot open dataset: %s (corrupt file?)", where(loc, name));
    return ds;
}

int h5_try_shape(hid_t loc, const char *name, hsize_t *dims, int max_rank, char *err, size_t errlen) {
    hid_t ds = try_open_ds(loc, name, err, errlen);
    if (ds < 0) return -1;
    hid_t space = H5Dget_space(ds);
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank >= 0 && rank <= max_rank) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    H5Dclose(ds);
    if (rank < 0 || rank > max_rank) {
        snprintf(err, errlen, "dataset %s has rank %d, expected at most %d", where(loc, name), rank, max_rank);
        return -1;
    }
    return rank;
}

int h5_shape(hid_t loc, const char *name, hsize_t *dims, int max_rank) {
    char err[H5_ERR_MAX];
    int rank = h5_try_shape(loc, name, dims, max_rank, err, sizeof err);
    if (rank < 0) fatal("%s", err);
    return rank;
}

// The HDF5 error descriptions of the current stack, innermost last, in a 512-byte buffer.
static herr_t collect_errors(unsigned n, const H5E_error2_t *e, void *out) {
    (void)n;  // H5E_walk2_t signature
    size_t len = strlen(out);
    if (e->desc && len < 500) snprintf((char *)out + len, 512 - len, "%s%s", len ? "; " : "", e->desc);
    return 0;
}

int h5_try_check_shape(hid_t loc, const char *name, int rank, const hsize_t *dims, char *err, size_t errlen) {
    hsize_t got[8];
    int r = h5_try_shape(loc, name, got, 8, err, errlen);
    if (r < 0) return -1;
    int same = r == rank;
    for (int i = 0; same && i < rank; i++) same = got[i] == dims[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, r, got);
        shape_str(b, sizeof b, rank, dims);
        snprintf(err, errlen, "dataset %s has shape %s, expected %s", where(loc, name), a, b);
        return -1;
    }
    return 0;
}

// The filters of a dataset's pipeline: 1 when it holds only Fletcher32 (our writer's) or
// nothing, so that every chunk's stored size is known; *fletcher set when it is there.
static int plain_pipeline(hid_t dcpl, int *fletcher) {
    int n = H5Pget_nfilters(dcpl);
    *fletcher = 0;
    for (int i = 0; i < n; i++) {
        unsigned flags, conf;
        size_t nelem = 0;
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelem, NULL, 0, NULL, &conf);
        if (id != H5Z_FILTER_FLETCHER32) return 0;
        *fletcher = 1;
    }
    return n >= 0;
}

// Each chunk's stored size is its bytes (+ 4 for Fletcher32) when nothing compresses it.
static int chunk_sizes_fit(hid_t ds, hid_t dcpl, uint64_t chunk_bytes) {
    int fletcher;
    if (!plain_pipeline(dcpl, &fletcher)) return 1;  // compressed (another writer): libhdf5's filters check
    hid_t space = H5Dget_space(ds);
    hsize_t n = 0;
    int fit = space >= 0 && H5Dget_num_chunks(ds, space, &n) >= 0;
    for (hsize_t i = 0; fit && i < n; i++) {
        hsize_t offset[8], size = 0;
        unsigned mask = 0;
        haddr_t addr;
        fit = H5Dget_chunk_info(ds, space, i, offset, &mask, &addr, &size) >= 0 &&
              size == chunk_bytes + (fletcher ? 4 : 0);
    }
    if (space >= 0) H5Sclose(space);
    return fit;
}

// What libhdf5 sizes its buffers and copies by before any checksum is tested: a damaged
// chunk record claiming 4 GB made it allocate that, and one claiming a few bytes made it
// copy past them (fuzz_tokenizer). Elements are at most 8 bytes, chunks never exceed the
// dataset's shape, and an uncompressed chunk stores exactly its bytes.
static int check_storage(hid_t ds, hid_t loc, const char *name, int rank, const hsize_t *dims, char *err,
                         size_t errlen) {
    hid_t ftype = H5Dget_type(ds), dcpl = H5Dget_create_plist(ds);
    size_t elem = ftype >= 0 ? H5Tget_size(ftype) : 0;
    int bad = elem == 0 || elem > 8 || dcpl < 0;
    uint64_t raw = elem;  // the bytes the data holds
    for (int i = 0; i < rank; i++) raw *= dims[i];
    if (!bad && H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t chunk[8];
        uint64_t chunk_bytes = elem;
        bad = H5Pget_chunk(dcpl, 8, chunk) != rank;
        for (int i = 0; !bad && i < rank; i++) {
            bad = chunk[i] == 0 || chunk[i] > (dims[i] ? dims[i] : 1);
            chunk_bytes *= chunk[i];
        }
        if (!bad) bad = !chunk_sizes_fit(ds, dcpl, chunk_bytes);
    } else if (!bad && H5Pget_layout(dcpl) == H5D_CONTIGUOUS) {
        hsize_t stored = H5Dget_storage_size(ds);
        bad = stored != 0 && stored != raw;
    }
    if (ftype >= 0) H5Tclose(ftype);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (bad) snprintf(err, errlen, "dataset %s has a damaged layout (element, chunk or stored size): the file is corrupt",
                      where(loc, name));
    return bad ? -1 : 0;
}

int h5_try_read(hid_t loc, const char *name, hid_t type, void *out, int rank, const hsize_t *dims, char *err,
                size_t errlen) {
    if (h5_try_check_shape(loc, name, rank, dims, err, errlen) < 0) return -1;
    hid_t ds = try_open_ds(loc, name, err, errlen);
    if (ds < 0) return -1;
    if (check_storage(ds, loc, name, rank, dims, err, errlen) < 0) {
        H5Dclose(ds);
        return -1;
    }
    size_t total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    int bad = total && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0;
    if (bad) {
        char why[512] = "";
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_errors, why);
        snprintf(err, errlen, "cannot read dataset %s: %s: the file is corrupt (a flipped byte or a truncated write); use another copy",
                 where(loc, name), strstr(why, "checksum") ? "Fletcher32 checksum mismatch" : why[0] ? why : "read error");
    }
    H5Dclose(ds);
    return bad ? -1 : 0;
}

static void read_ds(hid_t loc, const char *name, hid_t type, void *out, int rank, const hsize_t *dims) {
    char err[H5_ERR_MAX];
    if (h5_try_read(loc, name, type, out, rank, dims, err, sizeof err) < 0) fatal("%s", err);
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

static hid_t try_open_attr(hid_t loc, const char *name, char *err, size_t errlen) {
    if (H5Aexists(loc, name) <= 0) {
        snprintf(err, errlen, "missing attribute '%s' on %s", name, where(loc, NULL));
        return -1;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) snprintf(err, errlen, "cannot open attribute '%s' on %s", name, where(loc, NULL));
    return a;
}

static hid_t open_attr(hid_t loc, const char *name) {
    char err[H5_ERR_MAX];
    hid_t a = try_open_attr(loc, name, err, sizeof err);
    if (a < 0) fatal("%s", err);
    return a;
}

// Reads `count` values of an attribute that must hold exactly that many.
static int try_read_attr(hid_t loc, const char *name, hid_t type, void *out, hssize_t count, char *err, size_t errlen) {
    hid_t a = try_open_attr(loc, name, err, errlen);
    if (a < 0) return -1;
    hid_t space = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_type(space) == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    int rc = 0;
    if (n != count) {
        snprintf(err, errlen, "attribute '%s' on %s has %lld values, expected %lld", name, where(loc, NULL), (long long)n,
                 (long long)count);
        rc = -1;
    } else if (count && H5Aread(a, type, out) < 0) {
        snprintf(err, errlen, "attribute '%s' on %s has the wrong type", name, where(loc, NULL));
        rc = -1;
    }
    H5Aclose(a);
    return rc;
}

static void read_attr(hid_t loc, const char *name, hid_t type, void *out) {
    char err[H5_ERR_MAX];
    if (try_read_attr(loc, name, type, out, 1, err, sizeof err) < 0) fatal("%s", err);
}

int h5_try_attr_i64(hid_t loc, const char *name, int64_t *v, char *err, size_t errlen) {
    return try_read_attr(loc, name, H5T_NATIVE_INT64, v, 1, err, errlen);
}

int h5_try_attr_bytes(hid_t loc, const char *name, void *out, size_t n, char *err, size_t errlen) {
    return try_read_attr(loc, name, H5T_NATIVE_UINT8, out, (hssize_t)n, err, errlen);
}

void h5_attr_write_bytes(hid_t loc, const char *name, const void *v, size_t n) {
    hsize_t dim = n;
    hid_t s = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_NULL);
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_UINT8, s, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || (n && H5Awrite(a, H5T_NATIVE_UINT8, v) < 0)) fatal("cannot write attribute '%s' on %s", name, where(loc, NULL));
    H5Aclose(a);
    H5Sclose(s);
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

char *h5_try_attr_str(hid_t loc, const char *name, char *err, size_t errlen) {
    hid_t a = try_open_attr(loc, name, err, errlen);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a);
    char *s = NULL;
    if (H5Tget_class(ft) != H5T_STRING)
        snprintf(err, errlen, "attribute '%s' on %s is not a string", name, where(loc, NULL));
    else if (H5Tis_variable_str(ft) > 0)
        snprintf(err, errlen, "attribute '%s' on %s is a variable-length string; expected fixed", name, where(loc, NULL));
    else {
        size_t len = H5Tget_size(ft);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, len + 1);
        s = xcalloc(len + 1, 1, name);
        if (H5Aread(a, mt, s) < 0) {
            snprintf(err, errlen, "cannot read attribute '%s' on %s", name, where(loc, NULL));
            xfree(s);
            s = NULL;
        }
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return s;
}

char *h5_attr_read_str(hid_t loc, const char *name) {
    char err[H5_ERR_MAX];
    char *s = h5_try_attr_str(loc, name, err, sizeof err);
    if (!s) fatal("%s", err);
    return s;
}

// ---- non-fatal open, in-memory files ------------------------------------------

hid_t h5_try_open(const char *path, char *err, size_t errlen) {
    h5_quiet();
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (H5Fis_hdf5(path) <= 0) {
        snprintf(err, errlen, "'%s' (%lld bytes) is not an HDF5 file (wrong file, or damaged at the start)", path,
                 (long long)st.st_size);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        snprintf(err, errlen, "cannot open HDF5 file '%s' (%lld bytes): truncated or corrupt (an interrupted copy?)", path,
                 (long long)st.st_size);
    return f;
}

// The core driver's buffer is allocated through these callbacks, so that on
// close the final image (superblock flags cleared, checksums valid) is kept
// instead of freed.
static void *image_malloc(size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op;  // H5FD_file_image_callbacks_t signature
    void *p = malloc(size ? size : 1);
    if (p && udata) ((H5Image *)udata)->capacity = size;
    return p;
}

static void *image_memcpy(void *dst, const void *src, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op, (void)udata;  // H5FD_file_image_callbacks_t signature
    return memcpy(dst, src, size);
}

static void *image_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op;  // H5FD_file_image_callbacks_t signature
    void *p = realloc(ptr, size ? size : 1);
    if (p && udata) ((H5Image *)udata)->capacity = size;
    return p;
}

static herr_t image_free(void *ptr, H5FD_file_image_op_t op, void *udata) {
    H5Image *img = udata;
    if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && img) {
        free(img->data);
        img->data = ptr;
    } else {
        free(ptr);
    }
    return 0;
}

// HDF5 wants udata copy/free callbacks when udata is set; the image is shared.
static void *image_udata_copy(void *udata) { return udata; }
static herr_t image_udata_free(void *udata) {
    (void)udata;  // H5FD_file_image_callbacks_t signature; the image is not ours to free here
    return 0;
}

hid_t h5_create_in_memory(H5Image *img) {
    static int serial = 0;
    h5_quiet();
    memset(img, 0, sizeof *img);
    char name[64];
    snprintf(name, sizeof name, "in-memory-%d-%d", (int)getpid(), __atomic_fetch_add(&serial, 1, __ATOMIC_RELAXED));
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, (size_t)1 << 20, 0);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);  // checksummed metadata
    H5FD_file_image_callbacks_t cb = {image_malloc, image_memcpy, image_realloc, image_free, image_udata_copy, image_udata_free, img};
    if (H5Pset_file_image_callbacks(fapl, &cb) < 0) fatal("HDF5: cannot set file image callbacks");
    hid_t f = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) fatal("cannot create an in-memory HDF5 file (out of memory?)");
    return f;
}

void h5_close_in_memory(hid_t file, H5Image *img) {
    if (H5Fclose(file) < 0 || !img->data) fatal("closing an in-memory HDF5 file failed (out of memory?)");
    // The file's size is the end-of-file address in its superblock (version 2 or 3):
    // signature 8, version, size of offsets O, size of lengths, flags, then the base,
    // extension and end-of-file addresses, O bytes each, little-endian.
    const unsigned char *b = img->data;
    int O = img->capacity > 12 ? b[9] : 0;
    if (O < 1 || O > 8 || img->capacity < 12 + 3 * (size_t)O || memcmp(b, "\211HDF\r\n\032\n", 8) || (b[8] != 2 && b[8] != 3))
        fatal("in-memory HDF5 file: unexpected superblock");
    uint64_t eof = 0;
    for (int i = O - 1; i >= 0; i--) eof = eof << 8 | b[12 + 2 * O + i];
    if (eof == 0 || eof > img->capacity)
        fatal("in-memory HDF5 file: end of file %llu beyond its %zu bytes", (unsigned long long)eof, img->capacity);
    img->size = (size_t)eof;
}

void h5_image_free(H5Image *img) {
    free(img->data);
    memset(img, 0, sizeof *img);
}
