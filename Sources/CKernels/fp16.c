// Half-precision conversions. Model files keep norms, biases and scales in f16/f32 and checkpoints
// arrive as f16/bf16, so these run over every weight byte once at conversion time.
#include "blip2_kernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BLIP2_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define BLIP2_ARM64 1
#endif

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float blip2_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));   // inf / NaN (payload kept)
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        // Subnormal half: value = mant * 2^-24, exactly representable in f32.
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t blip2_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) {                       // inf or NaN
        uint16_t nan = absx > 0x7f800000u ? (uint16_t)(0x200 | ((absx >> 13) & 0x3ff)) : 0;
        return sign | 0x7c00 | nan;
    }
    if (absx >= 0x477ff000u) return sign | 0x7c00;   // rounds to >= 65520: overflow to inf
    if (absx < 0x38800000u) {                        // below the smallest normal half: subnormal or 0
        if (absx < 0x33000000u) return sign;          // < 2^-25 rounds to zero (ties-to-even at 2^-25)
        uint32_t exp = absx >> 23;
        uint32_t mant = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - exp;                   // 14..24 for this range
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t rounded = absx + 0xfff + ((absx >> 13) & 1);   // round to nearest even at bit 13
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}

float blip2_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

// MARK: - Rows: scalar references

void blip2_f16_to_f32_row_ref(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = blip2_f16_to_f32(src[i]);
}

void blip2_f32_to_f16_row_ref(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = blip2_f32_to_f16(src[i]);
}

void blip2_bf16_to_f32_row(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = blip2_bf16_to_f32(src[i]);
}

// MARK: - Rows: hardware conversion

#if BLIP2_X86
__attribute__((target("avx2,f16c")))
static void f16_to_f32_row_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) dst[i] = blip2_f16_to_f32(src[i]);
}

__attribute__((target("avx2,f16c")))
static void f32_to_f16_row_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) dst[i] = blip2_f32_to_f16(src[i]);
}
#endif

void blip2_f16_to_f32_row(const uint16_t *src, float *dst, size_t n) {
#if BLIP2_X86
    if (blip2_cpu_features() & BLIP2_CPU_AVX2) { f16_to_f32_row_f16c(src, dst, n); return; }
#elif BLIP2_ARM64
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
    for (; i < n; i++) dst[i] = blip2_f16_to_f32(src[i]);
    return;
#endif
    blip2_f16_to_f32_row_ref(src, dst, n);
}

void blip2_f32_to_f16_row(const float *src, uint16_t *dst, size_t n) {
#if BLIP2_X86
    if (blip2_cpu_features() & BLIP2_CPU_AVX2) { f32_to_f16_row_f16c(src, dst, n); return; }
#elif BLIP2_ARM64
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = blip2_f32_to_f16(src[i]);
    return;
#endif
    blip2_f32_to_f16_row_ref(src, dst, n);
}
