#include "blip2_kernels.h"

static const blip2_type_traits traits_f32 = {"f32", 1, 4, false};
static const blip2_type_traits traits_f16 = {"f16", 1, 2, false};
static const blip2_type_traits traits_bf16 = {"bf16", 1, 2, false};
static const blip2_type_traits traits_q8 = {"q8", BLIP2_QBLOCK, sizeof(blip2_block_q8), true};
static const blip2_type_traits traits_q4 = {"q4", BLIP2_QBLOCK, sizeof(blip2_block_q4), true};

const blip2_type_traits *blip2_traits(uint32_t type) {
    switch (type) {
    case BLIP2_TYPE_F32: return &traits_f32;
    case BLIP2_TYPE_F16: return &traits_f16;
    case BLIP2_TYPE_BF16: return &traits_bf16;
    case BLIP2_TYPE_Q8: return &traits_q8;
    case BLIP2_TYPE_Q4: return &traits_q4;
    default: return NULL;
    }
}

bool blip2_to_f32(uint32_t type, const void *src, float *dst, size_t n) {
    const blip2_type_traits *t = blip2_traits(type);
    if (!t || n % t->block_elements != 0) return false;
    switch (type) {
    case BLIP2_TYPE_F32: {
        const float *s = (const float *)src;
        for (size_t i = 0; i < n; i++) dst[i] = s[i];
        return true;
    }
    case BLIP2_TYPE_F16: blip2_f16_to_f32_row((const uint16_t *)src, dst, n); return true;
    case BLIP2_TYPE_BF16: blip2_bf16_to_f32_row((const uint16_t *)src, dst, n); return true;
    case BLIP2_TYPE_Q8: blip2_dequantize_row_q8((const blip2_block_q8 *)src, dst, n); return true;
    case BLIP2_TYPE_Q4: blip2_dequantize_row_q4((const blip2_block_q4 *)src, dst, n); return true;
    default: return false;
    }
}
