// image_decode.c: libjpeg with a setjmp error manager (a corrupt JPEG returns
// DECODE_CORRUPT instead of exiting) and libpng with the same.
#include "image_decode.h"

#include <setjmp.h>
#include <stdio.h>
// stdio.h must precede jpeglib.h
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

ImageFormat image_sniff(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return IMG_JPEG;
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return IMG_PNG;
    return IMG_UNKNOWN;
}

static void ensure_pixels(DecodedImage *img, size_t bytes) {
    if (bytes > img->cap) {
        free(img->pixels);
        img->cap = bytes + bytes / 4;
        img->pixels = xmalloc(img->cap, "decoded image");
    }
}

void decoded_image_free(DecodedImage *img) {
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

// PIL's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16 (ITU-R 601-2 luma).
static inline uint8_t luma(int r, int g, int b) { return (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16); }

// ---- JPEG -----------------------------------------------------------------

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;   // libjpeg only warns where data is lost; we treat it as corrupt
    int code;        // the warning that set it
} JpegErr;

static void jpeg_error_jump(j_common_ptr c) {
    longjmp(((JpegErr *)c->err)->jump, 1);
}

// Warnings where libjpeg fills lost data with grey and carries on: a premature end of the
// file or of a scan segment (a cut file that still ends in FF D9), a bad Huffman code, a
// lost restart marker. Extraneous bytes before a marker lose nothing (common in real
// photo sets) and stay accepted.
static void jpeg_quiet_message(j_common_ptr c, int level) {
    int code = c->err->msg_code;
    if (level < 0 && (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE ||
                      code == JWRN_MUST_RESYNC) && !((JpegErr *)c->err)->truncated) {
        ((JpegErr *)c->err)->truncated = 1;
        ((JpegErr *)c->err)->code = code;
    }
}

static void jpeg_setup(struct jpeg_decompress_struct *ci, JpegErr *je) {
    ci->err = jpeg_std_error(&je->pub);
    je->pub.error_exit = jpeg_error_jump;
    je->pub.emit_message = jpeg_quiet_message;
    je->truncated = 0;
}

static void jpeg_message(struct jpeg_decompress_struct *ci, char *err, size_t errlen) {
    char buf[JMSG_LENGTH_MAX];
    ci->err->format_message((j_common_ptr)ci, buf);
    snprintf(err, errlen, "%s", buf);
}

// A JPEG must contain an end-of-image marker; a cut-off file usually has
// none, and libjpeg would pad it silently with grey if the cut lies below the
// region we decode. Searching backwards from the end tolerates trailing junk
// of any size (some cameras append metadata); entropy-coded data cannot
// contain FF D9, so the search is fast for intact files.
static int jpeg_has_eoi(const uint8_t *d, size_t n) {
    for (size_t i = n; i-- > 1;)
        if (d[i - 1] == 0xFF && d[i] == 0xD9) return 1;
    return 0;
}

