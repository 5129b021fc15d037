/* budgetplan runtime: float32 kernels of a sparse training step (C99, libc and libm only).
 * Tensors are NCHW, row-major. Gradient kernels accumulate (+=) into their output. */
#ifndef BP_RUNTIME_H
#define BP_RUNTIME_H

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

#endif
