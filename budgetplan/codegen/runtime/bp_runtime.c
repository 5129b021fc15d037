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

void bp_conv2d_q8(const bp_conv *c, const int8_t *x, const bp_w8 *w, const float *sw, float s, const float *b,
                  float r, int8_t *y) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            float m = sw[o] * s, shift = b ? b[o] * r : 0.0f;
            int8_t *yo = y + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
            for (int oh = 0; oh < c->out_h; oh++)
                for (int ow = 0; ow < c->out_w; ow++) {
                    int32_t acc = 0;
                    for (int j = 0; j < in_g; j++) {
                        const int8_t *xc = x + ((size_t)n * c->in_c + g * in_g + j) * c->in_h * c->in_w;
                        const int8_t *wc = bp_w8_read(w, o, j);
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
                    yo[oh * c->out_w + ow] = bp_q8((float)acc * m + shift);
                }
        }
}

void bp_linear_q8(int batch, int in_f, int out_f, const int8_t *x, const bp_w8 *w, const float *sw, float s,
                  const float *b, float r, int8_t *yq, float *yf) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_f; o++) {
            int32_t acc = 0;
            for (int i = 0; i < in_f; i++) acc += (int32_t)x[(size_t)n * in_f + i] * *bp_w8_read(w, o, i);
            float v = (float)acc * (sw[o] * s) + (b ? b[o] * r : 0.0f);
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

void bp_conv2d_grad_input_q8(const bp_conv *c, const float *gy, const bp_w8 *w, const float *sw, float *gx) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            const float *go = gy + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
            for (int j = 0; j < in_g; j++) {
                float *gxc = gx + ((size_t)n * c->in_c + g * in_g + j) * c->in_h * c->in_w;
                const int8_t *wc = bp_w8_read(w, o, j);
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

void bp_linear_grad_input_q8(int batch, int in_f, int out_f, const float *gy, const bp_w8 *w, const float *sw,
                             float *gx) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_f; o++) {
            float v = gy[(size_t)n * out_f + o] * sw[o];
            for (int i = 0; i < in_f; i++) gx[(size_t)n * in_f + i] += v * (float)*bp_w8_read(w, o, i);
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

void bp_update_row_q8(const bp_w8 *w, int o, float s, float *row, float lr, float ratio) {
    int taps = w->taps, n = w->in_g * taps;
    if (ratio > 0.0f) {
        float wn = 0.0f, gn = 0.0f;
        for (int j = 0; j < w->in_g; j++) {
            const int8_t *wj = bp_w8_read(w, o, j);
            for (int t = 0; t < taps; t++) {
                float v = (float)wj[t] * s;
                wn += v * v;
            }
        }
        for (int i = 0; i < n; i++) gn += row[i] * row[i];
        float limit = ratio * fmaxf(sqrtf(wn), 1e-3f);
        gn = sqrtf(gn);
        if (gn > limit) {
            float scale = limit / fmaxf(gn, 1e-12f);
            for (int i = 0; i < n; i++) row[i] *= scale;
        }
    }
    for (int j = 0; j < w->in_g; j++) { /* only the trained channels' codes change */
        int8_t *wj = bp_w8_trained(w, o, j);
        if (!wj) continue;
        for (int t = 0; t < taps; t++) wj[t] = bp_q8((float)wj[t] - (lr * row[j * taps + t]) / s);
    }
}

void bp_w8_select(const bp_w8 *w, int in_c, const int *sel, int k) {
    int16_t *slot = w->slot;
    if (!slot) { /* every channel trains */
        memcpy(w->trained, w->frozen, (size_t)in_c * w->out_g * w->taps);
        return;
    }
    for (int c = 0; c < in_c; c++) slot[c] = -1;
    for (int s = 0; s < k; s++) {
        int c = sel[s], g = c / w->in_g, j = c % w->in_g;
        for (int u = 0; u < w->out_g; u++)
            memcpy(w->trained + ((size_t)s * w->out_g + u) * w->taps,
                   w->frozen + ((size_t)(g * w->out_g + u) * w->in_g + j) * w->taps, (size_t)w->taps);
        slot[c] = (int16_t)s;
    }
}

/* int8 gradients: every writer is a contribution per element, combined in two passes */

typedef float (*contribution)(const void *ctx, size_t e);

static void combine(int8_t *g, float *gs, size_t n, contribution f, const void *ctx) {
    float old = *gs, top = 0.0f;
    for (size_t e = 0; e < n; e++) top = fmaxf(top, fabsf((float)g[e] * old + f(ctx, e)));
    float s = top > 0.0f ? top / 127.0f : 1.0f;
    for (size_t e = 0; e < n; e++) g[e] = bp_q8(((float)g[e] * old + f(ctx, e)) / s);
    *gs = s;
}

typedef struct {
    const float *logits, *top, *sum; /* each sample's largest logit and its softmax sum */
    const int *labels;
    int batch, classes;
} ce_ctx;

static float ce_at(const void *p, size_t e) {
    const ce_ctx *c = p;
    int n = (int)(e / (size_t)c->classes), k = (int)(e % (size_t)c->classes);
    float z = c->logits[e];
    return expf(z - c->top[n]) / c->sum[n] / (float)c->batch - (k == c->labels[n] ? 1.0f / (float)c->batch : 0.0f);
}

float bp_cross_entropy_g8(const float *logits, const int *labels, int batch, int classes, int8_t *g, float *gs) {
    float top[batch], sum[batch], loss = 0.0f; /* once per sample, not per element and pass */
    for (int n = 0; n < batch; n++) {
        const float *z = logits + (size_t)n * classes;
        top[n] = z[0], sum[n] = 0.0f;
        for (int j = 1; j < classes; j++) top[n] = z[j] > top[n] ? z[j] : top[n];
        for (int j = 0; j < classes; j++) sum[n] += expf(z[j] - top[n]);
        loss += (logf(sum[n]) + top[n] - z[labels[n]]) / (float)batch;
    }
    ce_ctx c = {logits, top, sum, labels, batch, classes};
    memset(g, 0, (size_t)batch * classes);
    *gs = 0.0f;
    combine(g, gs, (size_t)batch * classes, ce_at, &c);
    return loss;
}

typedef struct {
    const int8_t *gy;
    float gys;
    const uint8_t *mask;
    int positions;
} elementwise_ctx;

static float relu_at(const void *p, size_t e) {
    const elementwise_ctx *c = p;
    return (c->mask[e / 8] & (1u << (e % 8))) ? (float)c->gy[e] * c->gys : 0.0f;
}

static float identity_at(const void *p, size_t e) {
    const elementwise_ctx *c = p;
    return (float)c->gy[e] * c->gys;
}

static float pool_at(const void *p, size_t e) {
    const elementwise_ctx *c = p;
    return ((float)c->gy[e / (size_t)c->positions] * c->gys) / (float)c->positions;
}

void bp_relu_grad_g8(const int8_t *gy, float gys, const uint8_t *mask, size_t n, int8_t *gx, float *gxs) {
    elementwise_ctx c = {gy, gys, mask, 1};
    combine(gx, gxs, n, relu_at, &c);
}

void bp_accumulate_g8(const int8_t *gy, float gys, size_t n, int8_t *gx, float *gxs) {
    elementwise_ctx c = {gy, gys, NULL, 1};
    combine(gx, gxs, n, identity_at, &c);
}

void bp_avgpool_grad_g8(const int8_t *gy, float gys, int batch, int channels, int positions, int8_t *gx, float *gxs) {
    elementwise_ctx c = {gy, gys, NULL, positions};
    combine(gx, gxs, (size_t)batch * channels * positions, pool_at, &c);
}

typedef struct {
    const bp_conv *c;
    const int8_t *gy;
    const bp_w8 *w;
    const float *sw;
    float gys;
} conv_ctx;

static float conv_input_at(const void *p, size_t e) {
    const conv_ctx *x = p;
    const bp_conv *c = x->c;
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    int iw = (int)(e % (size_t)c->in_w), ih = (int)(e / (size_t)c->in_w % (size_t)c->in_h);
    int ch = (int)(e / ((size_t)c->in_w * c->in_h) % (size_t)c->in_c), n = (int)(e / ((size_t)c->in_w * c->in_h * c->in_c));
    int g = ch / in_g, j = ch % in_g;
    float acc = 0.0f;
    for (int o = g * out_g; o < (g + 1) * out_g; o++) {
        const int8_t *go = x->gy + ((size_t)n * c->out_c + o) * c->out_h * c->out_w;
        const int8_t *wc = bp_w8_read(x->w, o, j);
        float unit = 0.0f; /* products of codes: exact */
        for (int kh = 0; kh < c->k_h; kh++) {
            int th = ih + c->pad_h - kh;
            if (th < 0 || th % c->stride_h || th / c->stride_h >= c->out_h) continue;
            for (int kw = 0; kw < c->k_w; kw++) {
                int tw = iw + c->pad_w - kw;
                if (tw < 0 || tw % c->stride_w || tw / c->stride_w >= c->out_w) continue;
                unit += (float)go[(th / c->stride_h) * c->out_w + tw / c->stride_w] * (float)wc[kh * c->k_w + kw];
            }
        }
        acc += unit * x->sw[o];
    }
    return acc * x->gys;
}

void bp_conv2d_grad_input_g8(const bp_conv *c, const int8_t *gy, float gys, const bp_w8 *w, const float *sw,
                             int8_t *gx, float *gxs) {
    conv_ctx x = {c, gy, w, sw, gys};
    combine(gx, gxs, (size_t)c->batch * c->in_c * c->in_h * c->in_w, conv_input_at, &x);
}

typedef struct {
    int in_f, out_f;
    const int8_t *gy;
    const bp_w8 *w;
    const float *sw;
    float gys;
} linear_ctx;

static float linear_input_at(const void *p, size_t e) {
    const linear_ctx *x = p;
    int n = (int)(e / (size_t)x->in_f), i = (int)(e % (size_t)x->in_f);
    float acc = 0.0f;
    for (int o = 0; o < x->out_f; o++)
        acc += ((float)x->gy[(size_t)n * x->out_f + o] * (float)*bp_w8_read(x->w, o, i)) * x->sw[o];
    return acc * x->gys;
}

void bp_linear_grad_input_g8(int batch, int in_f, int out_f, const int8_t *gy, float gys, const bp_w8 *w,
                             const float *sw, int8_t *gx, float *gxs) {
    linear_ctx x = {in_f, out_f, gy, w, sw, gys};
    combine(gx, gxs, (size_t)batch * in_f, linear_input_at, &x);
}

void bp_conv2d_grad_row_g8(const bp_conv *c, const int8_t *gy, float gys, const int8_t *saved, float sx,
                           const int *sel, int k, int unit, float *row) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups, g = unit / out_g, taps = c->k_h * c->k_w;
    float scale = gys * sx;
    memset(row, 0, sizeof(float) * (size_t)in_g * taps);
    for (int s = 0; s < k; s++) {
        if (sel[s] / in_g != g) continue;
        float *rw = row + (size_t)(sel[s] % in_g) * taps;
        for (int n = 0; n < c->batch; n++) {
            const int8_t *go = gy + ((size_t)n * c->out_c + unit) * c->out_h * c->out_w;
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
                            acc += (float)go[oh * c->out_w + ow] * (float)xs[ih * c->in_w + iw];
                        }
                    }
                    rw[kh * c->k_w + kw] += acc * scale;
                }
        }
    }
}

