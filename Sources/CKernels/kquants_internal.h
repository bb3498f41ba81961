// The super-block formats' parameters and layout accessors, shared by their fits (kquants.c), the traits
// table (types.c) and the scalar reference kernels; not part of the public interface.
#pragma once
#include "blip2_kernels.h"

typedef struct {
    uint32_t type;
    size_t header;     // bytes before qs
    int bits;          // per value
    int sub;           // inputs per sub-block
    int lo, hi;        // levels: value - offset lies in lo..hi
    int offset;        // stored value = level + offset
    int scale_max;     // largest sub-scale (and minimum) magnitude
    bool has_min;      // q4k: a 6-bit minimum per sub-block and an f16 minimum-scale per row
} blip2_kq_format;

/// NULL for a type that is not a super-block format.
const blip2_kq_format *blip2_kq_format_of(uint32_t type);
/// Value (unsigned, as stored) of input i (< 256) of row `row` in the super-block at `block`.
uint8_t blip2_kq_get_value(const blip2_kq_format *f, const void *block, size_t row, size_t i);
/// Sub-scale of entry e = 8 j + r (signed for q3k and q6k); q4k's minimum likewise.
int blip2_kq_get_scale(const blip2_kq_format *f, const void *block, size_t e);
int blip2_kq_get_min(const void *q4k_block, size_t e);
/// Bytes of a super-block spanning `count` inputs (header + values of 8 rows), and of a row group.
size_t blip2_kq_superblock_bytes(const blip2_kq_format *f, size_t count);
size_t blip2_kq_group_bytes(const blip2_kq_format *f, size_t cols);
/// Whole matrices: rows of f32 into panels (importance per column or NULL), and one row back.
void blip2_kq_quantize_panels(uint32_t type, const float *src, size_t rows, size_t cols, const float *importance, void *dst);
void blip2_kq_row_to_f32(uint32_t type, const void *matrix, size_t row, size_t cols, float *dst);
