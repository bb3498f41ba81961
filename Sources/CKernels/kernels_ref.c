// Portable scalar reference kernels: the definition every SIMD path is tested against, and the path
// used where no SIMD path applies (BLIP2_ISA=ref).
#include "kernels_internal.h"
#include "kquants_internal.h"
#include <math.h>

static void quantize_q8a_ref(const float *x, blip2_block_q8a *y, size_t n) {
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        const float *xb = x + b * BLIP2_QBLOCK;
        float amax = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float d = blip2_q8a_scale(amax), inverse = blip2_q8a_inverse(d);
        int sum = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) {
            float v = fmaxf(fminf(xb[i] * inverse, 127.0f), -127.0f);
            int q = (int)rintf(v);   // the SIMD paths convert with round-to-nearest-even too
            y[b].qs[i] = (int8_t)q;
            sum += q;
        }
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
}

// q8k: one scale per 256 inputs; a short last block is padded with zeros (levels and sums 0).
void blip2_quantize_q8k_ref(const float *x, blip2_block_q8k *y, size_t n) {
    for (size_t b = 0; b * BLIP2_SUPERBLOCK < n; b++) {
        size_t count = blip2_superblock_count(n, b);
        const float *xb = x + b * BLIP2_SUPERBLOCK;
        float amax = 0;
        for (size_t i = 0; i < count; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float d = blip2_q8a_scale(amax), inverse = blip2_q8a_inverse(d);
        memset(&y[b], 0, sizeof y[b]);
        y[b].d = d;
        for (size_t i = 0; i < count; i++) {
            int q = (int)rintf(fmaxf(fminf(xb[i] * inverse, 127.0f), -127.0f));
            y[b].qs[i] = (int8_t)q;
            y[b].sums[i / 16] = (int16_t)(y[b].sums[i / 16] + q);
        }
    }
}

static float vec_dot_q8_q8a_ref(const blip2_block_q8 *w, const blip2_block_q8a *x, size_t nb) {
    float sum = 0;
    for (size_t b = 0; b < nb; b++) {
        int dot = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) dot += (int)w[b].qs[i] * (int)x[b].qs[i];
        sum += (float)dot * (blip2_f16_to_f32(w[b].d) * x[b].d);
    }
    return sum;
}

static float vec_dot_q4_q8a_ref(const blip2_block_q4 *w, const blip2_block_q8a *x, size_t nb) {
    float sum = 0;
    for (size_t b = 0; b < nb; b++) {
        int dot = 0;
        for (int i = 0; i < BLIP2_QBLOCK / 2; i++) {
            dot += (int)(w[b].qs[i] & 0x0f) * (int)x[b].qs[i];
            dot += (int)(w[b].qs[i] >> 4) * (int)x[b].qs[i + BLIP2_QBLOCK / 2];
        }
        sum += (float)dot * (blip2_f16_to_f32(w[b].d) * x[b].d) + blip2_f16_to_f32(w[b].m) * x[b].s;
    }
    return sum;
}

static float vec_dot_f32_ref(const float *w, const float *x, size_t n) {
    float sum = 0;
    for (size_t i = 0; i < n; i++) sum += w[i] * x[i];
    return sum;
}

static float vec_dot_f16_ref(const uint16_t *w, const float *x, size_t n) {
    float sum = 0;
    for (size_t i = 0; i < n; i++) sum += blip2_f16_to_f32(w[i]) * x[i];
    return sum;
}

static void exp_row_ref(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

static void softmax_ref(float *x, size_t n) {
    float maximum = -INFINITY, sum = 0;
    for (size_t i = 0; i < n; i++) maximum = fmaxf(maximum, x[i]);
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - maximum);
        sum += x[i];
    }
    float inverse = 1 / sum;
    for (size_t i = 0; i < n; i++) x[i] *= inverse;
}

static void gelu_ref(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = blip2_gelu_ref(x[i]);
}

static void gemm_f32_ref(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                         float *c, size_t ldc) {
    blip2_gemm_f32_columns(m, 0, n, k, alpha, a, lda, b, ldb, c, ldc);
}