static DecodeStatus jpeg_decode(const uint8_t *data, size_t len, int channels, int64_t max_pixels, int x0, int y0,
                                int x1, int y1, double min_scale, DecodedImage *out, int header_only, int *w, int *h) {
    struct jpeg_decompress_struct ci;
    JpegErr je;
    jpeg_setup(&ci, &je);
    volatile int created = 0;
    uint8_t *volatile cmyk_row = NULL;
    if (setjmp(je.jump)) {
        jpeg_message(&ci, out->error, sizeof out->error);
        if (created) jpeg_destroy_decompress(&ci);
        free(cmyk_row);
        return DECODE_CORRUPT;
    }
    jpeg_create_decompress(&ci);
    created = 1;
    jpeg_mem_src(&ci, data, len);
    jpeg_read_header(&ci, TRUE);
    if (w) *w = ci.image_width;
    if (h) *h = ci.image_height;
    if ((int64_t)ci.image_width * ci.image_height > max_pixels) {
        snprintf(out->error, sizeof out->error, "%ux%u pixels exceeds the limit of %lld", ci.image_width,
                 ci.image_height, (long long)max_pixels);
        jpeg_destroy_decompress(&ci);
        return DECODE_TOO_LARGE;
    }
    if (header_only) { jpeg_destroy_decompress(&ci); return DECODE_OK; }
    if (!jpeg_has_eoi(data, len)) {
        snprintf(out->error, sizeof out->error, "truncated JPEG (no end-of-image marker)");
        jpeg_destroy_decompress(&ci);
        return DECODE_CORRUPT;
    }

    int is_cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
    if (is_cmyk) ci.out_color_space = JCS_CMYK;
    else ci.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    int k = 1;
    while (k < 8 && k / 8.0 < min_scale) k++;
    // Plain chroma replication instead of triangle-filter upsampling: ~8% faster,
    // invisible after the resize; PIL (fancy) differs by a level or two in colour.
    ci.do_fancy_upsampling = FALSE;
    ci.scale_num = k;
    ci.scale_denom = 8;
    jpeg_start_decompress(&ci);
    int fw = ci.output_width, fh = ci.output_height;
    out->full_width = fw;
    out->full_height = fh;
    // Scaled pixel i covers original pixels [8i/k, 8(i+1)/k): the scale is k/8
    // exactly, while the output size is rounded up (its last pixel is partial).
    out->scale_x = out->scale_y = k / 8.0;
    // Region in scaled coordinates, widened to whole pixels and clamped.
    int rx0 = (int)(x0 * out->scale_x), ry0 = (int)(y0 * out->scale_y);
    int rx1 = (int)(x1 * out->scale_x + 0.999999), ry1 = (int)(y1 * out->scale_y + 0.999999);
    if (rx0 < 0) rx0 = 0;
    if (ry0 < 0) ry0 = 0;
    if (rx1 > fw) rx1 = fw;
    if (ry1 > fh) ry1 = fh;
    if (rx1 <= rx0) rx1 = rx0 + 1 <= fw ? rx0 + 1 : fw, rx0 = rx1 - 1;
    if (ry1 <= ry0) ry1 = ry0 + 1 <= fh ? ry0 + 1 : fh, ry0 = ry1 - 1;
    JDIMENSION xoff = rx0, cw = rx1 - rx0;
    if (cw < (JDIMENSION)fw) jpeg_crop_scanline(&ci, &xoff, &cw);
    if (ry0 > 0) jpeg_skip_scanlines(&ci, ry0);
    int comps = ci.output_components;  // 1, 3 or 4 (CMYK)
    int rows = ry1 - ry0;
    out->width = cw;
    out->height = rows;
    out->channels = channels;
    out->off_x = xoff;
    out->off_y = ry0;
    ensure_pixels(out, (size_t)cw * rows * channels);
    if (comps == 4) cmyk_row = xmalloc((size_t)cw * 4, "CMYK row");
    int inverted = is_cmyk && ci.saw_Adobe_marker;  // Adobe writes CMYK inverted
    for (int r = 0; r < rows; r++) {
        uint8_t *dst = out->pixels + (size_t)r * cw * channels;
        JSAMPROW row = comps == 4 ? cmyk_row : dst;
        if (jpeg_read_scanlines(&ci, &row, 1) != 1) longjmp(je.jump, 1);
        if (comps == 4) {
            // PIL's CMYK -> RGB: r = (255 - c) * (255 - k) / 255
            for (JDIMENSION x = 0; x < cw; x++) {
                int c = cmyk_row[4 * x], m = cmyk_row[4 * x + 1], y = cmyk_row[4 * x + 2], kk = cmyk_row[4 * x + 3];
                if (inverted) c = 255 - c, m = 255 - m, y = 255 - y, kk = 255 - kk;
                int R = (255 - c) * (255 - kk) / 255, G = (255 - m) * (255 - kk) / 255, B = (255 - y) * (255 - kk) / 255;
                if (channels == 1) dst[x] = luma(R, G, B);
                else dst[3 * x] = R, dst[3 * x + 1] = G, dst[3 * x + 2] = B;
            }
        }
    }
    int truncated = je.truncated;
    char why[JMSG_LENGTH_MAX] = "";
    if (truncated) {
        ci.err->msg_code = je.code;
        ci.err->format_message((j_common_ptr)&ci, why);
    }
    jpeg_abort_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    free(cmyk_row);
    if (truncated) {
        snprintf(out->error, sizeof out->error, "damaged JPEG data: %.160s", why);
        return DECODE_CORRUPT;
    }
    return DECODE_OK;
}

// ---- PNG --------------------------------------------------------------------

