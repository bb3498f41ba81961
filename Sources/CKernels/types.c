// The storage types: one traits row each (blip2_kernels.h). Everything else that needs a block size, a
// byte count or a conversion reads it from here.
#include "kquants_internal.h"
#include <string.h>

// MARK: - Row access

// Bytes of one row group of a matrix with `cols` inputs: whole blocks, then a short one where the type has them.
static size_t group_bytes(const blip2_type_traits *t, size_t cols) {
    size_t tail = cols % t->block_elements;
    size_t tail_bytes = tail ? t->header_bytes + tail * (t->block_bytes - t->header_bytes) / t->block_elements : 0;
    return cols / t->block_elements * t->block_bytes + tail_bytes;
}

static void f32_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    memcpy(dst, (const float *)m + row * cols, cols * sizeof(float));
}
static void f16_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    blip2_f16_to_f32_row((const uint16_t *)m + row * cols, dst, cols);
}
static void bf16_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    blip2_bf16_to_f32_row((const uint16_t *)m + row * cols, dst, cols);
}
static void q8_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    blip2_dequantize_row_q8((const blip2_block_q8 *)m + row * (cols / BLIP2_QBLOCK), dst, cols);
}
static void q4_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    blip2_dequantize_row_q4((const blip2_block_q4 *)m + row * (cols / BLIP2_QBLOCK), dst, cols);
}
static void q8p_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    const blip2_panel_q8 *panel = (const blip2_panel_q8 *)m + row / BLIP2_PANEL_ROWS * (cols / BLIP2_QBLOCK);
    blip2_dequantize_panel_row_q8(panel, row % BLIP2_PANEL_ROWS, dst, cols);
}
static void q4p_to_f32(const void *m, size_t row, size_t cols, float *dst) {
    const blip2_panel_q4 *panel = (const blip2_panel_q4 *)m + row / BLIP2_PANEL_ROWS * (cols / BLIP2_QBLOCK);
    blip2_dequantize_panel_row_q4(panel, row % BLIP2_PANEL_ROWS, dst, cols);
}

static void f32_from_f32(const float *src, size_t rows, size_t cols, void *m) { memcpy(m, src, rows * cols * sizeof(float)); }
static void f16_from_f32(const float *src, size_t rows, size_t cols, void *m) { blip2_f32_to_f16_row(src, m, rows * cols); }
static void q8_from_f32(const float *src, size_t rows, size_t cols, void *m) {
    for (size_t r = 0; r < rows; r++) blip2_quantize_row_q8(src + r * cols, (blip2_block_q8 *)m + r * (cols / BLIP2_QBLOCK), cols);
}
static void q4_from_f32(const float *src, size_t rows, size_t cols, void *m) {
    for (size_t r = 0; r < rows; r++) blip2_quantize_row_q4(src + r * cols, (blip2_block_q4 *)m + r * (cols / BLIP2_QBLOCK), cols);
}
static void q8p_from_f32(const float *src, size_t rows, size_t cols, void *m) { blip2_quantize_panels_q8(src, rows, cols, m); }
static void q4p_from_f32(const float *src, size_t rows, size_t cols, void *m) { blip2_quantize_panels_q4(src, rows, cols, m); }

static void q8_from_f32_weighted(const float *src, size_t rows, size_t cols, const float *importance, void *m) {
    for (size_t r = 0; r < rows; r++) blip2_quantize_row_q8_weighted(src + r * cols, importance, (blip2_block_q8 *)m + r * (cols / BLIP2_QBLOCK), cols);
}
static void q4_from_f32_weighted(const float *src, size_t rows, size_t cols, const float *importance, void *m) {
    for (size_t r = 0; r < rows; r++) blip2_quantize_row_q4_weighted(src + r * cols, importance, (blip2_block_q4 *)m + r * (cols / BLIP2_QBLOCK), cols);
}
static void q8p_from_f32_weighted(const float *src, size_t rows, size_t cols, const float *importance, void *m) {
    blip2_quantize_panels_q8_weighted(src, rows, cols, importance, m);
}
static void q4p_from_f32_weighted(const float *src, size_t rows, size_t cols, const float *importance, void *m) {
    blip2_quantize_panels_q4_weighted(src, rows, cols, importance, m);
}

// Super-block types: one function each way, told the type.
#define BLIP2_KQ_CONVERSIONS(name, type)                                                                         \
    static void name##_to_f32(const void *m, size_t row, size_t cols, float *dst) { blip2_kq_row_to_f32(type, m, row, cols, dst); } \
    static void name##_from_f32(const float *src, size_t rows, size_t cols, void *m) { blip2_kq_quantize_panels(type, src, rows, cols, NULL, m); } \
    static void name##_from_f32_weighted(const float *src, size_t rows, size_t cols, const float *importance, void *m) { \
        blip2_kq_quantize_panels(type, src, rows, cols, importance, m);                                          \
    }
