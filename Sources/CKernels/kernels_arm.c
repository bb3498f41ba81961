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


// MARK: Panels (q8p, q4p): 16 bytes hold 4 inputs of 4 rows. Without sdot, each token's 4 broadcast
// activation bytes meet two groups at a time: vmull + vmlal give 16-bit sums of two products (at most
// 2 * 128 * 127, exact), vpadal folds them into 32-bit lanes [row A (k01), row A (k23), row B ..]; per
// block one vpadd per row quad leaves one lane per row.

BLIP2_INLINE int8x16_t broadcast4_neon(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

BLIP2_INLINE float32x4_t scales4_neon(const uint16_t *h) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))); }

BLIP2_INLINE void store_panel_neon(float32x4_t acc[][2], float *out, const int T) {
    float lanes[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        vst1q_f32(lanes, acc[t][0]);
        vst1q_f32(lanes + 4, acc[t][1]);
        BLIP2_UNROLL for (int r = 0; r < 8; r++) out[r * T + t] = lanes[r];
    }
}

// The quantized values, scales and (q4) minimums of block b of a panel row group; a one-token tile
// (`streaming`) also asks for the memory ahead of it.
BLIP2_INLINE void panel_block_neon(const void *panels, size_t b, bool is_q4, bool streaming, const uint8_t **qs, const uint16_t **d,
                                   const uint16_t **m) {
    if (is_q4) {
        const blip2_panel_q4 *p = (const blip2_panel_q4 *)panels + b;
        if (streaming) blip2_prefetch_panel(p, sizeof *p);
        *qs = p->qs; *d = p->d; *m = p->m;
    } else {
        const blip2_panel_q8 *p = (const blip2_panel_q8 *)panels + b;
        if (streaming) blip2_prefetch_panel(p, sizeof *p);
        *qs = (const uint8_t *)p->qs; *d = p->d; *m = NULL;
    }
}

// One block's integer row sums (rows 0..3, 4..7) into a token's f32 accumulators: d_w d_a dot, plus m_w s_a
// for q4 (m non-NULL).
BLIP2_INLINE void accumulate_panel_neon(float32x4_t acc[2], int32x4_t rows03, int32x4_t rows47, const uint16_t *d, const uint16_t *m,
                                        const blip2_block_q8a *a) {
    acc[0] = vfmaq_f32(acc[0], vcvtq_f32_s32(rows03), vmulq_n_f32(scales4_neon(d), a->d));
    acc[1] = vfmaq_f32(acc[1], vcvtq_f32_s32(rows47), vmulq_n_f32(scales4_neon(d + 4), a->d));
    if (m) {
        acc[0] = vfmaq_n_f32(acc[0], scales4_neon(m), a->s);
        acc[1] = vfmaq_n_f32(acc[1], scales4_neon(m + 4), a->s);
    }
}

// Two groups g (w*) and g + 1 (v*) of rows 0..3 (first register) and 4..7 (second) against their
// broadcast activation bytes a and c, into the four row-pair accumulators.
BLIP2_INLINE void two_groups_neon(int32x4_t s[4], int8x16_t w0, int8x16_t w1, int8x16_t v0, int8x16_t v1, int8x16_t a, int8x16_t c) {
    s[0] = vpadalq_s16(s[0], vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(a)), vget_low_s8(v0), vget_low_s8(c)));
    s[1] = vpadalq_s16(s[1], vmlal_high_s8(vmull_high_s8(w0, a), v0, c));
    s[2] = vpadalq_s16(s[2], vmlal_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(a)), vget_low_s8(v1), vget_low_s8(c)));
    s[3] = vpadalq_s16(s[3], vmlal_high_s8(vmull_high_s8(w1, a), v1, c));
}

BLIP2_INLINE void tile_qp_neon(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool is_q4) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_block_q8a *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const uint8x16_t low = vdupq_n_u8(0x0f);
    float32x4_t acc[4][2];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0);
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *qs;
        const uint16_t *d, *m;
        panel_block_neon(wv[0], b, is_q4, T == 1, &qs, &d, &m);
        int32x4_t s[4][4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) BLIP2_UNROLL for (int i = 0; i < 4; i++) s[t][i] = vdupq_n_s32(0);
        BLIP2_UNROLL for (int pair = 0; pair < 4; pair++) {
            int8x16_t w0, w1, v0, v1;
            if (is_q4) {
                uint8x16_t raw0 = vld1q_u8(qs + 32 * pair), raw1 = vld1q_u8(qs + 32 * pair + 16);
                w0 = vreinterpretq_s8_u8(vandq_u8(raw0, low)); v0 = vreinterpretq_s8_u8(vshrq_n_u8(raw0, 4));
                w1 = vreinterpretq_s8_u8(vandq_u8(raw1, low)); v1 = vreinterpretq_s8_u8(vshrq_n_u8(raw1, 4));
            } else {
                const int8_t *q = (const int8_t *)qs + 64 * pair;
                w0 = vld1q_s8(q); w1 = vld1q_s8(q + 16); v0 = vld1q_s8(q + 32); v1 = vld1q_s8(q + 48);
            }
            BLIP2_UNROLL for (int t = 0; t < T; t++)
                two_groups_neon(s[t], w0, w1, v0, v1, broadcast4_neon(x[t][b].qs + 8 * pair), broadcast4_neon(x[t][b].qs + 8 * pair + 4));
        }
        BLIP2_UNROLL for (int t = 0; t < T; t++)
            accumulate_panel_neon(acc[t], vpaddq_s32(s[t][0], s[t][1]), vpaddq_s32(s[t][2], s[t][3]), d, m, &x[t][b]);
    }
    store_panel_neon(acc, out, T);
}