typedef struct { const uint8_t *data; size_t len, pos; } PngSrc;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
    PngSrc *s = png_get_io_ptr(png);
    if (s->pos + n > s->len) png_error(png, "truncated PNG data");
    memcpy(dst, s->data + s->pos, n);
    s->pos += n;
}

static void png_error_jump(png_structp png, png_const_charp msg) {
    DecodedImage *out = png_get_error_ptr(png);
    snprintf(out->error, sizeof out->error, "%s", msg);
    png_longjmp(png, 1);
}

// libpng's warning callback (png_error_ptr); warnings are dropped on purpose.
static void png_quiet_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static DecodeStatus png_decode(const uint8_t *data, size_t len, int channels, int64_t max_pixels, DecodedImage *out,
                               int header_only, int *w, int *h) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, out, png_error_jump, png_quiet_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) fatal("libpng could not allocate its read structures");
    png_bytep *volatile rowp = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rowp);
        return DECODE_CORRUPT;
    }
    PngSrc src = {data, len, 0};
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 iw = png_get_image_width(png, info), ih = png_get_image_height(png, info);
    if (w) *w = iw;
    if (h) *h = ih;
    if ((int64_t)iw * ih > max_pixels) {
        snprintf(out->error, sizeof out->error, "%ux%u pixels exceeds the limit of %lld", iw, ih, (long long)max_pixels);
        png_destroy_read_struct(&png, &info, NULL);
        return DECODE_TOO_LARGE;
    }
    if (header_only) { png_destroy_read_struct(&png, &info, NULL); return DECODE_OK; }
    // Everything becomes 8-bit RGB (or grey): palette expanded, alpha dropped
    // like PIL's convert("RGB"), 16-bit keeps its high byte.
    int ct = png_get_color_type(png, info);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    int src_grey = ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA;
    if (src_grey && channels == 3) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int comps = png_get_channels(png, info);  // 1 or 3 now
    ensure_pixels(out, (size_t)iw * ih * comps);
    rowp = xmalloc(ih * sizeof(png_bytep), "PNG row pointers");
    for (png_uint_32 y = 0; y < ih; y++) rowp[y] = out->pixels + (size_t)y * iw * comps;
    png_read_image(png, rowp);
    png_read_end(png, NULL);  // checks the trailing CRCs: catches truncation after IDAT
    png_destroy_read_struct(&png, &info, NULL);
    free(rowp);
    if (comps == 3 && channels == 1) {
        for (size_t i = 0; i < (size_t)iw * ih; i++)
            out->pixels[i] = luma(out->pixels[3 * i], out->pixels[3 * i + 1], out->pixels[3 * i + 2]);
    }
    out->width = out->full_width = iw;
    out->height = out->full_height = ih;
    out->channels = channels;
    out->off_x = out->off_y = 0;
    out->scale_x = out->scale_y = 1.0;
    return DECODE_OK;
}

// ---- entry points -------------------------------------------------------------

DecodeStatus image_read_size(const uint8_t *data, size_t len, int *width, int *height, char *err, size_t errlen) {
    DecodedImage tmp = {0};
    DecodeStatus s;
    switch (image_sniff(data, len)) {
    case IMG_JPEG: s = jpeg_decode(data, len, 3, INT64_MAX, 0, 0, 0, 0, 1, &tmp, 1, width, height); break;
    case IMG_PNG: s = png_decode(data, len, 3, INT64_MAX, &tmp, 1, width, height); break;
    default: snprintf(tmp.error, sizeof tmp.error, "neither JPEG nor PNG"); s = DECODE_WRONG_FORMAT;
    }
    if (err) snprintf(err, errlen, "%s", tmp.error);
    return s;
}

DecodeStatus image_decode_region(const uint8_t *data, size_t len, int channels, int64_t max_pixels, int x0, int y0,
                                 int x1, int y1, double min_scale, DecodedImage *out) {
    out->error[0] = 0;
    switch (image_sniff(data, len)) {
    case IMG_JPEG: return jpeg_decode(data, len, channels, max_pixels, x0, y0, x1, y1, min_scale, out, 0, NULL, NULL);
    case IMG_PNG: return png_decode(data, len, channels, max_pixels, out, 0, NULL, NULL);
    default: snprintf(out->error, sizeof out->error, "neither JPEG nor PNG"); return DECODE_WRONG_FORMAT;
    }
}
