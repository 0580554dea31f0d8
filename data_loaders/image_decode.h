// image_decode.h: JPEG (libjpeg, reduced DCT scale + region decode) and PNG
// (libpng) to 8-bit interleaved RGB or grey. Decoder errors never exit.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { IMG_UNKNOWN = 0, IMG_JPEG, IMG_PNG } ImageFormat;

typedef enum {
    DECODE_OK = 0,
    DECODE_CORRUPT,       // decoder error or truncated data
    DECODE_WRONG_FORMAT,  // magic bytes are neither JPEG nor PNG
    DECODE_TOO_LARGE,     // header claims more than the pixel limit
} DecodeStatus;

// A decoded region. Pixel (x, y) of the scaled full image sits at
// pixels[((y - off_y) * width + (x - off_x)) * channels]; the scaled image is
// full_width x full_height, i.e. the original times scale_x, scale_y.
typedef struct {
    uint8_t *pixels;      // owned, grown on demand across calls
    size_t cap;
    int width, height, channels;
    int off_x, off_y;
    int full_width, full_height;
    double scale_x, scale_y;
    char error[200];      // decoder's message when status != OK
} DecodedImage;

ImageFormat image_sniff(const uint8_t *data, size_t len);

// Header only: dimensions of the original image.
DecodeStatus image_read_size(const uint8_t *data, size_t len, int *width, int *height, char *err, size_t errlen);

// Decode the region [x0,x1) x [y0,y1) (original pixel coordinates) at the
// smallest JPEG DCT scale k/8 >= min_scale (PNG: always full scale). The
// result may cover a little more than asked (iMCU alignment). channels 1|3.
DecodeStatus image_decode_region(const uint8_t *data, size_t len, int channels, int64_t max_pixels,
                                 int x0, int y0, int x1, int y1, double min_scale, DecodedImage *out);
void decoded_image_free(DecodedImage *img);