static void q8p_mv_neon(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_neon(w, x, n, out, 1, false); }
static void q8p_mm_neon(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_neon(w, x, n, out, 3, false); }
static void q4p_mv_neon(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_neon(w, x, n, out, 1, true); }
static void q4p_mm_neon(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_neon(w, x, n, out, 3, true); }

// MARK: Super-block panels (q4k, q3k, q6k): q4p's register layout (16 bytes hold 4 inputs of 4 rows), the
// sub-block scales applied in the integer domain. Per sub-block and token the products give one int32 sum
// per row (sdot, or widening multiplies folded to 32 bits), which a vmla by the 8 rows' sub-scales adds into
// the super-block's sums; float work is one convert and FMA per super-block, row quad and token (q4k: two,
// the minimums against the activation's 32-input sums by vmlal by lane). The q3k/q6k value offsets (4, 32)
// start each sub-block's sums at -offset * (the activation's 16-input sum), so they cost no extra step.
// The frames (super-block walk, header, scales, float accumulation) are shared by NEON and dotprod through
// BLIP2_KQ_TILES below; only the product of one sub-block (`rows_*`) differs.
// The one-token tiles prefetch a whole super-block's length ahead even before a short last one (the lines
// past it are the next panel's, read next anyway): a constant length keeps the prefetches straight-line.

// q8k: bit-identical to the reference. The nm forms of min and max are fmaxf/fminf (a NaN input loses), and
// vcvtnq rounds to nearest even like rintf.
static void quantize_q8k_neon(const float *x, blip2_block_q8k *y, size_t n) {
    const float32x4_t top = vdupq_n_f32(127.0f), bottom = vdupq_n_f32(-127.0f);
    for (size_t b = 0; b * BLIP2_SUPERBLOCK < n; b++) {
        const size_t count = n - b * BLIP2_SUPERBLOCK < BLIP2_SUPERBLOCK ? n - b * BLIP2_SUPERBLOCK : BLIP2_SUPERBLOCK;
        const float *xb = x + b * BLIP2_SUPERBLOCK;
        float32x4_t m0 = vdupq_n_f32(0), m1 = vdupq_n_f32(0);
        for (size_t i = 0; i < count; i += 8) {
            m0 = vmaxnmq_f32(m0, vabsq_f32(vld1q_f32(xb + i)));
            m1 = vmaxnmq_f32(m1, vabsq_f32(vld1q_f32(xb + i + 4)));
        }
        const float d = blip2_q8a_scale(vmaxnmvq_f32(vmaxnmq_f32(m0, m1)));
        const float32x4_t inverse = vdupq_n_f32(blip2_q8a_inverse(d));
        if (count < BLIP2_SUPERBLOCK) memset(&y[b], 0, sizeof y[b]);
        y[b].d = d;
        for (size_t i = 0; i < count; i += 16) {
            int16x8_t halves[2];
            BLIP2_UNROLL for (int h = 0; h < 2; h++) {
                int32x4_t q[2];
                BLIP2_UNROLL for (int j = 0; j < 2; j++) {
                    float32x4_t v = vmulq_f32(vld1q_f32(xb + i + 8 * h + 4 * j), inverse);
                    q[j] = vcvtnq_s32_f32(vmaxnmq_f32(vminnmq_f32(v, top), bottom));
                }
                halves[h] = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
            }
            vst1q_s8(y[b].qs + i, vcombine_s8(vmovn_s16(halves[0]), vmovn_s16(halves[1])));
            y[b].sums[i / 16] = vaddvq_s16(vaddq_s16(halves[0], halves[1]));   // at most 16 * 127
        }
    }
}

