// augment.h: per-view random draws (torchvision semantics) and the colour
// operations applied to a resized crop.
#pragma once
#include <stdint.h>

#include "common.h"
#include "loader.h"

// Everything random about one view, drawn before decoding so the decoder
// knows which region and scale it needs.
typedef struct {
    int x, y, w, h;          // crop box in original pixels
    int flip;
    int jitter;              // apply colour jitter?
    int jitter_order[4];     // torchvision's randperm(4): 0 brightness, 1 contrast, 2 saturation, 3 hue
    float bright_f, contrast_f, sat_f, hue_f;
    int grayscale, blur, solarize;
    float blur_sigma;
} ViewParams;

// torchvision RandomResizedCrop.get_params: 10 attempts, then the centre crop.
void rrc_params(Rng *r, int width, int height, const float scale[2], const float ratio[2], int *x, int *y, int *w,
                int *h);
// All draws of one training view, in a fixed order.
void draw_view_params(Rng *r, const LoaderConfig *cfg, int width, int height, ViewParams *v);

// Eval: Resize(shorter side -> resize) then CenterCrop(size), as torchvision
// computes the sizes. *rw x *rh is the full resized image; (*cx, *cy) the crop.
void eval_geometry(int width, int height, float resize, int size, int *rw, int *rh, int *cx, int *cy);

// Flip a u8 HWC image in place.
void hflip_u8(uint8_t *img, int w, int h, int ch);

// Colour operations on float HWC in [0,1] (torchvision tensor semantics):
// jitter in the drawn order, then grayscale, blur, solarize. tmp: w*h*ch floats.
void apply_colour_ops(float *img, int w, int h, int ch, const ViewParams *v, const LoaderConfig *cfg, float *tmp);
