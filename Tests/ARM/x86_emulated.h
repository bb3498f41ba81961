// The x86 intrinsics the kernels use, implemented portably by SIMDe (Debian: libsimde-dev), so the
// AVX-512 path can be checked on machines that lack it. Test harness only: never part of the package.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#include "blip2_kernels.h"

// Missing from the packaged SIMDe (0.7.x); defined here with the instructions' semantics.
#ifndef _MM_FROUND_NO_EXC
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#endif
static inline float _cvtsh_ss(unsigned short h) { return blip2_f16_to_f32(h); }

static inline __m512 _mm512_cvtph_ps(__m256i h) {
    uint16_t halves[16];
    float floats[16];
    _mm256_storeu_si256((__m256i *)halves, h);
    for (int i = 0; i < 16; i++) floats[i] = blip2_f16_to_f32(halves[i]);
    return _mm512_loadu_ps(floats);
}

// 16 bytes widened to 16 32-bit lanes (vpmovsxbd / vpmovzxbd).
#ifndef _mm512_cvtepi8_epi32
static inline __m512i _mm512_cvtepi8_epi32(__m128i v) {
    int8_t bytes[16];
    int32_t lanes[16];
    _mm_storeu_si128((__m128i *)bytes, v);
    for (int i = 0; i < 16; i++) lanes[i] = bytes[i];
    return _mm512_loadu_si512(lanes);
}
#endif
#ifndef _mm512_cvtepu8_epi32
static inline __m512i _mm512_cvtepu8_epi32(__m128i v) {
    uint8_t bytes[16];
    int32_t lanes[16];
    _mm_storeu_si128((__m128i *)bytes, v);
    for (int i = 0; i < 16; i++) lanes[i] = bytes[i];
    return _mm512_loadu_si512(lanes);
}
#endif

// 32 bytes widened to 32 16-bit lanes (vpmovzxbw).
#ifndef _mm512_cvtepu8_epi16
static inline __m512i _mm512_cvtepu8_epi16(__m256i v) {
    uint8_t bytes[32];
    uint16_t lanes[32];
    _mm256_storeu_si256((__m256i *)bytes, v);
    for (int i = 0; i < 32; i++) lanes[i] = bytes[i];
    return _mm512_loadu_si512(lanes);
}
#endif

#ifndef _mm512_cvtepi32_ps
static inline __m512 _mm512_cvtepi32_ps(__m512i v) {
    int32_t lanes[16];
    float floats[16];
    _mm512_storeu_si512(lanes, v);
    for (int i = 0; i < 16; i++) floats[i] = (float)lanes[i];
    return _mm512_loadu_ps(floats);
}
#endif

static inline float _mm512_reduce_add_ps(__m512 v) {
    float f[16];
    _mm512_storeu_ps(f, v);
    for (int width = 8; width > 0; width /= 2) {
        for (int i = 0; i < width; i++) f[i] += f[i + width];
    }
    return f[0];
}

// SIMDe falls back to a separate multiply and add where the host lacks FMA instructions; the kernels rely
// on the fused rounding (the GELU keeps x^2 exact through an FMA residual), so these are fused per lane.
#include <math.h>
#define BLIP2_FUSED_256(name, expression)                                           \
    static inline __m256 blip2_emulated_##name(__m256 a, __m256 b, __m256 c) {     \
        float x[8], y[8], z[8];                                                     \
        _mm256_storeu_ps(x, a);                                                     \
        _mm256_storeu_ps(y, b);                                                     \
        _mm256_storeu_ps(z, c);                                                     \
        for (int i = 0; i < 8; i++) x[i] = expression;                              \
        return _mm256_loadu_ps(x);                                                  \
    }