// Shift amounts of the NEON shift intrinsics must be literals; callers pass constants, so this folds.
BLIP2_INLINE uint8x16_t shift_right_neon(uint8x16_t v, int bits) {
    switch (bits) {
    case 1: return vshrq_n_u8(v, 1);
    case 2: return vshrq_n_u8(v, 2);
    case 3: return vshrq_n_u8(v, 3);
    case 4: return vshrq_n_u8(v, 4);
    case 5: return vshrq_n_u8(v, 5);
    case 6: return vshrq_n_u8(v, 6);
    case 7: return vshrq_n_u8(v, 7);
    default: return v;
    }
}

// A 6-bit field split in two planes, per byte: a nibble (the low half of `low`, or its high half when
// `upper`) and bits 2k..2k+1 of `high` above it. q4k's and q3k's sub-scales and q6k's values are stored so.
BLIP2_INLINE uint8x16_t six_bits_neon(uint8x16_t low, bool upper, uint8x16_t high, int k) {
    const uint8x16_t crumb4 = vdupq_n_u8(0x30), nibble = vdupq_n_u8(0x0f);
    if (k == 0 && !upper) return vsliq_n_u8(low, vandq_u8(high, vdupq_n_u8(0x03)), 4);
    uint8x16_t crumb = k == 0 ? vshlq_n_u8(high, 4) : k == 1 ? vshlq_n_u8(high, 2) : k == 2 ? high : vshrq_n_u8(high, 2);
    crumb = vandq_u8(crumb, crumb4);   // bits 2k..2k+1 of high at bits 4..5
    return upper ? vsriq_n_u8(crumb, low, 4) : vbslq_u8(nibble, low, crumb);
}

// Eight sub-scales (one sub-block, rows 0..7) as two int32 quads for vmla.
BLIP2_INLINE void scales_neon(const int8_t *s, int32x4_t out[2]) {
    int16x8_t wide = vmovl_s8(vld1_s8(s));
    out[0] = vmovl_s16(vget_low_s16(wide));
    out[1] = vmovl_high_s16(wide);
}

// q4k's header: the 6-bit sub-scales into `scales` (entry 8 j + r), and per token the minimums' integer sums
// sum_j m_j(r) * (the activation's sum over sub-block j's 32 inputs), rows 0..3 and 4..7. A short
// super-block's missing sub-blocks meet zero sums.
#define BLIP2_MIN_LANE(j)                                                                           \
    lo = vmlal_laneq_s16(lo, vget_low_s16(m[j]), chunk_sums, j);                                    \
    hi = vmlal_high_laneq_s16(hi, m[j], chunk_sums, j);

BLIP2_INLINE void q4k_header_neon(const blip2_panel_q4k *p, int8_t scales[64], const blip2_block_q8k *const x[], size_t s,
                                  int32x4_t minimum[][2], const int T) {
    uint8x16_t mins[4];
    BLIP2_UNROLL for (int half = 0; half < 2; half++) {   // entries 16 half.. (low nibbles) and 32 + 16 half.. (high)
        uint8x16_t low = vld1q_u8(p->scales_low + 16 * half), mlow = vld1q_u8(p->mins_low + 16 * half);
        uint8x16_t high = vld1q_u8(p->high + 16 * half);
        vst1q_s8(scales + 16 * half, vreinterpretq_s8_u8(six_bits_neon(low, false, high, 0)));
        vst1q_s8(scales + 32 + 16 * half, vreinterpretq_s8_u8(six_bits_neon(low, true, high, 1)));
        mins[half] = six_bits_neon(mlow, false, high, 2);
        mins[2 + half] = six_bits_neon(mlow, true, high, 3);
    }
    int16x8_t m[8];   // sub-block j, rows 0..7
    BLIP2_UNROLL for (int q = 0; q < 4; q++) {
        m[2 * q] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins[q])));
        m[2 * q + 1] = vreinterpretq_s16_u16(vmovl_high_u8(mins[q]));
    }
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        const int16_t *sums = x[t][s].sums;
        const int16x8_t chunk_sums = vpaddq_s16(vld1q_s16(sums), vld1q_s16(sums + 8));   // at most 32 * 127
        int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
        BLIP2_MIN_LANE(0) BLIP2_MIN_LANE(1) BLIP2_MIN_LANE(2) BLIP2_MIN_LANE(3)
        BLIP2_MIN_LANE(4) BLIP2_MIN_LANE(5) BLIP2_MIN_LANE(6) BLIP2_MIN_LANE(7)
        minimum[t][0] = lo;
        minimum[t][1] = hi;
    }
}

