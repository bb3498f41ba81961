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

static inline float _mm512_reduce_add_ps(__m512 v) {
    float f[16];
    _mm512_storeu_ps(f, v);
    for (int width = 8; width > 0; width /= 2) {
        for (int i = 0; i < width; i++) f[i] += f[i + width];
    }
    return f[0];
}
