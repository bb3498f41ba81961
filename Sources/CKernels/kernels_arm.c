// AArch64 kernels: NEON (Advanced SIMD, baseline on every AArch64 core: Raspberry Pi 4's Cortex-A72) and
// NEON with the Armv8.2 dot product (sdot: Raspberry Pi 5's Cortex-A76), the latter compiled through a
// per-function target so the package builds for plain Armv8-A and picks it from HWCAP at run time.
#include "kernels_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

#if defined(__clang__)
#define BLIP2_BEGIN_DOTPROD _Pragma("clang attribute push (__attribute__((target(\"dotprod\"))), apply_to = function)")
#define BLIP2_END_DOTPROD _Pragma("clang attribute pop")
#else
#define BLIP2_BEGIN_DOTPROD _Pragma("GCC push_options") _Pragma("GCC target(\"arch=armv8.2-a+dotprod\")")
#define BLIP2_END_DOTPROD _Pragma("GCC pop_options")
#endif

BLIP2_INLINE float half_neon(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

BLIP2_INLINE float32x4_t load4_f32(const float *p) { return vld1q_f32(p); }
BLIP2_INLINE float32x4_t load4_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

BLIP2_INLINE float32x4_t exp4_neon(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(BLIP2_EXP_LO)), vdupq_n_f32(BLIP2_EXP_HI));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(BLIP2_LOG2E)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(BLIP2_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(BLIP2_LN2_LO));
    float32x4_t p = vdupq_n_f32(BLIP2_EXP_P0);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_EXP_P1), p, r);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_EXP_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_EXP_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_EXP_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_EXP_P5), p, r);
    float32x4_t y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    int32x4_t scale = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(scale));
}

static void exp_row_neon(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, exp4_neon(vld1q_f32(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

static void softmax_neon(float *x, size_t n) {
    size_t i = 0;
    float32x4_t m4 = vdupq_n_f32(-INFINITY);
    for (; i + 4 <= n; i += 4) m4 = vmaxq_f32(m4, vld1q_f32(x + i));
    float maximum = vmaxvq_f32(m4);
    for (; i < n; i++) maximum = fmaxf(maximum, x[i]);
    float32x4_t shift = vdupq_n_f32(maximum), sum4 = vdupq_n_f32(0);
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = exp4_neon(vsubq_f32(vld1q_f32(x + i), shift));
        vst1q_f32(x + i, e);
        sum4 = vaddq_f32(sum4, e);
    }
    float sum = vaddvq_f32(sum4);
    for (; i < n; i++) {
        x[i] = expf(x[i] - maximum);
        sum += x[i];
    }
    float inverse = 1 / sum;
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inverse));
    for (; i < n; i++) x[i] *= inverse;
}

BLIP2_INLINE float32x4_t gelu4_neon(float32x4_t x) {
    float32x4_t z = vmulq_f32(vabsq_f32(x), vdupq_n_f32(0.70710678118654752f));
    float32x4_t u = vdivq_f32(vdupq_n_f32(1.0f), vfmaq_f32(vdupq_n_f32(1.0f), z, vdupq_n_f32(0.5f)));
    float32x4_t t = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_T_SHIFT), u, vdupq_n_f32(BLIP2_GELU_T_SCALE));
    float32x4_t p = vdupq_n_f32(BLIP2_GELU_P9);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P8), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P7), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P6), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P5), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P4), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P3), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P2), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P1), p, t);
    p = vfmaq_f32(vdupq_n_f32(BLIP2_GELU_P0), p, t);
    float32x4_t xx = vmulq_f32(x, x);
    float32x4_t residual = vfmaq_f32(vnegq_f32(xx), x, x);   // x^2 = xx + residual exactly
    float32x4_t e = vmulq_f32(exp4_neon(vmulq_f32(xx, vdupq_n_f32(-0.5f))), exp4_neon(vfmsq_f32(p, residual, vdupq_n_f32(0.5f))));
    float32x4_t half_erfc = vmulq_f32(vmulq_f32(u, e), vdupq_n_f32(0.5f));
    float32x4_t phi = vbslq_f32(vcltzq_f32(x), half_erfc, vsubq_f32(vdupq_n_f32(1.0f), half_erfc));
    return vmulq_f32(x, phi);
}

