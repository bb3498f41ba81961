// The storage types: one traits row each (blip2_kernels.h). Everything else that needs a block size, a
// byte count or a conversion reads it from here.
#include "blip2_kernels.h"
#include <string.h>

// MARK: - Row access

// Bytes of one row group of a matrix with `cols` inputs.
static size_t group_bytes(const blip2_type_traits *t, size_t cols) { return cols / t->block_elements * t->block_bytes; }

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

// MARK: - The table

static const blip2_type_traits traits[BLIP2_TYPE_COUNT] = {
    [BLIP2_TYPE_F32] = {"f32", 1, 1, 4, false, BLIP2_ACTIVATION_F32, f32_to_f32, f32_from_f32},
    [BLIP2_TYPE_F16] = {"f16", 1, 1, 2, false, BLIP2_ACTIVATION_F32, f16_to_f32, f16_from_f32},
    [BLIP2_TYPE_BF16] = {"bf16", 1, 1, 2, false, BLIP2_ACTIVATION_F32, bf16_to_f32, NULL},
    [BLIP2_TYPE_Q8] = {"q8", 1, BLIP2_QBLOCK, sizeof(blip2_block_q8), true, BLIP2_ACTIVATION_Q8A, q8_to_f32, q8_from_f32},
    [BLIP2_TYPE_Q4] = {"q4", 1, BLIP2_QBLOCK, sizeof(blip2_block_q4), true, BLIP2_ACTIVATION_Q8A, q4_to_f32, q4_from_f32},
    [BLIP2_TYPE_Q8P] = {"q8p", BLIP2_PANEL_ROWS, BLIP2_QBLOCK, sizeof(blip2_panel_q8), true, BLIP2_ACTIVATION_Q8A, q8p_to_f32, q8p_from_f32},
    [BLIP2_TYPE_Q4P] = {"q4p", BLIP2_PANEL_ROWS, BLIP2_QBLOCK, sizeof(blip2_panel_q4), true, BLIP2_ACTIVATION_Q8A, q4p_to_f32, q4p_from_f32},
};

const blip2_type_traits *blip2_traits(uint32_t type) {
    return type < BLIP2_TYPE_COUNT && traits[type].name ? &traits[type] : NULL;
}

bool blip2_to_f32(uint32_t type, const void *src, float *dst, size_t n) {
    const blip2_type_traits *t = blip2_traits(type);
    if (!t || n % t->block_elements != 0) return false;
    t->to_f32(src, 0, n, dst);
    return true;
}

size_t blip2_group_bytes(uint32_t type, size_t cols) {
    const blip2_type_traits *t = blip2_traits(type);
    return t && cols % t->block_elements == 0 ? group_bytes(t, cols) : 0;
}