// q3k's 6-bit sub-scales (stored plus 32) into `scales` as signed values, entry 8 j + r.
BLIP2_INLINE void q3k_scales_neon(const blip2_panel_q3k *p, int8_t scales[128]) {
    const int8x16_t bias = vdupq_n_s8(32);
    BLIP2_UNROLL for (int half = 0; half < 2; half++) {
        uint8x16_t low0 = vld1q_u8(p->scales_low + 16 * half), low1 = vld1q_u8(p->scales_low + 32 + 16 * half);
        uint8x16_t high = vld1q_u8(p->scales_high + 16 * half);
        uint8x16_t e[4] = {six_bits_neon(low0, false, high, 0), six_bits_neon(low1, false, high, 1),
                           six_bits_neon(low0, true, high, 2), six_bits_neon(low1, true, high, 3)};
        BLIP2_UNROLL for (int q = 0; q < 4; q++) vst1q_s8(scales + 32 * q + 16 * half, vsubq_s8(vreinterpretq_s8_u8(e[q]), bias));
    }
}

// Values of one chunk, as groups g of 4 inputs: w[g][0] rows 0..3, w[g][1] rows 4..7.
// q4k (and q4p's block): the four nibble runs give groups 2p (low nibbles) and 2p + 1 (high).
BLIP2_INLINE void unpack_nibbles_neon(const uint8_t *qs, int8x16_t w[8][2]) {
    const uint8x16_t nibble = vdupq_n_u8(0x0f);
    BLIP2_UNROLL for (int p = 0; p < 4; p++) BLIP2_UNROLL for (int half = 0; half < 2; half++) {
        uint8x16_t raw = vld1q_u8(qs + 32 * p + 16 * half);
        w[2 * p][half] = vreinterpretq_s8_u8(vandq_u8(raw, nibble));
        w[2 * p + 1][half] = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
    }
}

// q6k, sub-block h of a chunk (groups 4h..4h+3): nibble runs 2h and 2h + 1 below crumb run h.
BLIP2_INLINE void unpack_q6k_neon(const uint8_t *chunk, int h, int8x16_t w[4][2]) {
    BLIP2_UNROLL for (int half = 0; half < 2; half++) {
        uint8x16_t n0 = vld1q_u8(chunk + 64 * h + 16 * half), n1 = vld1q_u8(chunk + 64 * h + 32 + 16 * half);
        uint8x16_t crumbs = vld1q_u8(chunk + 128 + 32 * h + 16 * half);
        w[0][half] = vreinterpretq_s8_u8(six_bits_neon(n0, false, crumbs, 0));
        w[1][half] = vreinterpretq_s8_u8(six_bits_neon(n0, true, crumbs, 1));
        w[2][half] = vreinterpretq_s8_u8(six_bits_neon(n1, false, crumbs, 2));
        w[3][half] = vreinterpretq_s8_u8(six_bits_neon(n1, true, crumbs, 3));
    }
}

// q3k, sub-block h: group 4h + k's low 2 bits at bit 2k of crumb run h, its top bit at bit 4h + k of the bit
// run (`top`, both halves, loaded once per chunk). sli puts that bit above the crumb; the and drops the rest:
// about 4 instructions per 16 values (2 shifts, sli, and), 58 per chunk, which is most of the one-token q3k
// tile (dotprod: 103 instructions per chunk, 16 of them sdot). Taking the top bit apart instead (a second
// sdot against a cmtst mask) trades those for as many sdots per token, so it is not done.
BLIP2_INLINE void unpack_q3k_neon(const uint8_t *chunk, const uint8x16_t top[2], int h, int8x16_t w[4][2]) {
    const uint8x16_t seven = vdupq_n_u8(7);
    BLIP2_UNROLL for (int half = 0; half < 2; half++) {
        uint8x16_t crumbs = vld1q_u8(chunk + 32 * h + 16 * half);
        BLIP2_UNROLL for (int k = 0; k < 4; k++) {
            uint8x16_t v = vsliq_n_u8(shift_right_neon(crumbs, 2 * k), shift_right_neon(top[half], 4 * h + k), 2);
            w[k][half] = vreinterpretq_s8_u8(vandq_u8(v, seven));
        }
    }
}

// dot[t] += rows[t] * the sub-block's scales (rows 0..3, 4..7): the sub-scales in the integer domain.
BLIP2_INLINE void add_scaled_rows_neon(int32x4_t dot[][2], int32x4_t rows[][2], const int32x4_t scale[2], const int T) {
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        dot[t][0] = vmlaq_s32(dot[t][0], rows[t][0], scale[0]);
        dot[t][1] = vmlaq_s32(dot[t][1], rows[t][1], scale[1]);
    }
}