static void gelu_neon(float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, gelu4_neon(vld1q_f32(x + i)));
    for (; i < n; i++) x[i] = blip2_gelu_ref(x[i]);
}

static void quantize_q8a_neon(const float *x, blip2_block_q8a *y, size_t n) {
    const float32x4_t top = vdupq_n_f32(127.0f), bottom = vdupq_n_f32(-127.0f);
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        const float *xb = x + b * BLIP2_QBLOCK;
        float32x4_t v[8];
        float32x4_t m = vdupq_n_f32(0);
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(xb + 4 * j);
            m = vmaxq_f32(m, vabsq_f32(v[j]));
        }
        float d = blip2_q8a_scale(vmaxvq_f32(m));
        float32x4_t inverse = vdupq_n_f32(blip2_q8a_inverse(d));
        int32x4_t sum = vdupq_n_s32(0);
        int16x8_t halves[4];
        for (int j = 0; j < 8; j += 2) {
            // vcvtnq rounds to nearest even, like the reference.
            int32x4_t q0 = vcvtnq_s32_f32(vmaxq_f32(vminq_f32(vmulq_f32(v[j], inverse), top), bottom));
            int32x4_t q1 = vcvtnq_s32_f32(vmaxq_f32(vminq_f32(vmulq_f32(v[j + 1], inverse), top), bottom));
            sum = vaddq_s32(sum, vaddq_s32(q0, q1));
            halves[j / 2] = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
        }
        vst1q_s8(y[b].qs, vcombine_s8(vmovn_s16(halves[0]), vmovn_s16(halves[1])));
        vst1q_s8(y[b].qs + 16, vcombine_s8(vmovn_s16(halves[2]), vmovn_s16(halves[3])));
        y[b].d = d;
        y[b].s = d * (float)vaddvq_s32(sum);
    }
}

// Weight block as two 16-byte signed halves (elements 0..15, 16..31) with its scale and constant term.
typedef struct {
    int8x16_t lo, hi;
    float d, m;
} weight_block_neon;

BLIP2_INLINE weight_block_neon unpack_q8_neon(const void *row, size_t b) {
    const blip2_block_q8 *wb = (const blip2_block_q8 *)row + b;
    weight_block_neon out = {vld1q_s8(wb->qs), vld1q_s8(wb->qs + 16), half_neon(wb->d), 0};
    return out;
}

BLIP2_INLINE weight_block_neon unpack_q4_neon(const void *row, size_t b) {
    const blip2_block_q4 *wb = (const blip2_block_q4 *)row + b;
    uint8x16_t raw = vld1q_u8(wb->qs);
    weight_block_neon out = {vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f))), vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)),
                             half_neon(wb->d), half_neon(wb->m)};
    return out;
}

// Plain NEON: widening multiplies into 16 bits (two products per lane: |w| <= 128, |a| <= 127 fit), then
// pairwise widening adds into 32 bits.
BLIP2_INLINE int32x4_t dot_block_neon(weight_block_neon w, int8x16_t a0, int8x16_t a1) {
    int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w.lo), vget_low_s8(a0)), w.lo, a0);
    int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w.hi), vget_low_s8(a1)), w.hi, a1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

