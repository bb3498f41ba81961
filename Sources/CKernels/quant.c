// Block quantization (reference implementations). The converter runs these once per weight, so they
// favour accuracy over speed: q4 searches its scale and minimum per block.
#include "blip2_kernels.h"
#include <math.h>
#include <string.h>

static inline float f16_round(float x) { return blip2_f16_to_f32(blip2_f32_to_f16(x)); }

// MARK: - q8

void blip2_quantize_row_q8(const float *src, blip2_block_q8 *dst, size_t n) {
    blip2_quantize_row_q8_weighted(src, NULL, dst, n);
}

// Levels for an (f16-representable) scale, and their weighted squared error.
static float q8_levels(const float *x, const float *w, float d, int8_t *q) {
    float inv = d > 0 ? 1.0f / d : 0, err = 0;
    for (int i = 0; i < BLIP2_QBLOCK; i++) {
        q[i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, roundf(x[i] * inv)));
        float e = x[i] - d * (float)q[i];
        err += (w ? w[i] : 1.0f) * e * e;
    }
    return err;
}

// The max/127 scale (the plain fit, and all of it without importance); with importance, scales around it as
// well (a smaller one clips the largest value to buy finer steps for the rest), each refit by weighted least
// squares for its levels; the lowest weighted error is kept.
void blip2_quantize_row_q8_weighted(const float *src, const float *importance, blip2_block_q8 *dst, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        const float *x = src + b * BLIP2_QBLOCK, *w = importance ? importance + b * BLIP2_QBLOCK : NULL;
        float amax = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) amax = fmaxf(amax, fabsf(x[i]));
        // The stored (f16) scale is the one the runtime multiplies by, so quantize against it.
        float d = f16_round(fminf(amax / 127.0f, 65504.0f));
        int8_t q[BLIP2_QBLOCK], candidate[BLIP2_QBLOCK];
        float best = q8_levels(x, w, d, q);
        for (int k = -4; w && d > 0 && k <= 4; k++) {
            if (k == 0) continue;
            float trial = f16_round(amax / (127.0f + 3.0f * (float)k));
            q8_levels(x, w, trial, candidate);
            double swqq = 0, swqx = 0;
            for (int i = 0; i < BLIP2_QBLOCK; i++) { swqq += w[i] * candidate[i] * candidate[i]; swqx += w[i] * candidate[i] * x[i]; }
            if (swqq > 0 && swqx > 0) trial = f16_round(fminf((float)(swqx / swqq), 65504.0f));
            float err = q8_levels(x, w, trial, candidate);
            if (err < best) { best = err; d = trial; memcpy(q, candidate, sizeof q); }
        }
        dst[b].d = blip2_f32_to_f16(d);
        memcpy(dst[b].qs, q, sizeof q);
    }
}

void blip2_dequantize_row_q8(const blip2_block_q8 *src, float *dst, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        float d = blip2_f16_to_f32(src[b].d);
        for (int i = 0; i < BLIP2_QBLOCK; i++) dst[b * BLIP2_QBLOCK + i] = d * (float)src[b].qs[i];
    }
}

// MARK: - q4

// Weighted squared error of quantizing x with the given (already f16-representable) scale and minimum.
static float q4_error(const float *x, const float *w, float d, float m, uint8_t *q) {
    float inv = d > 0 ? 1.0f / d : 0, err = 0;
    for (int i = 0; i < BLIP2_QBLOCK; i++) {
        float v = roundf((x[i] - m) * inv);
        v = fmaxf(0.0f, fminf(15.0f, v));
        q[i] = (uint8_t)v;
        float e = x[i] - (d * v + m);
        err += w[i] * e * e;
    }
    return err;
}