// Per token, d_w d_a times the super-block's integer row sums (rows 0..3, 4..7) into the accumulators, or
// taken off them (`subtract`: q4k's minimums, with dmin).
BLIP2_INLINE void accumulate_superblock_neon(float32x4_t acc[][2], int32x4_t sums[][2], const uint16_t *d, const blip2_block_q8k *const x[],
                                             size_t s, bool subtract, const int T) {
    const float32x4_t d0 = scales4_neon(d), d1 = scales4_neon(d + 4);
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        const float da = x[t][s].d;
        if (subtract) {
            acc[t][0] = vfmsq_f32(acc[t][0], vcvtq_f32_s32(sums[t][0]), vmulq_n_f32(d0, da));
            acc[t][1] = vfmsq_f32(acc[t][1], vcvtq_f32_s32(sums[t][1]), vmulq_n_f32(d1, da));
        } else {
            acc[t][0] = vfmaq_f32(acc[t][0], vcvtq_f32_s32(sums[t][0]), vmulq_n_f32(d0, da));
            acc[t][1] = vfmaq_f32(acc[t][1], vcvtq_f32_s32(sums[t][1]), vmulq_n_f32(d1, da));
        }
    }
}

// The super-block tiles for one sub-block product `rows_fn(w, groups, a, init, rows, T)`: `groups` groups of
// w (4 or 8, i.e. 16 or 32 inputs) against each token's activation bytes a[t], into rows[t][0..1] = init[t]
// plus the per-row sums. Instantiated for NEON and, inside the dotprod target, for sdot.
#define BLIP2_KQ_TILES(suffix, rows_fn, mm_tokens)                                                               \
    BLIP2_INLINE void tile_q4k_##suffix(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) { \
        const blip2_block_q8k *x[4];                                                                            \
        BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];                         \
        float32x4_t acc[4][2];                                                                                  \
        BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0);                        \
        const char *block = (const char *)wv[0];                                                                \
        for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {                                                     \
            const size_t count = blip2_superblock_count(n, s);                                                   \
            const blip2_panel_q4k *p = (const blip2_panel_q4k *)block;                                          \
            if (T == 1) blip2_prefetch_panel(p, sizeof *p);                                                     \
            int8_t scales[64];                                                                                  \
            int32x4_t dot[4][2], minimum[4][2], zero[4];                                                        \
            q4k_header_neon(p, scales, x, s, minimum, T);                                                       \
            BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t][0] = dot[t][1] = zero[t] = vdupq_n_s32(0);          \
            for (size_t c = 0; c < count / 32; c++) {                                                           \
                int8x16_t w[8][2];                                                                              \
                int32x4_t scale[2], rows[4][2];                                                                 \
                const int8_t *a[4];                                                                             \
                unpack_nibbles_neon(p->qs + 128 * c, w);                                                        \
                scales_neon(scales + 8 * c, scale);                                                             \
                BLIP2_UNROLL for (int t = 0; t < T; t++) a[t] = x[t][s].qs + 32 * c;                            \
                rows_fn(w, 8, a, zero, rows, T);                                                                \
                add_scaled_rows_neon(dot, rows, scale, T);                                                      \
            }                                                                                                   \
            accumulate_superblock_neon(acc, dot, p->d, x, s, false, T);                                         \
            accumulate_superblock_neon(acc, minimum, p->dmin, x, s, true, T);                                   \
            block += offsetof(blip2_panel_q4k, qs) + count * 4;                                                 \
        }                                                                                                       \
        store_panel_neon(acc, out, T);                                                                          \
    }                                                                                                           \
    BLIP2_INLINE void tile_q36k_##suffix(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool six) { \
        const blip2_block_q8k *x[4];                                                                            \
        BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];                         \
        const size_t header = six ? offsetof(blip2_panel_q6k, qs) : offsetof(blip2_panel_q3k, qs), bits = six ? 6 : 3; \
        const int32_t offset = six ? 32 : 4;                                                                    \
        float32x4_t acc[4][2];                                                                                  \
        BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0);                        \
        const char *block = (const char *)wv[0];                                                                \
        for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {                                                     \
            const size_t count = blip2_superblock_count(n, s);                                                   \
            if (T == 1) blip2_prefetch_panel(block, header + BLIP2_SUPERBLOCK * bits);                          \
            int8_t q3k_scales[128];                                                                             \
            const int8_t *scales = q3k_scales;                                                                  \
            if (six) scales = ((const blip2_panel_q6k *)block)->scales;                                         \
            else q3k_scales_neon((const blip2_panel_q3k *)block, q3k_scales);                                   \
            const uint8_t *qs = (const uint8_t *)block + header;                                                \
            int32x4_t dot[4][2];                                                                                \
            BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t][0] = dot[t][1] = vdupq_n_s32(0);                    \
            for (size_t c = 0; c < count / 32; c++) {                                                           \
                const uint8_t *chunk = qs + c * 32 * bits;                                                      \
                uint8x16_t top[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};                                             \
                if (!six) { top[0] = vld1q_u8(chunk + 64); top[1] = vld1q_u8(chunk + 80); }                     \
                BLIP2_UNROLL for (int h = 0; h < 2; h++) {                                                      \
                    const size_t j = 2 * c + h;                                                                 \
                    int8x16_t w[4][2];                                                                          \
                    int32x4_t scale[2], init[4], rows[4][2];                                                    \
                    const int8_t *a[4];                                                                         \
                    if (six) unpack_q6k_neon(chunk, h, w);                                                      \
                    else unpack_q3k_neon(chunk, top, h, w);                                                     \
                    scales_neon(scales + 8 * j, scale);                                                         \
                    BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                  \
                        a[t] = x[t][s].qs + 16 * j;                                                             \
                        init[t] = vdupq_n_s32(-offset * x[t][s].sums[j]);                                       \
                    }                                                                                           \
                    rows_fn(w, 4, a, init, rows, T);                                                            \
                    add_scaled_rows_neon(dot, rows, scale, T);                                                  \
                }                                                                                               \
            }                                                                                                   \
            accumulate_superblock_neon(acc, dot, (const uint16_t *)block, x, s, false, T);                      \
            block += header + count * bits;                                                                     \
        }                                                                                                       \
        store_panel_neon(acc, out, T);                                                                          \
    }                                                                                                           \
    static void q4k_mv_##suffix(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_##suffix(w, x, n, out, 1); } \
    static void q4k_mm_##suffix(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_##suffix(w, x, n, out, mm_tokens); } \
    static void q3k_mv_##suffix(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_##suffix(w, x, n, out, 1, false); } \
    static void q3k_mm_##suffix(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_##suffix(w, x, n, out, mm_tokens, false); } \
    static void q6k_mv_##suffix(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_##suffix(w, x, n, out, 1, true); } \
    static void q6k_mm_##suffix(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_##suffix(w, x, n, out, mm_tokens, true); }

