/* budgetplan runtime: kernels of a sparse training step (C99, libc and libm only).
 * Tensors are NCHW, row-major. Gradient kernels accumulate (+=) into their output.
 * The _q8 kernels work on int8 codes: a real value is code * scale (one scale per tensor
 * for activations, per output unit for weights); sums are exact int32, each output is
 * requantised as (float)acc * m + b * r and rounded half to even into [-127, 127];
 * gradients stay float32. */
#ifndef BP_RUNTIME_H
#define BP_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int batch, in_c, in_h, in_w, out_c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_h, pad_w, groups;
} bp_conv;

void bp_conv2d(const bp_conv *c, const float *x, const float *w, const float *b, float *y);
void bp_conv2d_grad_input(const bp_conv *c, const float *gy, const float *w, float *gx);
/* one output unit's weight-gradient row over the input channels in sel (k of them, kept
 * in saved[batch][k][in_h][in_w]); entries of channels not selected are left at zero */
void bp_conv2d_grad_row(const bp_conv *c, const float *gy, const float *saved, const int *sel, int k, int unit,
                        float *row);
void bp_linear(int batch, int in_f, int out_f, const float *x, const float *w, const float *b, float *y);
void bp_linear_grad_input(int batch, int in_f, int out_f, const float *gy, const float *w, float *gx);
void bp_linear_grad_row(int batch, int in_f, int out_f, const float *gy, const float *saved, const int *sel, int k,
                        int unit, float *row);
void bp_relu(const float *x, size_t n, float cap, float *y); /* cap <= 0: no upper bound */
void bp_relu_mask(const float *y, size_t n, float cap, uint8_t *mask);
void bp_relu_grad(const float *gy, const uint8_t *mask, size_t n, float *gx);
void bp_add(const float *a, const float *b, size_t n, float *y);
void bp_accumulate(const float *g, size_t n, float *gx);
void bp_avgpool(const float *x, int batch, int channels, int positions, float *y);
void bp_avgpool_grad(const float *gy, int batch, int channels, int positions, float *gx);
void bp_gather_channels(const float *x, int batch, int channels, int positions, const int *sel, int k, float *saved);
/* mean cross-entropy over the batch; writes its gradient with respect to the logits */
float bp_cross_entropy(const float *logits, const int *labels, int batch, int classes, float *grad);
/* b[o] -= lr * (sum of gy over the batch and positions of channel o) */
void bp_update_bias(const float *gy, int batch, int channels, int positions, float lr, float *b);
/* w -= lr * row, the row clipped first to ratio * max(|w|, 1e-3) where ratio > 0 */
void bp_update_row(float *w, float *row, int n, float lr, float ratio);
/* k distinct channels of total, uniformly, from a xorshift32 state */
void bp_draw(uint32_t *state, int total, int k, int *sel);

/* int8 storage */

/* an int8 weight: every unit's codes in flash (frozen: [out_c][in_c/groups][taps]), and
 * where the plan trains input channels, their codes in SRAM (trained: [slot][unit in the
 * group][taps], slot[c] input channel c's slot or -1); a layer that trains every channel
 * has no slots and its trained codes in frozen's layout; nothing trains: trained NULL */
typedef struct {
    const int8_t *frozen;
    int8_t *trained;
    int16_t *slot;
    int in_g, out_g, taps;
} bp_w8;
/* the taps of unit o's weight on input channel j of its group where they train (in SRAM),
 * else NULL */
static inline int8_t *bp_w8_trained(const bp_w8 *w, int o, int j) {
    if (!w->trained) return NULL;
    if (!w->slot) return w->trained + ((size_t)o * w->in_g + j) * w->taps;
    int s = w->slot[(o / w->out_g) * w->in_g + j];
    return s >= 0 ? w->trained + ((size_t)s * w->out_g + o % w->out_g) * w->taps : NULL;
}
/* the taps of unit o's weight on input channel j of its group, trained or in flash */
static inline const int8_t *bp_w8_read(const bp_w8 *w, int o, int j) {
    const int8_t *t = bp_w8_trained(w, o, j);
    return t ? t : w->frozen + ((size_t)o * w->in_g + j) * w->taps;
}

static inline int8_t bp_q8(float v) {
    float r = rintf(v); /* half to even in the default rounding mode */
    return (int8_t)(r > 127.0f ? 127 : (r < -127.0f ? -127 : (int)r));
}
/* y = q8((float)acc * m + b[o] * r) with m = sw[o] * s in float32: the unit's scale times
 * the layer's s_in / s_out, so no multiplier is stored (b may be NULL) */
void bp_conv2d_q8(const bp_conv *c, const int8_t *x, const bp_w8 *w, const float *sw, float s, const float *b,
                  float r, int8_t *y);
