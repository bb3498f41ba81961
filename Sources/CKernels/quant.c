// Block quantization (reference implementations). The converter runs these once per weight, so they
// favour accuracy over speed: q4 searches its scale and minimum per block.
#include "blip2_kernels.h"
#include <math.h>

static inline float f16_round(float x) { return blip2_f16_to_f32(blip2_f32_to_f16(x)); }

// MARK: - q8

void blip2_quantize_row_q8(const float *src, blip2_block_q8 *dst, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        const float *x = src + b * BLIP2_QBLOCK;
        float amax = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) amax = fmaxf(amax, fabsf(x[i]));
        // The stored (f16) scale is the one the runtime multiplies by, so quantize against it.
        float d = f16_round(fminf(amax / 127.0f, 65504.0f));
        float inv = d > 0 ? 1.0f / d : 0;
        dst[b].d = blip2_f32_to_f16(d);
        for (int i = 0; i < BLIP2_QBLOCK; i++) {
            float q = roundf(x[i] * inv);
            dst[b].qs[i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, q));
        }
    }
}

void blip2_dequantize_row_q8(const blip2_block_q8 *src, float *dst, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        float d = blip2_f16_to_f32(src[b].d);
        for (int i = 0; i < BLIP2_QBLOCK; i++) dst[b * BLIP2_QBLOCK + i] = d * (float)src[b].qs[i];
    }
}

// MARK: - q4

// Squared error of quantizing x with the given (already f16-representable) scale and minimum.
static float q4_error(const float *x, float d, float m, uint8_t *q) {
    float inv = d > 0 ? 1.0f / d : 0, err = 0;
    for (int i = 0; i < BLIP2_QBLOCK; i++) {
        float v = roundf((x[i] - m) * inv);
        v = fmaxf(0.0f, fminf(15.0f, v));
        q[i] = (uint8_t)v;
        float e = x[i] - (d * v + m);
        err += e * e;
    }
    return err;
}

// Starts from the min/max fit, then alternates "quantize with (d, m)" and "least-squares (d, m) for these
// levels"; the second step is what lowers the error below plain min/max rounding (docs/FORMAT.md).
static void q4_fit(const float *x, float *best_d, float *best_m, uint8_t *best_q) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < BLIP2_QBLOCK; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
    float d = f16_round(fminf((hi - lo) / 15.0f, 65504.0f)), m = f16_round(lo);
    uint8_t q[BLIP2_QBLOCK];
    float best = q4_error(x, d, m, best_q);
    *best_d = d; *best_m = m;
    if (hi == lo) return;
    for (int iter = 0; iter < 4; iter++) {
        double sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) {
            double qi = (iter == 0 ? best_q : q)[i];
            sq += qi; sqq += qi * qi; sx += x[i]; sqx += qi * x[i];
        }
        double det = BLIP2_QBLOCK * sqq - sq * sq;
        if (det <= 0) break;
        float nd = (float)((BLIP2_QBLOCK * sqx - sq * sx) / det);
        float nm = (float)((sqq * sx - sq * sqx) / det);
        if (!(nd > 0)) break;
        nd = f16_round(fminf(nd, 65504.0f));
        nm = f16_round(nm);
        float err = q4_error(x, nd, nm, q);
        if (err < best) {
            best = err; *best_d = nd; *best_m = nm;
            for (int i = 0; i < BLIP2_QBLOCK; i++) best_q[i] = q[i];
        }
    }
}

void blip2_quantize_row_q4(const float *src, blip2_block_q4 *dst, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        float d, m;
        uint8_t q[BLIP2_QBLOCK];
        q4_fit(src + b * BLIP2_QBLOCK, &d, &m, q);
        dst[b].d = blip2_f32_to_f16(d);
        dst[b].m = blip2_f32_to_f16(m);
        for (int i = 0; i < BLIP2_QBLOCK / 2; i++) dst[b].qs[i] = (uint8_t)(q[i] | (q[i + BLIP2_QBLOCK / 2] << 4));
    }
}

void blip2_dequantize_row_q4(const blip2_block_q4 *src, float *dst, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        float d = blip2_f16_to_f32(src[b].d), m = blip2_f16_to_f32(src[b].m);
        float *y = dst + b * BLIP2_QBLOCK;
        for (int i = 0; i < BLIP2_QBLOCK / 2; i++) {
            y[i] = d * (float)(src[b].qs[i] & 0x0f) + m;
            y[i + BLIP2_QBLOCK / 2] = d * (float)(src[b].qs[i] >> 4) + m;
        }
    }
}
