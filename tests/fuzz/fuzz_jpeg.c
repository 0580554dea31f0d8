// fuzz_jpeg: JPEG decoding (libjpeg with DCT scaling and the crop window) as
// the loader drives it; see fuzz_image.h for the input layout.
#include "fuzz_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_image(data, size, IMG_JPEG); }