#define BLIP2_Q_TILE_NEON(name, unpack, dot, has_minimum)                                                       \
    BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) { \
        const size_t nb = n / BLIP2_QBLOCK;                                                                     \
        float32x4_t acc[4][4];                                                                                  \
        float minimum[4][4];                                                                                    \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {                     \
            acc[r][t] = vdupq_n_f32(0);                                                                         \
            minimum[r][t] = 0;                                                                                  \
        }                                                                                                       \
        for (size_t b = 0; b < nb; b++) {                                                                       \
            int8x16_t a0[4], a1[4];                                                                             \
            float da[4], sa[4];                                                                                 \
            BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                          \
                const blip2_block_q8a *xb = (const blip2_block_q8a *)xv[t] + b;                                 \
                a0[t] = vld1q_s8(xb->qs);                                                                       \
                a1[t] = vld1q_s8(xb->qs + 16);                                                                  \
                da[t] = xb->d;                                                                                  \
                sa[t] = xb->s;                                                                                  \
            }                                                                                                   \
            BLIP2_UNROLL for (int r = 0; r < R; r++) {                                                          \
                weight_block_neon w = unpack(wv[r], b);                                                         \
                BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                      \
                    acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(dot(w, a0[t], a1[t])), w.d * da[t]);       \
                    if (has_minimum) minimum[r][t] += w.m * sa[t];                                              \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++)                       \
            out[r * T + t] = vaddvq_f32(acc[r][t]) + minimum[r][t];                                             \
    }

#define BLIP2_FLOAT_TILE_NEON(name, wtype, load, widen)                                                         \
    BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) { \
        const wtype *w[4];                                                                                      \
        const float *x[4];                                                                                      \
        BLIP2_UNROLL for (int r = 0; r < R; r++) w[r] = (const wtype *)wv[r];                                   \
        BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const float *)xv[t];                                   \
        float32x4_t acc[4][4];                                                                                  \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_f32(0); \
        size_t i = 0;                                                                                           \
        for (; i + 4 <= n; i += 4) {                                                                            \
            float32x4_t xs[4];                                                                                  \
            BLIP2_UNROLL for (int t = 0; t < T; t++) xs[t] = vld1q_f32(x[t] + i);                                \
            BLIP2_UNROLL for (int r = 0; r < R; r++) {                                                          \
                float32x4_t ws = load(w[r] + i);                                                                \
                BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = vfmaq_f32(acc[r][t], ws, xs[t]);           \
            }                                                                                                   \
        }                                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {                     \
            float sum = vaddvq_f32(acc[r][t]);                                                                  \
            for (size_t j = i; j < n; j++) sum += widen(w[r][j]) * x[t][j];                                      \
            out[r * T + t] = sum;                                                                               \
        }                                                                                                       \
    }

#define BLIP2_SAME(v) (v)
#define BLIP2_VEC_DOTS(suffix, q8_tile, q4_tile, f32_tile, f16_tile)                                             \
    static float vec_dot_q8_q8a_##suffix(const blip2_block_q8 *w, const blip2_block_q8a *x, size_t nb) {         \
        const void *wp[1] = {w}, *xp[1] = {x};                                                                  \
        float out;                                                                                              \
        q8_tile(wp, xp, nb * BLIP2_QBLOCK, &out, 1, 1);                                                         \
        return out;                                                                                             \
    }                                                                                                           \
    static float vec_dot_q4_q8a_##suffix(const blip2_block_q4 *w, const blip2_block_q8a *x, size_t nb) {         \
        const void *wp[1] = {w}, *xp[1] = {x};                                                                  \
        float out;                                                                                              \
        q4_tile(wp, xp, nb * BLIP2_QBLOCK, &out, 1, 1);                                                         \
        return out;                                                                                             \
    }                                                                                                           \
    static float vec_dot_f32_##suffix(const float *w, const float *x, size_t n) {                               \
        const void *wp[1] = {w}, *xp[1] = {x};                                                                  \
        float out;                                                                                              \
        f32_tile(wp, xp, n, &out, 1, 1);                                                                        \
        return out;                                                                                             \
    }                                                                                                           \
    static float vec_dot_f16_##suffix(const uint16_t *w, const float *x, size_t n) {                            \
        const void *wp[1] = {w}, *xp[1] = {x};                                                                  \
        float out;                                                                                              \
        f16_tile(wp, xp, n, &out, 1, 1);                                                                        \
        return out;                                                                                             \
    }

// MARK: - NEON