static void tile_q8_ref(const void *const *w, const void *const *x, size_t n, float *out) {
    out[0] = vec_dot_q8_q8a_ref(w[0], x[0], n / BLIP2_QBLOCK);
}
static void tile_q4_ref(const void *const *w, const void *const *x, size_t n, float *out) {
    out[0] = vec_dot_q4_q8a_ref(w[0], x[0], n / BLIP2_QBLOCK);
}
static void tile_f32_ref(const void *const *w, const void *const *x, size_t n, float *out) {
    out[0] = vec_dot_f32_ref(w[0], x[0], n);
}
static void tile_f16_ref(const void *const *w, const void *const *x, size_t n, float *out) {
    out[0] = vec_dot_f16_ref(w[0], x[0], n);
}

// Panels: the same sums as the row formats (per block: an integer dot product, then the scales), row by row.
static void tile_q8p_ref(const void *const *w, const void *const *x, size_t n, float *out) {
    const blip2_panel_q8 *panel = w[0];
    const blip2_block_q8a *a = x[0];
    for (int r = 0; r < BLIP2_PANEL_ROWS; r++) {
        float sum = 0;
        for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
            int dot = 0;
            for (int k = 0; k < BLIP2_QBLOCK; k++) dot += (int)panel[b].qs[32 * (k / 4) + 4 * r + k % 4] * (int)a[b].qs[k];
            sum += (float)dot * (blip2_f16_to_f32(panel[b].d[r]) * a[b].d);
        }
        out[r] = sum;
    }
}

static void tile_q4p_ref(const void *const *w, const void *const *x, size_t n, float *out) {
    const blip2_panel_q4 *panel = w[0];
    const blip2_block_q8a *a = x[0];
    for (int r = 0; r < BLIP2_PANEL_ROWS; r++) {
        float sum = 0;
        for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
            int dot = 0;
            for (int k = 0; k < BLIP2_QBLOCK; k++) {
                int g = k / 4;
                uint8_t byte = panel[b].qs[32 * (g / 2) + 4 * r + k % 4];
                dot += (int)(g % 2 ? byte >> 4 : byte & 0x0f) * (int)a[b].qs[k];
            }
            sum += (float)dot * (blip2_f16_to_f32(panel[b].d[r]) * a[b].d) + blip2_f16_to_f32(panel[b].m[r]) * a[b].s;
        }
        out[r] = sum;
    }
}

// Super-block formats, row by row: per sub-block an integer dot product times the integer sub-scale, the
// value offset (q3k, q6k) or the minimum (q4k) taken from the activation's 16-input sums; then one float
// step per super-block and row. Every SIMD path computes the same integers.
static void tile_kq_ref(const void *const *w, const void *const *x, size_t n, float *out, uint32_t type) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    const blip2_block_q8k *a = x[0];
    const size_t full = blip2_kq_superblock_bytes(f, BLIP2_SUPERBLOCK);
    for (int r = 0; r < BLIP2_PANEL_ROWS; r++) {
        float sum = 0;
        for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
            const char *block = (const char *)w[0] + s * full;
            size_t count = blip2_superblock_count(n, s);
            int32_t dot = 0, minimum = 0;
            for (size_t j = 0; j * (size_t)f->sub < count; j++) {
                int32_t part = 0, sums = 0;
                for (size_t i = j * f->sub; i < (j + 1) * f->sub; i++) part += (int32_t)blip2_kq_get_value(f, block, r, i) * a[s].qs[i];
                for (size_t k = j * f->sub / 16; k < (j + 1) * f->sub / 16; k++) sums += a[s].sums[k];
                dot += blip2_kq_get_scale(f, block, 8 * j + r) * (part - f->offset * sums);
                if (f->has_min) minimum += blip2_kq_get_min(block, 8 * j + r) * sums;
            }
            const uint16_t *scales = (const uint16_t *)block;
            sum += (float)dot * (blip2_f16_to_f32(scales[r]) * a[s].d);
            if (f->has_min) sum -= (float)minimum * (blip2_f16_to_f32(scales[BLIP2_PANEL_ROWS + r]) * a[s].d);
        }
        out[r] = sum;
    }
}

