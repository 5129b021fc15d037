/* budgetplan runtime: kernels of a sparse training step (see bp_runtime.h). */
#include "bp_runtime.h"

#include <math.h>
#include <string.h>

void bp_conv2d(const bp_conv *c, const float *x, const float *w, const float *b, float *y) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            float *yo = y + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
            for (int oh = 0; oh < c->out_h; oh++)
                for (int ow = 0; ow < c->out_w; ow++) {
                    float acc = b ? b[o] : 0.0f;
                    for (int j = 0; j < in_g; j++) {
                        const float *xc = x + ((size_t)n * c->in_c + g * in_g + j) * c->in_h * c->in_w;
                        const float *wc = w + ((size_t)o * in_g + j) * c->k_h * c->k_w;
                        for (int kh = 0; kh < c->k_h; kh++) {
                            int ih = oh * c->stride_h - c->pad_h + kh;
                            if (ih < 0 || ih >= c->in_h) continue;
                            for (int kw = 0; kw < c->k_w; kw++) {
                                int iw = ow * c->stride_w - c->pad_w + kw;
                                if (iw < 0 || iw >= c->in_w) continue;
                                acc += xc[ih * c->in_w + iw] * wc[kh * c->k_w + kw];
                            }
                        }
                    }
                    yo[oh * c->out_w + ow] = acc;
                }
        }
}

void bp_conv2d_grad_input(const bp_conv *c, const float *gy, const float *w, float *gx) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            const float *go = gy + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
            for (int j = 0; j < in_g; j++) {
                float *gxc = gx + ((size_t)n * c->in_c + g * in_g + j) * c->in_h * c->in_w;
                const float *wc = w + ((size_t)o * in_g + j) * c->k_h * c->k_w;
                for (int oh = 0; oh < c->out_h; oh++)
                    for (int ow = 0; ow < c->out_w; ow++) {
                        float v = go[oh * c->out_w + ow];
                        for (int kh = 0; kh < c->k_h; kh++) {
                            int ih = oh * c->stride_h - c->pad_h + kh;
                            if (ih < 0 || ih >= c->in_h) continue;
                            for (int kw = 0; kw < c->k_w; kw++) {
                                int iw = ow * c->stride_w - c->pad_w + kw;
                                if (iw < 0 || iw >= c->in_w) continue;
                                gxc[ih * c->in_w + iw] += v * wc[kh * c->k_w + kw];
                            }
                        }
                    }
            }
        }
}

void bp_conv2d_grad_row(const bp_conv *c, const float *gy, const float *saved, const int *sel, int k, int unit,
                        float *row) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups, g = unit / out_g, taps = c->k_h * c->k_w;
    memset(row, 0, sizeof(float) * (size_t)in_g * taps);
    for (int s = 0; s < k; s++) {
        if (sel[s] / in_g != g) continue; /* a channel of another group: not in this unit's row */
        float *rw = row + (size_t)(sel[s] % in_g) * taps;
        for (int n = 0; n < c->batch; n++) {
            const float *go = gy + ((size_t)n * c->out_c + unit) * c->out_h * c->out_w;
            const float *xs = saved + ((size_t)n * k + s) * c->in_h * c->in_w;
            for (int kh = 0; kh < c->k_h; kh++)
                for (int kw = 0; kw < c->k_w; kw++) {
                    float acc = 0.0f;
                    for (int oh = 0; oh < c->out_h; oh++) {
                        int ih = oh * c->stride_h - c->pad_h + kh;
                        if (ih < 0 || ih >= c->in_h) continue;
                        for (int ow = 0; ow < c->out_w; ow++) {
                            int iw = ow * c->stride_w - c->pad_w + kw;
                            if (iw < 0 || iw >= c->in_w) continue;
                            acc += go[oh * c->out_w + ow] * xs[ih * c->in_w + iw];
                        }
                    }
                    rw[kh * c->k_w + kw] += acc;
                }
        }
    }
}

void bp_linear(int batch, int in_f, int out_f, const float *x, const float *w, const float *b, float *y) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_f; o++) {
            float acc = b ? b[o] : 0.0f;
            for (int i = 0; i < in_f; i++) acc += x[(size_t)n * in_f + i] * w[(size_t)o * in_f + i];
            y[(size_t)n * out_f + o] = acc;
        }
}

