// image_encode.c: libpng with a memory writer, libjpeg with jpeg_mem_dest.
#include "image_encode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
// stdio.h must precede jpeglib.h
#include <jpeglib.h>
#include <png.h>

#include "common.h"

typedef struct { uint8_t *buf; size_t len, cap; } MemOut;

static void png_write_mem(png_structp png, png_bytep data, png_size_t n) {
    MemOut *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
        if (!m->buf) png_error(png, "out of memory");
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }  // png_flush_ptr signature; memory needs no flush

uint8_t *encode_png(const uint8_t *pixels, int w, int h, int channels, size_t *len) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) fatal("libpng could not allocate its write structures");
    MemOut m = {0};
    if (setjmp(png_jmpbuf(png))) fatal("PNG encoding of a %dx%d image failed", w, h);
    png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, w, h, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_bytep)pixels + (size_t)y * w * channels);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *len = m.len;
    return m.buf;
}

uint8_t *encode_jpeg(const uint8_t *pixels, int w, int h, int channels, int quality, size_t *len) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);  // encoding our own pixels cannot fail on bad input
    jpeg_create_compress(&ci);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&ci, &buf, &n);
    ci.image_width = w;
    ci.image_height = h;
    ci.input_components = channels;
    ci.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)pixels + (size_t)ci.next_scanline * w * channels;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    uint8_t *out = xmalloc(n, "JPEG bytes");
    memcpy(out, buf, n);
    free(buf);
    *len = n;
    return out;
}