static void tile_q4k_ref(const void *const *w, const void *const *x, size_t n, float *out) { tile_kq_ref(w, x, n, out, BLIP2_TYPE_Q4K); }
static void tile_q3k_ref(const void *const *w, const void *const *x, size_t n, float *out) { tile_kq_ref(w, x, n, out, BLIP2_TYPE_Q3K); }
static void tile_q6k_ref(const void *const *w, const void *const *x, size_t n, float *out) { tile_kq_ref(w, x, n, out, BLIP2_TYPE_Q6K); }

void blip2_store_tile_ref(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                          float *y, size_t ldy) {
    (void)rows;
    for (size_t t = 0; t < nt; t++) {
        float *yt = y + t * ldy;
        for (size_t r = 0; r < nr; r++) yt[r] = bias ? out[r * tokens + t] + bias[r] : out[r * tokens + t];
    }
}

// Scalar multiply-adds in four independent chains; `volatile` keeps the compiler from folding the loop.
static uint64_t int8_peak_ref(uint64_t iterations) {
    volatile int32_t seed = 3;
    int32_t a0 = seed, a1 = seed + 1, a2 = seed + 2, a3 = seed + 3, m = seed;
    for (uint64_t i = 0; i < iterations; i++) {
        a0 += (int8_t)a1 * (int8_t)m;
        a1 += (int8_t)a2 * (int8_t)m;
        a2 += (int8_t)a3 * (int8_t)m;
        a3 += (int8_t)a0 * (int8_t)m;
    }
    seed = a0 + a1 + a2 + a3;
    return iterations * 4 * 2;
}

const blip2_kernels blip2_kernels_ref = {
    .isa = BLIP2_ISA_REF,
    .name = "ref",
    .quantize_q8a = quantize_q8a_ref,
    .quantize_q8k = blip2_quantize_q8k_ref,
    .exp_row = exp_row_ref,
    .softmax = softmax_ref,
    .gelu = gelu_ref,
    .matvec = {
        [BLIP2_TYPE_F32] = {tile_f32_ref, 1, 1}, [BLIP2_TYPE_F16] = {tile_f16_ref, 1, 1},
        [BLIP2_TYPE_Q8] = {tile_q8_ref, 1, 1}, [BLIP2_TYPE_Q4] = {tile_q4_ref, 1, 1},
        [BLIP2_TYPE_Q8P] = {tile_q8p_ref, BLIP2_PANEL_ROWS, 1}, [BLIP2_TYPE_Q4P] = {tile_q4p_ref, BLIP2_PANEL_ROWS, 1},
        [BLIP2_TYPE_Q4K] = {tile_q4k_ref, BLIP2_PANEL_ROWS, 1}, [BLIP2_TYPE_Q3K] = {tile_q3k_ref, BLIP2_PANEL_ROWS, 1},
        [BLIP2_TYPE_Q6K] = {tile_q6k_ref, BLIP2_PANEL_ROWS, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {tile_f32_ref, 1, 1}, [BLIP2_TYPE_F16] = {tile_f16_ref, 1, 1},
        [BLIP2_TYPE_Q8] = {tile_q8_ref, 1, 1}, [BLIP2_TYPE_Q4] = {tile_q4_ref, 1, 1},
        [BLIP2_TYPE_Q8P] = {tile_q8p_ref, BLIP2_PANEL_ROWS, 1}, [BLIP2_TYPE_Q4P] = {tile_q4p_ref, BLIP2_PANEL_ROWS, 1},
        [BLIP2_TYPE_Q4K] = {tile_q4k_ref, BLIP2_PANEL_ROWS, 1}, [BLIP2_TYPE_Q3K] = {tile_q3k_ref, BLIP2_PANEL_ROWS, 1},
        [BLIP2_TYPE_Q6K] = {tile_q6k_ref, BLIP2_PANEL_ROWS, 1},
    },
    .int8_peak = int8_peak_ref,
    .gemm_f32 = gemm_f32_ref,
    .store_tile = blip2_store_tile_ref,
};