void bp_linear_grad_input(int batch, int in_f, int out_f, const float *gy, const float *w, float *gx) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_f; o++) {
            float v = gy[(size_t)n * out_f + o];
            for (int i = 0; i < in_f; i++) gx[(size_t)n * in_f + i] += v * w[(size_t)o * in_f + i];
        }
}

void bp_linear_grad_row(int batch, int in_f, int out_f, const float *gy, const float *saved, const int *sel, int k,
                        int unit, float *row) {
    memset(row, 0, sizeof(float) * (size_t)in_f);
    for (int n = 0; n < batch; n++) {
        float v = gy[(size_t)n * out_f + unit];
        for (int s = 0; s < k; s++) row[sel[s]] += v * saved[(size_t)n * k + s];
    }
}

void bp_relu(const float *x, size_t n, float cap, float *y) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] > 0.0f ? x[i] : 0.0f;
        y[i] = (cap > 0.0f && v > cap) ? cap : v;
    }
}

void bp_relu_mask(const float *y, size_t n, float cap, uint8_t *mask) {
    memset(mask, 0, (n + 7) / 8);
    for (size_t i = 0; i < n; i++)
        if (y[i] > 0.0f && (cap <= 0.0f || y[i] < cap)) mask[i / 8] |= (uint8_t)(1u << (i % 8));
}

void bp_relu_grad(const float *gy, const uint8_t *mask, size_t n, float *gx) {
    for (size_t i = 0; i < n; i++)
        if (mask[i / 8] & (1u << (i % 8))) gx[i] += gy[i];
}

void bp_add(const float *a, const float *b, size_t n, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void bp_accumulate(const float *g, size_t n, float *gx) {
    for (size_t i = 0; i < n; i++) gx[i] += g[i];
}

void bp_avgpool(const float *x, int batch, int channels, int positions, float *y) {
    for (int i = 0; i < batch * channels; i++) {
        float acc = 0.0f;
        for (int p = 0; p < positions; p++) acc += x[(size_t)i * positions + p];
        y[i] = acc / (float)positions;
    }
}

void bp_avgpool_grad(const float *gy, int batch, int channels, int positions, float *gx) {
    for (int i = 0; i < batch * channels; i++)
        for (int p = 0; p < positions; p++) gx[(size_t)i * positions + p] += gy[i] / (float)positions;
}

void bp_gather_channels(const float *x, int batch, int channels, int positions, const int *sel, int k, float *saved) {
    for (int n = 0; n < batch; n++)
        for (int s = 0; s < k; s++)
            memcpy(saved + ((size_t)n * k + s) * positions, x + ((size_t)n * channels + sel[s]) * positions,
                   sizeof(float) * (size_t)positions);
}

float bp_cross_entropy(const float *logits, const int *labels, int batch, int classes, float *grad) {
    float loss = 0.0f;
    for (int n = 0; n < batch; n++) {
        const float *z = logits + (size_t)n * classes;
        float *g = grad + (size_t)n * classes;
        float top = z[0], sum = 0.0f;
        for (int c = 1; c < classes; c++) top = z[c] > top ? z[c] : top;
        for (int c = 0; c < classes; c++) sum += expf(z[c] - top);
        for (int c = 0; c < classes; c++) g[c] = expf(z[c] - top) / sum / (float)batch;
        g[labels[n]] -= 1.0f / (float)batch;
        loss += (logf(sum) + top - z[labels[n]]) / (float)batch;
    }
    return loss;
}

void bp_update_bias(const float *gy, int batch, int channels, int positions, float lr, float *b) {
    for (int o = 0; o < channels; o++) {
        float acc = 0.0f;
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < positions; p++) acc += gy[((size_t)n * channels + o) * positions + p];
        b[o] -= lr * acc;
    }
}

void bp_update_row(float *w, float *row, int n, float lr, float ratio) {
    if (ratio > 0.0f) {
        float wn = 0.0f, gn = 0.0f;
        for (int i = 0; i < n; i++) wn += w[i] * w[i], gn += row[i] * row[i];
        float limit = ratio * fmaxf(sqrtf(wn), 1e-3f);
        gn = sqrtf(gn);
        if (gn > limit) {
            float scale = limit / fmaxf(gn, 1e-12f);
            for (int i = 0; i < n; i++) row[i] *= scale;
        }
    }
    for (int i = 0; i < n; i++) w[i] -= lr * row[i];
}