// Starts from the min/max fit, then alternates "quantize with (d, m)" and "least-squares (d, m) for these
// levels"; the second step is what lowers the error below plain min/max rounding (docs/FORMAT.md).
// The weights w are the inputs' importance (all 1 for the plain fit: the sums are then exactly the unweighted ones).
static void q4_fit(const float *x, const float *w, float *best_d, float *best_m, uint8_t *best_q) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < BLIP2_QBLOCK; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
    float d = f16_round(fminf((hi - lo) / 15.0f, 65504.0f)), m = f16_round(lo);
    uint8_t q[BLIP2_QBLOCK];
    float best = q4_error(x, w, d, m, best_q);
    *best_d = d; *best_m = m;
    if (hi == lo) return;
    for (int iter = 0; iter < 4; iter++) {
        double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) {
            double qi = (iter == 0 ? best_q : q)[i];
            sw += w[i]; sq += w[i] * qi; sqq += w[i] * qi * qi; sx += w[i] * x[i]; sqx += w[i] * qi * x[i];
        }
        double det = sw * sqq - sq * sq;
        if (det <= 0) break;
        float nd = (float)((sw * sqx - sq * sx) / det);
        float nm = (float)((sqq * sx - sq * sqx) / det);
        if (!(nd > 0)) break;
        nd = f16_round(fminf(nd, 65504.0f));
        nm = f16_round(nm);
        float err = q4_error(x, w, nd, nm, q);
        if (err < best) {
            best = err; *best_d = nd; *best_m = nm;
            for (int i = 0; i < BLIP2_QBLOCK; i++) best_q[i] = q[i];
        }
    }
}

void blip2_quantize_row_q4(const float *src, blip2_block_q4 *dst, size_t n) {
    blip2_quantize_row_q4_weighted(src, NULL, dst, n);
}