// One sub-block without sdot: for each group, vmull/vmlal of its 16 bytes against the token's 4 broadcast
// activation bytes, summed over the sub-block's groups in 16-bit lanes [row A k0..k3, row B k0..k3]; then
// folded to one int32 per row. Bounds: 8 groups only come from q4k (levels <= 15), a lane <= 8 * 15 * 127 =
// 15240, so pairs of lanes (30480) still fit 16 bits; 4 groups of q6k reach 4 * 63 * 127 = 32004 per lane and
// widen before the pairs are added. Summing a whole sub-block in 16 bits (where q4p's tile folds every two
// groups with sadalp) leaves 6 folding instructions per q4k chunk and token instead of 14: clang -O2 emits
// 81 instructions per chunk for the one-token q4k tile (32 of them multiplies), 767 per super-block, where
// q4p takes 984 for the same 256 inputs (docs/KERNELS.md has the table).
BLIP2_INLINE void rows_neon(int8x16_t w[][2], const int groups, const int8_t *const a[], const int32x4_t init[], int32x4_t rows[][2],
                            const int T) {
    int16x8_t lanes[4][4];   // [token][rows 0-1, 2-3, 4-5, 6-7]
    BLIP2_UNROLL for (int g = 0; g < groups; g++) BLIP2_UNROLL for (int t = 0; t < T; t++) {
        int8x16_t b = broadcast4_neon(a[t] + 4 * g);
        // clang rewrites smull2 against a known splat as ext + smull (16 more instructions per chunk on the
        // weight side); hiding the splat keeps smull2/smlal2.
        __asm__("" : "+w"(b));
        if (g == 0) {
            lanes[t][0] = vmull_s8(vget_low_s8(w[g][0]), vget_low_s8(b));
            lanes[t][1] = vmull_high_s8(w[g][0], b);
            lanes[t][2] = vmull_s8(vget_low_s8(w[g][1]), vget_low_s8(b));
            lanes[t][3] = vmull_high_s8(w[g][1], b);
        } else {
            lanes[t][0] = vmlal_s8(lanes[t][0], vget_low_s8(w[g][0]), vget_low_s8(b));
            lanes[t][1] = vmlal_high_s8(lanes[t][1], w[g][0], b);
            lanes[t][2] = vmlal_s8(lanes[t][2], vget_low_s8(w[g][1]), vget_low_s8(b));
            lanes[t][3] = vmlal_high_s8(lanes[t][3], w[g][1], b);
        }
    }
    BLIP2_UNROLL for (int t = 0; t < T; t++) BLIP2_UNROLL for (int half = 0; half < 2; half++) {
        int16x8_t x0 = lanes[t][2 * half], x1 = lanes[t][2 * half + 1];
        int32x4_t sums = groups == 8 ? vpaddlq_s16(vpaddq_s16(x0, x1)) : vpaddq_s32(vpaddlq_s16(x0), vpaddlq_s16(x1));
        rows[t][half] = vaddq_s32(init[t], sums);
    }
}

BLIP2_KQ_TILES(neon, rows_neon, 3)