static uint32_t xorshift32(uint32_t *state) {
    uint32_t x = *state ? *state : 2463534242u;
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    return *state = x;
}

void bp_draw(uint32_t *state, int total, int k, int *sel) {
    /* Floyd's algorithm: k distinct values of [0, total) without a buffer of total entries */
    int count = 0;
    for (int j = total - k; j < total; j++) {
        int t = (int)(xorshift32(state) % (uint32_t)(j + 1)), seen = 0;
        for (int i = 0; i < count; i++) seen |= sel[i] == t;
        sel[count++] = seen ? j : t;
    }
}

/* int8 storage: the same loops on codes, exact int32 sums, float32 requantisation */

void bp_conv2d_q8(const bp_conv *c, const int8_t *x, const int8_t *w, const float *m, const float *b, float r,
                  int8_t *y) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            float shift = b ? b[o] * r : 0.0f;
            int8_t *yo = y + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
            for (int oh = 0; oh < c->out_h; oh++)
                for (int ow = 0; ow < c->out_w; ow++) {
                    int32_t acc = 0;
                    for (int j = 0; j < in_g; j++) {
                        const int8_t *xc = x + ((size_t)n * c->in_c + g * in_g + j) * c->in_h * c->in_w;
                        const int8_t *wc = w + ((size_t)o * in_g + j) * c->k_h * c->k_w;
                        for (int kh = 0; kh < c->k_h; kh++) {
                            int ih = oh * c->stride_h - c->pad_h + kh;
                            if (ih < 0 || ih >= c->in_h) continue;
                            for (int kw = 0; kw < c->k_w; kw++) {
                                int iw = ow * c->stride_w - c->pad_w + kw;
                                if (iw < 0 || iw >= c->in_w) continue;
                                acc += (int32_t)xc[ih * c->in_w + iw] * wc[kh * c->k_w + kw];
                            }
                        }
                    }
                    yo[oh * c->out_w + ow] = bp_q8((float)acc * m[o] + shift);
                }
        }
}

void bp_linear_q8(int batch, int in_f, int out_f, const int8_t *x, const int8_t *w, const float *m, const float *b,
                  float r, int8_t *yq, float *yf) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_f; o++) {
            int32_t acc = 0;
            for (int i = 0; i < in_f; i++) acc += (int32_t)x[(size_t)n * in_f + i] * w[(size_t)o * in_f + i];
            float v = (float)acc * m[o] + (b ? b[o] * r : 0.0f);
            if (yq)
                yq[(size_t)n * out_f + o] = bp_q8(v);
            else
                yf[(size_t)n * out_f + o] = v;
        }
}

void bp_relu_q8(const int8_t *x, size_t n, int cap, int8_t *y) {
    for (size_t i = 0; i < n; i++) {
        int v = x[i] > 0 ? x[i] : 0;
        y[i] = (int8_t)((cap > 0 && v > cap) ? cap : v);
    }
}

void bp_relu_mask_q8(const int8_t *y, size_t n, int cap, uint8_t *mask) {
    memset(mask, 0, (n + 7) / 8);
    for (size_t i = 0; i < n; i++)
        if (y[i] > 0 && (cap <= 0 || y[i] < cap)) mask[i / 8] |= (uint8_t)(1u << (i % 8));
}

void bp_add_q8(const int8_t *a, float ma, const int8_t *b, float mb, size_t n, int8_t *y) {
    for (size_t i = 0; i < n; i++) y[i] = bp_q8((float)a[i] * ma + (float)b[i] * mb);
}

void bp_avgpool_q8(const int8_t *x, int batch, int channels, int positions, float m, int8_t *y) {
    for (int i = 0; i < batch * channels; i++) {
        int32_t acc = 0;
        for (int p = 0; p < positions; p++) acc += x[(size_t)i * positions + p];
        y[i] = bp_q8((float)acc * m);
    }
}

void bp_gather_q8(const int8_t *x, int batch, int channels, int positions, const int *sel, int k, int8_t *saved) {
    for (int n = 0; n < batch; n++)
        for (int s = 0; s < k; s++)
            memcpy(saved + ((size_t)n * k + s) * positions, x + ((size_t)n * channels + sel[s]) * positions,
                   (size_t)positions);
}