void bp_linear_grad_row_g8(int batch, int in_f, int out_f, const int8_t *gy, float gys, const int8_t *saved, float sx,
                           const int *sel, int k, int unit, float *row) {
    memset(row, 0, sizeof(float) * (size_t)in_f);
    for (int n = 0; n < batch; n++) {
        float v = (float)gy[(size_t)n * out_f + unit] * (gys * sx);
        for (int s = 0; s < k; s++) row[sel[s]] += v * (float)saved[(size_t)n * k + s];
    }
}

void bp_update_bias_g8(const int8_t *gy, float gys, int batch, int channels, int positions, float lr, float *b) {
    for (int o = 0; o < channels; o++) {
        float acc = 0.0f; /* a sum of codes: exact below 2^24 */
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < positions; p++) acc += (float)gy[((size_t)n * channels + o) * positions + p];
        b[o] -= lr * (acc * gys);
    }
}

/* the patch stage */

void bp_conv2d_patch_q8(const bp_conv *c, const int8_t *x, bp_window xw, const int8_t *w, const float *sw, float s,
                        const float *b, float r, int8_t *y, bp_window yw, bp_window out) {
    int in_g = c->in_c / c->groups, out_g = c->out_c / c->groups;
    size_t x_plane = (size_t)xw.height * xw.width, y_plane = (size_t)yw.height * yw.width;
    for (int n = 0; n < c->batch; n++)
        for (int o = 0; o < c->out_c; o++) {
            int g = o / out_g;
            float m = sw[o] * s, shift = b ? b[o] * r : 0.0f;
            int8_t *yo = y + ((size_t)n * c->out_c + o) * y_plane;
            for (int oh = out.row; oh < out.row + out.height; oh++)
                for (int ow = out.col; ow < out.col + out.width; ow++) {
                    int32_t acc = 0;
                    for (int j = 0; j < in_g; j++) {
                        const int8_t *xc = x + ((size_t)n * c->in_c + g * in_g + j) * x_plane;
                        const int8_t *wc = w + ((size_t)o * in_g + j) * c->k_h * c->k_w;
                        for (int kh = 0; kh < c->k_h; kh++) {
                            int ih = oh * c->stride_h - c->pad_h + kh;
                            if (ih < 0 || ih >= c->in_h) continue; /* the whole input's padding */
                            for (int kw = 0; kw < c->k_w; kw++) {
                                int iw = ow * c->stride_w - c->pad_w + kw;
                                if (iw < 0 || iw >= c->in_w) continue;
                                acc += (int32_t)xc[(size_t)(ih - xw.row) * xw.width + (iw - xw.col)] * wc[kh * c->k_w + kw];
                            }
                        }
                    }
                    yo[(size_t)(oh - yw.row) * yw.width + (ow - yw.col)] = bp_q8((float)acc * m + shift);
                }
        }
}