// vmlal.s8 (8 multiply-adds into 16-bit lanes) in 12 independent chains.
static uint64_t int8_peak_neon(uint64_t iterations) {
    int16x8_t v[12];
    int8x8_t a = vdup_n_s8(3), b = vdup_n_s8(5);
    for (int j = 0; j < 12; j++) v[j] = vdupq_n_s16((int16_t)j);
    for (uint64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+w"(a), "+w"(b));
        for (int j = 0; j < 12; j++) v[j] = vmlal_s8(v[j], a, b);
    }
    int16x8_t s = v[0];
    for (int j = 1; j < 12; j++) s = vaddq_s16(s, v[j]);
    volatile int sink = vgetq_lane_s16(s, 0);
    (void)sink;
    return iterations * 12 * 8 * 2;
}

const blip2_kernels blip2_kernels_neon = {
    .isa = BLIP2_ISA_NEON,
    .name = "neon",
    .quantize_q8a = quantize_q8a_neon,
    .quantize_q8k = quantize_q8k_neon,
    .vec_dot_q8_q8a = vec_dot_q8_q8a_neon,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_neon,
    .vec_dot_f32 = vec_dot_f32_neon,
    .vec_dot_f16 = vec_dot_f16_neon,
    .exp_row = exp_row_neon,
    .softmax = softmax_neon,
    .gelu = gelu_neon,
    .matvec = {
        [BLIP2_TYPE_F32] = {f32_mv_neon, 4, 1}, [BLIP2_TYPE_F16] = {f16_mv_neon, 4, 1},
        [BLIP2_TYPE_Q8] = {q8_mv_neon, 4, 1}, [BLIP2_TYPE_Q4] = {q4_mv_neon, 4, 1},
        [BLIP2_TYPE_Q8P] = {q8p_mv_neon, 8, 1}, [BLIP2_TYPE_Q4P] = {q4p_mv_neon, 8, 1},
        [BLIP2_TYPE_Q4K] = {q4k_mv_neon, 8, 1}, [BLIP2_TYPE_Q3K] = {q3k_mv_neon, 8, 1}, [BLIP2_TYPE_Q6K] = {q6k_mv_neon, 8, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {f32_mm_neon, 4, 4}, [BLIP2_TYPE_F16] = {f16_mm_neon, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_neon, 2, 4}, [BLIP2_TYPE_Q4] = {q4_mm_neon, 2, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_neon, 8, 3}, [BLIP2_TYPE_Q4P] = {q4p_mm_neon, 8, 3},
        [BLIP2_TYPE_Q4K] = {q4k_mm_neon, 8, 3}, [BLIP2_TYPE_Q3K] = {q3k_mm_neon, 8, 3}, [BLIP2_TYPE_Q6K] = {q6k_mm_neon, 8, 3},
    },
    .int8_peak = int8_peak_neon,
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


// Panels with sdot: one by-lane sdot multiplies 4 inputs of 4 rows by the 4 activation bytes of one lane of
// the block's activation registers; the lane is an immediate, so the groups are spelled out.
#define BLIP2_SDOT_GROUP(lo, hi, w0, w1, a, lane, T)                                         \
    BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                \
        lo[t] = vdotq_laneq_s32(lo[t], w0, a[t], lane);                                      \
        hi[t] = vdotq_laneq_s32(hi[t], w1, a[t], lane);                                      \
    }

// Four groups (16 inputs of 8 rows: w[g][0] rows 0..3, w[g][1] rows 4..7) against lanes 0..3 of each token's a.
BLIP2_INLINE void four_groups_sdot(int32x4_t lo[], int32x4_t hi[], int8x16_t w[4][2], const int8x16_t a[], const int T) {
    BLIP2_SDOT_GROUP(lo, hi, w[0][0], w[0][1], a, 0, T)
    BLIP2_SDOT_GROUP(lo, hi, w[1][0], w[1][1], a, 1, T)
    BLIP2_SDOT_GROUP(lo, hi, w[2][0], w[2][1], a, 2, T)
    BLIP2_SDOT_GROUP(lo, hi, w[3][0], w[3][1], a, 3, T)
}

BLIP2_INLINE void tile_qp_sdot(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool is_q4) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_block_q8a *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    float32x4_t acc[4][2];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0);
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *qs;
        const uint16_t *d, *m;
        panel_block_neon(wv[0], b, is_q4, T == 1, &qs, &d, &m);
        int8x16_t a0[4], a1[4];
        int32x4_t lo[4], hi[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            a0[t] = vld1q_s8(x[t][b].qs);
            a1[t] = vld1q_s8(x[t][b].qs + 16);
            lo[t] = hi[t] = vdupq_n_s32(0);
        }
        int8x16_t w[8][2];   // [group][rows 0..3, rows 4..7]
        if (is_q4) {
            unpack_nibbles_neon(qs, w);
        } else {
            BLIP2_UNROLL for (int g = 0; g < 8; g++) {
                w[g][0] = vld1q_s8((const int8_t *)qs + 32 * g);
                w[g][1] = vld1q_s8((const int8_t *)qs + 32 * g + 16);
            }
        }
        four_groups_sdot(lo, hi, w, a0, T);
        four_groups_sdot(lo, hi, w + 4, a1, T);
        BLIP2_UNROLL for (int t = 0; t < T; t++) accumulate_panel_neon(acc[t], lo[t], hi[t], d, m, &x[t][b]);
    }
    store_panel_neon(acc, out, T);
}