void bp_conv2d_grad_input_q8(const bp_conv *c, const float *gy, const int8_t *w, const float *sw, float *gx) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            const float *go = gy + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
            for (int j = 0; j < in_g; j++) {
                float *gxc = gx + ((size_t)n * c->in_c + g * in_g + j) * c->in_h * c->in_w;
                const int8_t *wc = w + ((size_t)o * in_g + j) * c->k_h * c->k_w;
                for (int oh = 0; oh < c->out_h; oh++)
                    for (int ow = 0; ow < c->out_w; ow++) {
                        float v = go[oh * c->out_w + ow] * sw[o];
                        for (int kh = 0; kh < c->k_h; kh++) {
                            int ih = oh * c->stride_h - c->pad_h + kh;
                            if (ih < 0 || ih >= c->in_h) continue;
                            for (int kw = 0; kw < c->k_w; kw++) {
                                int iw = ow * c->stride_w - c->pad_w + kw;
                                if (iw < 0 || iw >= c->in_w) continue;
                                gxc[ih * c->in_w + iw] += v * (float)wc[kh * c->k_w + kw];
                            }
                        }
                    }
            }
        }
}

void bp_linear_grad_input_q8(int batch, int in_f, int out_f, const float *gy, const int8_t *w, const float *sw,
                             float *gx) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_f; o++) {
            float v = gy[(size_t)n * out_f + o] * sw[o];
            for (int i = 0; i < in_f; i++) gx[(size_t)n * in_f + i] += v * (float)w[(size_t)o * in_f + i];
        }
}

void bp_conv2d_grad_row_q8(const bp_conv *c, const float *gy, const int8_t *saved, float sx, const int *sel, int k,
                           int unit, float *row) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups, g = unit / out_g, taps = c->k_h * c->k_w;
    memset(row, 0, sizeof(float) * (size_t)in_g * taps);
    for (int s = 0; s < k; s++) {
        if (sel[s] / in_g != g) continue;
        float *rw = row + (size_t)(sel[s] % in_g) * taps;
        for (int n = 0; n < c->batch; n++) {
            const float *go = gy + ((size_t)n * c->out_c + unit) * c->out_h * c->out_w;
            const int8_t *xs = saved + ((size_t)n * k + s) * c->in_h * c->in_w;
            for (int kh = 0; kh < c->k_h; kh++)
                for (int kw = 0; kw < c->k_w; kw++) {
                    float acc = 0.0f;
                    for (int oh = 0; oh < c->out_h; oh++) {
                        int ih = oh * c->stride_h - c->pad_h + kh;
                        if (ih < 0 || ih >= c->in_h) continue;
                        for (int ow = 0; ow < c->out_w; ow++) {
                            int iw = ow * c->stride_w - c->pad_w + kw;
                            if (iw < 0 || iw >= c->in_w) continue;
                            acc += go[oh * c->out_w + ow] * (float)xs[ih * c->in_w + iw];
                        }
                    }
                    rw[kh * c->k_w + kw] += acc * sx;
                }
        }
    }
}

void bp_linear_grad_row_q8(int batch, int in_f, int out_f, const float *gy, const int8_t *saved, float sx,
                           const int *sel, int k, int unit, float *row) {
    memset(row, 0, sizeof(float) * (size_t)in_f);
    for (int n = 0; n < batch; n++) {
        float v = gy[(size_t)n * out_f + unit] * sx;
        for (int s = 0; s < k; s++) row[sel[s]] += v * (float)saved[(size_t)n * k + s];
    }
}

void bp_update_row_q8(int8_t *w, float s, float *row, int n, float lr, float ratio) {
    if (ratio > 0.0f) {
        float wn = 0.0f, gn = 0.0f;
        for (int i = 0; i < n; i++) {
            float v = (float)w[i] * s;
            wn += v * v, gn += row[i] * row[i];
        }
        float limit = ratio * fmaxf(sqrtf(wn), 1e-3f);
        gn = sqrtf(gn);
        if (gn > limit) {
            float scale = limit / fmaxf(gn, 1e-12f);
            for (int i = 0; i < n; i++) row[i] *= scale;
        }
    }
    for (int i = 0; i < n; i++) w[i] = bp_q8((float)w[i] - (lr * row[i]) / s);
}
