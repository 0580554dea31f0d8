// image_encode.h: 8-bit grey or RGB pixels -> PNG or JPEG bytes in memory,
// for the shard writer and the tests' fixtures.
#pragma once
#include <stddef.h>
#include <stdint.h>

// Both return a malloc'd buffer and its size in *len; fatal on failure.
uint8_t *encode_png(const uint8_t *pixels, int w, int h, int channels, size_t *len);
uint8_t *encode_jpeg(const uint8_t *pixels, int w, int h, int channels, int quality, size_t *len);
