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
    .quantize_q8k = blip2_quantize_q8k_ref,
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
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {f32_mm_neon, 4, 4}, [BLIP2_TYPE_F16] = {f16_mm_neon, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_neon, 2, 4}, [BLIP2_TYPE_Q4] = {q4_mm_neon, 2, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_neon, 8, 3}, [BLIP2_TYPE_Q4P] = {q4p_mm_neon, 8, 3},
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
// the block's activation registers; the lane is an immediate, so the 8 groups are spelled out.
#define BLIP2_SDOT_GROUP(lo, hi, w0, w1, a, lane, T)                                         \
    BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                \
        lo[t] = vdotq_laneq_s32(lo[t], w0, a[t], lane);                                      \
        hi[t] = vdotq_laneq_s32(hi[t], w1, a[t], lane);                                      \
    }

BLIP2_INLINE void tile_qp_sdot(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool is_q4) {
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
        int8x16_t a0[4], a1[4];
        int32x4_t lo[4], hi[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            a0[t] = vld1q_s8(x[t][b].qs);
            a1[t] = vld1q_s8(x[t][b].qs + 16);
            lo[t] = hi[t] = vdupq_n_s32(0);
        }
        int8x16_t w[8][2];   // [group][rows 0..3, rows 4..7]
        if (is_q4) {
            BLIP2_UNROLL for (int pair = 0; pair < 4; pair++) {
                uint8x16_t raw0 = vld1q_u8(qs + 32 * pair), raw1 = vld1q_u8(qs + 32 * pair + 16);
                w[2 * pair][0] = vreinterpretq_s8_u8(vandq_u8(raw0, low));
                w[2 * pair][1] = vreinterpretq_s8_u8(vandq_u8(raw1, low));
                w[2 * pair + 1][0] = vreinterpretq_s8_u8(vshrq_n_u8(raw0, 4));
                w[2 * pair + 1][1] = vreinterpretq_s8_u8(vshrq_n_u8(raw1, 4));
            }
        } else {
            BLIP2_UNROLL for (int g = 0; g < 8; g++) {
                w[g][0] = vld1q_s8((const int8_t *)qs + 32 * g);
                w[g][1] = vld1q_s8((const int8_t *)qs + 32 * g + 16);
            }
        }
        BLIP2_SDOT_GROUP(lo, hi, w[0][0], w[0][1], a0, 0, T)
        BLIP2_SDOT_GROUP(lo, hi, w[1][0], w[1][1], a0, 1, T)
        BLIP2_SDOT_GROUP(lo, hi, w[2][0], w[2][1], a0, 2, T)
        BLIP2_SDOT_GROUP(lo, hi, w[3][0], w[3][1], a0, 3, T)
        BLIP2_SDOT_GROUP(lo, hi, w[4][0], w[4][1], a1, 0, T)
        BLIP2_SDOT_GROUP(lo, hi, w[5][0], w[5][1], a1, 1, T)
        BLIP2_SDOT_GROUP(lo, hi, w[6][0], w[6][1], a1, 2, T)
        BLIP2_SDOT_GROUP(lo, hi, w[7][0], w[7][1], a1, 3, T)
        BLIP2_UNROLL for (int t = 0; t < T; t++) accumulate_panel_neon(acc[t], lo[t], hi[t], d, m, &x[t][b]);
    }
    store_panel_neon(acc, out, T);
}

static void q8p_mv_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 1, false); }
static void q8p_mm_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 4, false); }
static void q4p_mv_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 1, true); }
static void q4p_mm_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 4, true); }

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
    .quantize_q8k = blip2_quantize_q8k_ref,
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
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {f32_mm_neon, 4, 4}, [BLIP2_TYPE_F16] = {f16_mm_neon, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_sdot, 4, 4}, [BLIP2_TYPE_Q4] = {q4_mm_sdot, 4, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_sdot, 8, 4}, [BLIP2_TYPE_Q4P] = {q4p_mm_sdot, 8, 4},
    },
    .int8_peak = int8_peak_sdot,
};

#endif
