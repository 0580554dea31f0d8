// fuzz_image.h: the body of fuzz_jpeg and fuzz_png. The image goes through
// sample_check_header, image_decode_region (the region and DCT scale the loader
// would ask for, drawn from the input's first bytes) and transform_sample (the
// loader's whole decode + crop + resize + colour path) at 16 px.
//
// Input: 8 parameter bytes, then the image.
//   p[0] bit 0: channels 1 or 3; bit 1: eval mode in transform_sample; bit 2: bilinear
//   p[1]: min_scale (p[1] & 7) + 1 over 8, i.e. JPEG DCT scale 1/8 .. 8/8
//   p[2..5]: crop window x0, y0, x1, y1 as 1/255ths of the width and height
//            (beyond 200: outside the image, as a rounding caller might ask)
//   p[6..7]: rng seed for transform_sample's views
#include "fuzz_common.h"
#include "image_decode.h"
#include "loader.h"
#include "sample_transform.h"

// 4 Mpixel: far above the project's images, small enough that the fuzzer
// does not spend its time in huge allocations (the loader's default is 64e6).
#define FUZZ_MAX_PIXELS (1 << 22)

static int frac(int v, int full) { return v > 200 ? full + (v - 200) : (int)((int64_t)v * full / 200); }

static void touch(const DecodedImage *img) {
    size_t n = (size_t)img->width * img->height * img->channels;
    if (n > img->cap) abort();
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) sum += img->pixels[i];  // out-of-bounds bytes show here
    __asm__ volatile("" : : "r"(sum));
}

static int fuzz_image(const uint8_t *data, size_t size, ImageFormat want) {
    if (size < 8) return 0;
    const uint8_t *p = data, *img = data + 8;
    size_t len = size - 8;
    if (image_sniff(img, len) != want) return 0;
    int channels = p[0] & 1 ? 3 : 1;
    int W = 0, H = 0;
    char detail[200];
    if (sample_check_header(img, len, IMG_UNKNOWN, FUZZ_MAX_PIXELS, &W, &H, detail, sizeof detail) >= 0) return 0;
    if (W <= 0 || H <= 0 || (int64_t)W * H > FUZZ_MAX_PIXELS) abort();

    int x0 = frac(p[2], W), y0 = frac(p[3], H), x1 = frac(p[4], W), y1 = frac(p[5], H);
    double min_scale = ((p[1] & 7) + 1) / 8.0;
    DecodedImage out = {0};
    DecodeStatus st = image_decode_region(img, len, channels, FUZZ_MAX_PIXELS, x0, y0, x1, y1, min_scale, &out);
    if (st == DECODE_OK) {
        if (out.width <= 0 || out.height <= 0 || out.channels != channels) abort();
        if (out.off_x < 0 || out.off_y < 0 || out.off_x + out.width > out.full_width ||
            out.off_y + out.height > out.full_height)
            abort();
        touch(&out);
    } else if (!out.error[0]) {
        abort();  // a failure always says why
    }
    decoded_image_free(&out);

    LoaderConfig cfg;
    loader_config_defaults(&cfg);
    cfg.image_size = 16;
    cfg.channels = channels;
    cfg.mode = p[0] & 2 ? LOADER_EVAL : LOADER_TRAIN;
    cfg.interp = p[0] & 4 ? INTERP_BILINEAR : INTERP_BICUBIC;
    cfg.eval_resize = 18;
    cfg.max_pixels = FUZZ_MAX_PIXELS;
    cfg.jitter_p = cfg.grayscale_p = cfg.blur_p = cfg.solarize_p = 0.5f;
    cfg.brightness = cfg.contrast = cfg.saturation = 0.4f;
    cfg.hue = 0.1f;
    cfg.blur_sigma[0] = 0.1f, cfg.blur_sigma[1] = 2.0f;
    cfg.solarize_threshold = 0.5f;
    Rng rng;
    rng_seed(&rng, p[6] | p[7] << 8, 0);
    size_t plane = (size_t)channels * 16 * 16;
    float *buf = malloc(4 * plane * sizeof(float));
    float *norm[2] = {buf, buf + plane}, *clean[2] = {buf + 2 * plane, buf + 3 * plane};
    TransformScratch ts = {0};
    int why = transform_sample(&cfg, img, len, IMG_UNKNOWN, &rng, 2, norm, clean, &ts, detail, sizeof detail);
    if (why >= SKIP_NUM_REASONS) abort();
    transform_scratch_free(&ts);
    free(buf);
    return 0;
}