void blip2_quantize_row_q4_weighted(const float *src, const float *importance, blip2_block_q4 *dst, size_t n) {
    static const float ones[BLIP2_QBLOCK] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                             1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        float d, m, w[BLIP2_QBLOCK];
        uint8_t q[BLIP2_QBLOCK];
        // A block whose inputs were never driven (all importance 0) has nothing to weigh: plain fit.
        float total = 0;
        for (int i = 0; importance && i < BLIP2_QBLOCK; i++) total += w[i] = fmaxf(importance[b * BLIP2_QBLOCK + i], 0.0f);
        q4_fit(src + b * BLIP2_QBLOCK, importance && total > 0 && isfinite(total) ? w : ones, &d, &m, q);
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

// MARK: - Panels (q8p, q4p): the row formats' blocks of 8 rows interleaved

void blip2_pack_q8(const blip2_block_q8 *block, size_t row, blip2_panel_q8 *panel) {
    panel->d[row] = block->d;
    for (int g = 0; g < BLIP2_QBLOCK / 4; g++) memcpy(panel->qs + 32 * g + 4 * row, block->qs + 4 * g, 4);
}

void blip2_unpack_q8(const blip2_panel_q8 *panel, size_t row, blip2_block_q8 *block) {
    block->d = panel->d[row];
    for (int g = 0; g < BLIP2_QBLOCK / 4; g++) memcpy(block->qs + 4 * g, panel->qs + 32 * g + 4 * row, 4);
}

// Value k (0..31) of a q4 block, and where value k of panel row `row` lives: group g = k / 4 sits in run
// g / 2, byte 4 * row + k % 4, low nibble for even groups.
static inline uint8_t q4_value(const blip2_block_q4 *b, int k) {
    return k < 16 ? b->qs[k] & 0x0f : b->qs[k - 16] >> 4;
}

void blip2_pack_q4(const blip2_block_q4 *block, size_t row, blip2_panel_q4 *panel) {
    panel->d[row] = block->d;
    panel->m[row] = block->m;
    for (int k = 0; k < BLIP2_QBLOCK; k++) {
        int g = k / 4;
        uint8_t *byte = panel->qs + 32 * (g / 2) + 4 * row + k % 4;
        *byte = g % 2 ? (uint8_t)((*byte & 0x0f) | q4_value(block, k) << 4) : (uint8_t)((*byte & 0xf0) | q4_value(block, k));
    }
}

void blip2_unpack_q4(const blip2_panel_q4 *panel, size_t row, blip2_block_q4 *block) {
    block->d = panel->d[row];
    block->m = panel->m[row];
    uint8_t q[BLIP2_QBLOCK];
    for (int k = 0; k < BLIP2_QBLOCK; k++) {
        int g = k / 4;
        uint8_t byte = panel->qs[32 * (g / 2) + 4 * row + k % 4];
        q[k] = g % 2 ? byte >> 4 : byte & 0x0f;
    }
    for (int i = 0; i < BLIP2_QBLOCK / 2; i++) block->qs[i] = (uint8_t)(q[i] | q[i + BLIP2_QBLOCK / 2] << 4);
}

void blip2_quantize_panels_q8(const float *src, size_t rows, size_t cols, blip2_panel_q8 *dst) {
    blip2_quantize_panels_q8_weighted(src, rows, cols, NULL, dst);
}

void blip2_quantize_panels_q8_weighted(const float *src, size_t rows, size_t cols, const float *importance, blip2_panel_q8 *dst) {
    size_t nb = cols / BLIP2_QBLOCK, panels = (rows + BLIP2_PANEL_ROWS - 1) / BLIP2_PANEL_ROWS;
    memset(dst, 0, panels * nb * sizeof *dst);
    for (size_t r = 0; r < rows; r++) {
        for (size_t b = 0; b < nb; b++) {
            blip2_block_q8 block;
            blip2_quantize_row_q8_weighted(src + r * cols + b * BLIP2_QBLOCK, importance ? importance + b * BLIP2_QBLOCK : NULL, &block, BLIP2_QBLOCK);
            blip2_pack_q8(&block, r % BLIP2_PANEL_ROWS, dst + r / BLIP2_PANEL_ROWS * nb + b);
        }
    }
}

void blip2_quantize_panels_q4(const float *src, size_t rows, size_t cols, blip2_panel_q4 *dst) {
    blip2_quantize_panels_q4_weighted(src, rows, cols, NULL, dst);
}

void blip2_quantize_panels_q4_weighted(const float *src, size_t rows, size_t cols, const float *importance, blip2_panel_q4 *dst) {
    size_t nb = cols / BLIP2_QBLOCK, panels = (rows + BLIP2_PANEL_ROWS - 1) / BLIP2_PANEL_ROWS;
    memset(dst, 0, panels * nb * sizeof *dst);
    for (size_t r = 0; r < rows; r++) {
        for (size_t b = 0; b < nb; b++) {
            blip2_block_q4 block;
            blip2_quantize_row_q4_weighted(src + r * cols + b * BLIP2_QBLOCK, importance ? importance + b * BLIP2_QBLOCK : NULL, &block, BLIP2_QBLOCK);
            blip2_pack_q4(&block, r % BLIP2_PANEL_ROWS, dst + r / BLIP2_PANEL_ROWS * nb + b);
        }
    }
}

void blip2_dequantize_panel_row_q8(const blip2_panel_q8 *panels, size_t row, float *dst, size_t cols) {
    for (size_t b = 0; b < cols / BLIP2_QBLOCK; b++) {
        blip2_block_q8 block;
        blip2_unpack_q8(panels + b, row, &block);
        blip2_dequantize_row_q8(&block, dst + b * BLIP2_QBLOCK, BLIP2_QBLOCK);
    }
}

void blip2_dequantize_panel_row_q4(const blip2_panel_q4 *panels, size_t row, float *dst, size_t cols) {
    for (size_t b = 0; b < cols / BLIP2_QBLOCK; b++) {
        blip2_block_q4 block;
        blip2_unpack_q4(panels + b, row, &block);
        blip2_dequantize_row_q4(&block, dst + b * BLIP2_QBLOCK, BLIP2_QBLOCK);
    }
}