BLIP2_FUSED_256(fmadd, fmaf(x[i], y[i], z[i]))
BLIP2_FUSED_256(fmsub, fmaf(x[i], y[i], -z[i]))
BLIP2_FUSED_256(fnmadd, fmaf(-x[i], y[i], z[i]))
#undef _mm256_fmadd_ps
#undef _mm256_fmsub_ps
#undef _mm256_fnmadd_ps
#define _mm256_fmadd_ps blip2_emulated_fmadd
#define _mm256_fmsub_ps blip2_emulated_fmsub
#define _mm256_fnmadd_ps blip2_emulated_fnmadd

static inline __m512 blip2_emulated_fmadd512(__m512 a, __m512 b, __m512 c) {
    float x[16], y[16], z[16];
    _mm512_storeu_ps(x, a);
    _mm512_storeu_ps(y, b);
    _mm512_storeu_ps(z, c);
    for (int i = 0; i < 16; i++) x[i] = fmaf(x[i], y[i], z[i]);
    return _mm512_loadu_ps(x);
}
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps blip2_emulated_fmadd512

// Masked loads and stores of 16 floats: lanes outside the mask are neither read nor written (loads give 0).
#ifndef __mmask16
typedef simde__mmask16 __mmask16;
#endif
#ifndef _mm512_maskz_loadu_ps
static inline __m512 _mm512_maskz_loadu_ps(__mmask16 k, const void *p) {
    float lanes[16];
    for (int i = 0; i < 16; i++) lanes[i] = (k >> i) & 1 ? ((const float *)p)[i] : 0.0f;
    return _mm512_loadu_ps(lanes);
}
#endif
#ifndef _mm512_mask_storeu_ps
static inline void _mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 v) {
    float lanes[16];
    _mm512_storeu_ps(lanes, v);
    for (int i = 0; i < 16; i++) if ((k >> i) & 1) ((float *)p)[i] = lanes[i];
}
#endif

// vcvtps2dq on 16 lanes (rounding to nearest even, out of range: the integer indefinite 0x80000000), and
// the maximum over 16 lanes.
#ifndef _mm512_cvtps_epi32
static inline __m512i _mm512_cvtps_epi32(__m512 v) {
    float lanes[16];
    int32_t out[16];
    _mm512_storeu_ps(lanes, v);
    for (int i = 0; i < 16; i++) {
        float r = nearbyintf(lanes[i]);
        out[i] = r >= -2147483648.0f && r < 2147483648.0f ? (int32_t)r : INT32_MIN;
    }
    return _mm512_loadu_si512(out);
}
#endif
#ifndef _mm512_reduce_max_ps
static inline float _mm512_reduce_max_ps(__m512 v) {
    float lanes[16];
    _mm512_storeu_ps(lanes, v);
    float m = lanes[0];
    for (int i = 1; i < 16; i++) m = lanes[i] > m ? lanes[i] : m;
    return m;
}
#endif

// SIMDe's 16-lane fused multiply-adds round the product first; the instructions round once, which GELU's
// exact split of x^2 (x x - round(x x)) needs. Defined per lane with fmaf; the signs pick fmadd, fmsub or
// fnmadd.
static inline __m512 blip2_emulated_fma16(__m512 a, __m512 b, __m512 c, float sign, float c_sign) {
    float x[16], y[16], z[16];
    _mm512_storeu_ps(x, a);
    _mm512_storeu_ps(y, b);
    _mm512_storeu_ps(z, c);
    for (int i = 0; i < 16; i++) x[i] = fmaf(sign * x[i], y[i], c_sign * z[i]);
    return _mm512_loadu_ps(x);
}
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps(a, b, c) blip2_emulated_fma16(a, b, c, 1.0f, 1.0f)
#undef _mm512_fmsub_ps
#define _mm512_fmsub_ps(a, b, c) blip2_emulated_fma16(a, b, c, 1.0f, -1.0f)
#undef _mm512_fnmadd_ps
#define _mm512_fnmadd_ps(a, b, c) blip2_emulated_fma16(a, b, c, -1.0f, 1.0f)