BLIP2_Q_TILE_NEON(tile_q8_neon, unpack_q8_neon, dot_block_neon, 0)
BLIP2_Q_TILE_NEON(tile_q4_neon, unpack_q4_neon, dot_block_neon, 1)
BLIP2_FLOAT_TILE_NEON(tile_f32_neon, float, load4_f32, BLIP2_SAME)
BLIP2_FLOAT_TILE_NEON(tile_f16_neon, uint16_t, load4_f16, half_neon)
BLIP2_VEC_DOTS(neon, tile_q8_neon, tile_q4_neon, tile_f32_neon, tile_f16_neon)

BLIP2_TILE(q8_mv_neon, tile_q8_neon, 4, 1)
BLIP2_TILE(q8_mm_neon, tile_q8_neon, 2, 4)
BLIP2_TILE(q4_mv_neon, tile_q4_neon, 4, 1)
BLIP2_TILE(q4_mm_neon, tile_q4_neon, 2, 4)
BLIP2_TILE(f32_mv_neon, tile_f32_neon, 4, 1)
BLIP2_TILE(f32_mm_neon, tile_f32_neon, 4, 4)
BLIP2_TILE(f16_mv_neon, tile_f16_neon, 4, 1)
BLIP2_TILE(f16_mm_neon, tile_f16_neon, 4, 4)

const blip2_kernels blip2_kernels_neon = {
    .isa = BLIP2_ISA_NEON,
    .name = "neon",
    .quantize_q8a = quantize_q8a_neon,
    .vec_dot_q8_q8a = vec_dot_q8_q8a_neon,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_neon,
    .vec_dot_f32 = vec_dot_f32_neon,
    .vec_dot_f16 = vec_dot_f16_neon,
    .exp_row = exp_row_neon,
    .softmax = softmax_neon,
    .gelu = gelu_neon,
    .matvec = {{f32_mv_neon, 4, 1}, {f16_mv_neon, 4, 1}, {q8_mv_neon, 4, 1}, {q4_mv_neon, 4, 1}},
    .matmul = {{f32_mm_neon, 4, 4}, {f16_mm_neon, 4, 4}, {q8_mm_neon, 2, 4}, {q4_mm_neon, 2, 4}},
};

// MARK: - NEON with dot product

BLIP2_BEGIN_DOTPROD

BLIP2_INLINE int32x4_t dot_block_sdot(weight_block_neon w, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w.lo, a0), w.hi, a1);
}

BLIP2_Q_TILE_NEON(tile_q8_sdot, unpack_q8_neon, dot_block_sdot, 0)
BLIP2_Q_TILE_NEON(tile_q4_sdot, unpack_q4_neon, dot_block_sdot, 1)
BLIP2_VEC_DOTS(sdot, tile_q8_sdot, tile_q4_sdot, tile_f32_neon, tile_f16_neon)

BLIP2_TILE(q8_mv_sdot, tile_q8_sdot, 4, 1)
BLIP2_TILE(q8_mm_sdot, tile_q8_sdot, 4, 4)
BLIP2_TILE(q4_mv_sdot, tile_q4_sdot, 4, 1)
BLIP2_TILE(q4_mm_sdot, tile_q4_sdot, 4, 4)

BLIP2_END_DOTPROD

const blip2_kernels blip2_kernels_dotprod = {
    .isa = BLIP2_ISA_DOTPROD,
    .name = "dotprod",
    .quantize_q8a = quantize_q8a_neon,
    .vec_dot_q8_q8a = vec_dot_q8_q8a_sdot,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_sdot,
    .vec_dot_f32 = vec_dot_f32_sdot,
    .vec_dot_f16 = vec_dot_f16_sdot,
    .exp_row = exp_row_neon,
    .softmax = softmax_neon,
    .gelu = gelu_neon,
    .matvec = {{f32_mv_neon, 4, 1}, {f16_mv_neon, 4, 1}, {q8_mv_sdot, 4, 1}, {q4_mv_sdot, 4, 1}},
    .matmul = {{f32_mm_neon, 4, 4}, {f16_mm_neon, 4, 4}, {q8_mm_sdot, 4, 4}, {q4_mm_sdot, 4, 4}},
};

#endif