void bp_relu_patch_q8(int8_t *y, bp_window yw, bp_window out, int batch, int channels, int cap) {
    size_t plane = (size_t)yw.height * yw.width;
    for (int p = 0; p < batch * channels; p++)
        for (int h = out.row; h < out.row + out.height; h++)
            for (int w = out.col; w < out.col + out.width; w++) {
                int8_t *v = y + (size_t)p * plane + (size_t)(h - yw.row) * yw.width + (w - yw.col);
                int q = *v > 0 ? *v : 0;
                *v = (int8_t)((cap > 0 && q > cap) ? cap : q);
            }
}

/* in-place depthwise convolutions: one plane at a time through a one-plane buffer */

void bp_dwconv_inplace(const bp_conv *c, float *x, const float *w, const float *b, float *plane) {
    bp_conv one = *c;
    size_t in_plane = (size_t)c->in_h * c->in_w, out_plane = (size_t)c->out_h * c->out_w;
    one.batch = 1, one.in_c = 1, one.out_c = 1, one.groups = 1;
    for (int n = 0; n < c->batch; n++)
        for (int ch = 0; ch < c->in_c; ch++) {
            size_t at = (size_t)n * c->in_c + ch;
            bp_conv2d(&one, x + at * in_plane, w + (size_t)ch * c->k_h * c->k_w, b ? b + ch : NULL, plane);
            memcpy(x + at * out_plane, plane, sizeof(float) * out_plane);
        }
}

void bp_dwconv_inplace_q8(const bp_conv *c, int8_t *x, const bp_w8 *w, const float *sw, float s, const float *b,
                          float r, int8_t *plane) {
    bp_conv one = *c;
    size_t in_plane = (size_t)c->in_h * c->in_w, out_plane = (size_t)c->out_h * c->out_w;
    one.batch = 1, one.in_c = 1, one.out_c = 1, one.groups = 1;
    for (int n = 0; n < c->batch; n++)
        for (int ch = 0; ch < c->in_c; ch++) {
            size_t at = (size_t)n * c->in_c + ch;
            bp_w8 unit = {bp_w8_read(w, ch, 0), NULL, NULL, 1, 1, w->taps}; /* this channel's taps */
            bp_conv2d_q8(&one, x + at * in_plane, &unit, sw + ch, s, b ? b + ch : NULL, r, plane);
            memcpy(x + at * out_plane, plane, out_plane);
        }
}