/* as bp_conv2d_q8 into yq, or with yq NULL the float32 value into yf (the logits) */
void bp_linear_q8(int batch, int in_f, int out_f, const int8_t *x, const bp_w8 *w, const float *sw, float s,
                  const float *b, float r, int8_t *yq, float *yf);
void bp_relu_q8(const int8_t *x, size_t n, int cap, int8_t *y); /* cap <= 0: no upper bound */
void bp_relu_mask_q8(const int8_t *y, size_t n, int cap, uint8_t *mask);
void bp_add_q8(const int8_t *a, float ma, const int8_t *b, float mb, size_t n, int8_t *y);
void bp_avgpool_q8(const int8_t *x, int batch, int channels, int positions, float m, int8_t *y);
void bp_gather_q8(const int8_t *x, int batch, int channels, int positions, const int *sel, int k, int8_t *saved);
/* the real weight of unit o is w[o] * sw[o] */
void bp_conv2d_grad_input_q8(const bp_conv *c, const float *gy, const bp_w8 *w, const float *sw, float *gx);
void bp_linear_grad_input_q8(int batch, int in_f, int out_f, const float *gy, const bp_w8 *w, const float *sw,
                             float *gx);
/* as the float32 rows, from saved codes of scale sx */
void bp_conv2d_grad_row_q8(const bp_conv *c, const float *gy, const int8_t *saved, float sx, const int *sel, int k,
                           int unit, float *row);
void bp_linear_grad_row_q8(int batch, int in_f, int out_f, const float *gy, const int8_t *saved, float sx,
                           const int *sel, int k, int unit, float *row);
/* as bp_update_row on unit o's real weights (codes * s), then each trained code
 * w = q8(w - (lr * row) / s); row is the unit's in_g x taps */
void bp_update_row_q8(const bp_w8 *w, int o, float s, float *row, float lr, float ratio);
/* the slots and trained codes of channels sel (k of them), from the flash codes (every
 * channel's, where the layer trains them all) */
void bp_w8_select(const bp_w8 *w, int in_c, const int *sel, int k);

/* a depthwise convolution written over its input (in_c == out_c == groups, output no
 * larger): each plane is computed into plane (one output plane) and copied over the
 * input, whose planes before it are read already */
void bp_dwconv_inplace(const bp_conv *c, float *x, const float *w, const float *b, float *plane);
void bp_dwconv_inplace_q8(const bp_conv *c, int8_t *x, const bp_w8 *w, const float *sw, float s, const float *b,
                          float r, int8_t *plane);

/* the patch stage: a buffer holds rows [row, row + height) and columns [col, col + width)
 * of the whole tensor (for every sample and channel); a kernel computes the output
 * positions of out into y, reading zero padding outside the whole input */
typedef struct {
    int16_t row, col, height, width; /* int16: the region table is in flash, per patch and operator */
} bp_window;
void bp_conv2d_patch_q8(const bp_conv *c, const int8_t *x, bp_window xw, const int8_t *w, const float *sw, float s,
                        const float *b, float r, int8_t *y, bp_window yw, bp_window out);
void bp_relu_patch_q8(int8_t *y, bp_window yw, bp_window out, int batch, int channels, int cap);

/* int8 gradients (where the profile counts 8-bit ones): a gradient tensor is codes g with
 * one scale *gs. Each writer combines v = g * *gs + its contribution, element by element,
 * in two passes: the largest |v| gives the new scale (largest / 127, 1 for all zero), then
 * g = q8(v / scale). A gradient's first writer starts from g = 0, *gs = 0. */
float bp_cross_entropy_g8(const float *logits, const int *labels, int batch, int classes, int8_t *g, float *gs);
void bp_relu_grad_g8(const int8_t *gy, float gys, const uint8_t *mask, size_t n, int8_t *gx, float *gxs);
void bp_accumulate_g8(const int8_t *gy, float gys, size_t n, int8_t *gx, float *gxs);
void bp_avgpool_grad_g8(const int8_t *gy, float gys, int batch, int channels, int positions, int8_t *gx, float *gxs);
void bp_conv2d_grad_input_g8(const bp_conv *c, const int8_t *gy, float gys, const bp_w8 *w, const float *sw,
                             int8_t *gx, float *gxs);
void bp_linear_grad_input_g8(int batch, int in_f, int out_f, const int8_t *gy, float gys, const bp_w8 *w,
                             const float *sw, int8_t *gx, float *gxs);
void bp_conv2d_grad_row_g8(const bp_conv *c, const int8_t *gy, float gys, const int8_t *saved, float sx,
                           const int *sel, int k, int unit, float *row);
void bp_linear_grad_row_g8(int batch, int in_f, int out_f, const int8_t *gy, float gys, const int8_t *saved, float sx,
                           const int *sel, int k, int unit, float *row);
void bp_update_bias_g8(const int8_t *gy, float gys, int batch, int channels, int positions, float lr, float *b);

#endif