BLIP2_KQ_CONVERSIONS(q4k, BLIP2_TYPE_Q4K)
BLIP2_KQ_CONVERSIONS(q3k, BLIP2_TYPE_Q3K)
BLIP2_KQ_CONVERSIONS(q6k, BLIP2_TYPE_Q6K)

// MARK: - The table

static const blip2_type_traits traits[BLIP2_TYPE_COUNT] = {
    //                   name  rows  inputs  bytes  tail  header  quantized  activation  to, from, weighted from
    [BLIP2_TYPE_F32] = {"f32", 1, 1, 4, 1, 0, false, BLIP2_ACTIVATION_F32, f32_to_f32, f32_from_f32, NULL},
    [BLIP2_TYPE_F16] = {"f16", 1, 1, 2, 1, 0, false, BLIP2_ACTIVATION_F32, f16_to_f32, f16_from_f32, NULL},
    [BLIP2_TYPE_BF16] = {"bf16", 1, 1, 2, 1, 0, false, BLIP2_ACTIVATION_F32, bf16_to_f32, NULL, NULL},
    [BLIP2_TYPE_Q8] = {"q8", 1, BLIP2_QBLOCK, sizeof(blip2_block_q8), BLIP2_QBLOCK, 0, true, BLIP2_ACTIVATION_Q8A,
                       q8_to_f32, q8_from_f32, q8_from_f32_weighted},
    [BLIP2_TYPE_Q4] = {"q4", 1, BLIP2_QBLOCK, sizeof(blip2_block_q4), BLIP2_QBLOCK, 0, true, BLIP2_ACTIVATION_Q8A,
                       q4_to_f32, q4_from_f32, q4_from_f32_weighted},
    [BLIP2_TYPE_Q8P] = {"q8p", BLIP2_PANEL_ROWS, BLIP2_QBLOCK, sizeof(blip2_panel_q8), BLIP2_QBLOCK, 0, true, BLIP2_ACTIVATION_Q8A,
                        q8p_to_f32, q8p_from_f32, q8p_from_f32_weighted},
    [BLIP2_TYPE_Q4P] = {"q4p", BLIP2_PANEL_ROWS, BLIP2_QBLOCK, sizeof(blip2_panel_q4), BLIP2_QBLOCK, 0, true, BLIP2_ACTIVATION_Q8A,
                        q4p_to_f32, q4p_from_f32, q4p_from_f32_weighted},
    [BLIP2_TYPE_Q4K] = {"q4k", BLIP2_PANEL_ROWS, BLIP2_SUPERBLOCK, sizeof(blip2_panel_q4k), BLIP2_SUPERBLOCK_CHUNK,
                        offsetof(blip2_panel_q4k, qs), true, BLIP2_ACTIVATION_Q8K, q4k_to_f32, q4k_from_f32, q4k_from_f32_weighted},
    [BLIP2_TYPE_Q3K] = {"q3k", BLIP2_PANEL_ROWS, BLIP2_SUPERBLOCK, sizeof(blip2_panel_q3k), BLIP2_SUPERBLOCK_CHUNK,
                        offsetof(blip2_panel_q3k, qs), true, BLIP2_ACTIVATION_Q8K, q3k_to_f32, q3k_from_f32, q3k_from_f32_weighted},
    [BLIP2_TYPE_Q6K] = {"q6k", BLIP2_PANEL_ROWS, BLIP2_SUPERBLOCK, sizeof(blip2_panel_q6k), BLIP2_SUPERBLOCK_CHUNK,
                        offsetof(blip2_panel_q6k, qs), true, BLIP2_ACTIVATION_Q8K, q6k_to_f32, q6k_from_f32, q6k_from_f32_weighted},
};

const blip2_type_traits *blip2_traits(uint32_t type) {
    return type < BLIP2_TYPE_COUNT && traits[type].name ? &traits[type] : NULL;
}

bool blip2_to_f32(uint32_t type, const void *src, float *dst, size_t n) {
    const blip2_type_traits *t = blip2_traits(type);
    if (!t || n % t->tail_elements != 0) return false;
    t->to_f32(src, 0, n, dst);
    return true;
}

size_t blip2_group_bytes(uint32_t type, size_t cols) {
    const blip2_type_traits *t = blip2_traits(type);
    return t && cols % t->tail_elements == 0 ? group_bytes(t, cols) : 0;
}

size_t blip2_activation_row_bytes(blip2_activation a, size_t n) {
    switch (a) {
    case BLIP2_ACTIVATION_Q8A: return n / BLIP2_QBLOCK * sizeof(blip2_block_q8a);
    case BLIP2_ACTIVATION_Q8K: return (n + BLIP2_SUPERBLOCK - 1) / BLIP2_SUPERBLOCK * sizeof(blip2_block_q8k);
    default: return n * sizeof(float);
    }
}