static void q8p_mv_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 1, false); }
static void q8p_mm_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 4, false); }
static void q4p_mv_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 1, true); }
static void q4p_mm_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 4, true); }

// One sub-block with sdot: each token's activation bytes in 16-byte registers, one by-lane sdot per group and
// row quad, the sums starting from `init` (zero, or the q3k/q6k offset term: a dup where zero would be a
// movi). The one-token q4k tile is 49 instructions per chunk (16 sdot, 16 and/shift, 2 mla, loads), 511 per
// super-block with the header and float work, as many as q4p's tile for the same 256 inputs.
BLIP2_INLINE void rows_sdot(int8x16_t w[][2], const int groups, const int8_t *const a[], const int32x4_t init[], int32x4_t rows[][2],
                            const int T) {
    int32x4_t lo[4], hi[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) lo[t] = hi[t] = init[t];
    BLIP2_UNROLL for (int q = 0; q < groups / 4; q++) {
        int8x16_t aq[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) aq[t] = vld1q_s8(a[t] + 16 * q);
        four_groups_sdot(lo, hi, w + 4 * q, aq, T);
    }
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        rows[t][0] = lo[t];
        rows[t][1] = hi[t];
    }
}

BLIP2_KQ_TILES(sdot, rows_sdot, 4)

// sdot (16 multiply-adds) in 12 independent chains.
static uint64_t int8_peak_sdot(uint64_t iterations) {
    int32x4_t v[12];
    int8x16_t a = vdupq_n_s8(3), b = vdupq_n_s8(5);
    for (int j = 0; j < 12; j++) v[j] = vdupq_n_s32(j);
    for (uint64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+w"(a), "+w"(b));
        for (int j = 0; j < 12; j++) v[j] = vdotq_s32(v[j], a, b);
    }
    int32x4_t s = v[0];
    for (int j = 1; j < 12; j++) s = vaddq_s32(s, v[j]);
    volatile int sink = vgetq_lane_s32(s, 0);
    (void)sink;
    return iterations * 12 * 16 * 2;
}

BLIP2_END_DOTPROD

const blip2_kernels blip2_kernels_dotprod = {
    .isa = BLIP2_ISA_DOTPROD,
    .name = "dotprod",
    .quantize_q8a = quantize_q8a_neon,
    .quantize_q8k = quantize_q8k_neon,
    .vec_dot_q8_q8a = vec_dot_q8_q8a_sdot,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_sdot,
    .vec_dot_f32 = vec_dot_f32_sdot,
    .vec_dot_f16 = vec_dot_f16_sdot,
    .exp_row = exp_row_neon,
    .softmax = softmax_neon,
    .gelu = gelu_neon,
    .matvec = {
        [BLIP2_TYPE_F32] = {f32_mv_neon, 4, 1}, [BLIP2_TYPE_F16] = {f16_mv_neon, 4, 1},
        [BLIP2_TYPE_Q8] = {q8_mv_sdot, 4, 1}, [BLIP2_TYPE_Q4] = {q4_mv_sdot, 4, 1},
        [BLIP2_TYPE_Q8P] = {q8p_mv_sdot, 8, 1}, [BLIP2_TYPE_Q4P] = {q4p_mv_sdot, 8, 1},
        [BLIP2_TYPE_Q4K] = {q4k_mv_sdot, 8, 1}, [BLIP2_TYPE_Q3K] = {q3k_mv_sdot, 8, 1}, [BLIP2_TYPE_Q6K] = {q6k_mv_sdot, 8, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {f32_mm_neon, 4, 4}, [BLIP2_TYPE_F16] = {f16_mm_neon, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_sdot, 4, 4}, [BLIP2_TYPE_Q4] = {q4_mm_sdot, 4, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_sdot, 8, 4}, [BLIP2_TYPE_Q4P] = {q4p_mm_sdot, 8, 4},
        [BLIP2_TYPE_Q4K] = {q4k_mm_sdot, 8, 4}, [BLIP2_TYPE_Q3K] = {q3k_mm_sdot, 8, 4}, [BLIP2_TYPE_Q6K] = {q6k_mm_sdot, 8, 4},
    },
    .int8_peak = int8_peak_sdot,
};

#endif
