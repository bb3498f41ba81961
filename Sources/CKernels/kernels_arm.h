// What the two AArch64 tables share: kernels_neon.c (NEON, baseline on every AArch64 core: Raspberry Pi 4's
// Cortex-A72) and kernels_dotprod.c (NEON with the Armv8.2 dot product, sdot: Raspberry Pi 5's Cortex-A76,
// compiled through a per-function target so the package builds for plain Armv8-A and picks it from HWCAP at
// run time) include this. The pieces below are plain NEON; the dotprod functions inline them.
#pragma once
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

// Functions of kernels_neon.c that the dotprod table uses as they are (activation quantization is defined to
// be bit-identical on every path; the float functions and float tiles have no use for sdot).
void blip2_exp_row_neon(const float *x, float *y, size_t n);
void blip2_softmax_neon(float *x, size_t n);
void blip2_gelu_neon(float *x, size_t n);
void blip2_quantize_q8a_neon(const float *x, blip2_block_q8a *y, size_t n);
void blip2_quantize_q8k_neon(const float *x, blip2_block_q8k *y, size_t n);
void blip2_store_tile_neon(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                           float *y, size_t ldy);
void blip2_f32_mv_neon(const void *const *w, const void *const *x, size_t n, float *out);
void blip2_f32_mm_neon(const void *const *w, const void *const *x, size_t n, float *out);
void blip2_f16_mv_neon(const void *const *w, const void *const *x, size_t n, float *out);
void blip2_f16_mm_neon(const void *const *w, const void *const *x, size_t n, float *out);
void blip2_gemm_f32_neon(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                         float *c, size_t ldc);

BLIP2_INLINE float half_neon(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

BLIP2_INLINE float32x4_t load4_f32(const float *p) { return vld1q_f32(p); }
BLIP2_INLINE float32x4_t load4_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
BLIP2_INLINE float32x4_t zero4_neon(void) { return vdupq_n_f32(0); }

// e^(n ln 2 + r) for an integer-valued n in [-126, 127] and |r| <= ln 2 / 2 (plus rounding).
BLIP2_INLINE float32x4_t exp4_reduced_neon(float32x4_t n, float32x4_t r) {
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

BLIP2_INLINE float32x4_t exp4_neon(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(BLIP2_EXP_LO)), vdupq_n_f32(BLIP2_EXP_HI));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(BLIP2_LOG2E)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(BLIP2_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(BLIP2_LN2_LO));
    return exp4_reduced_neon(n, r);
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
    // e^(-z^2 + p) as one exponential of a two-part argument, as on x86 (BLIP2_EXP_GELU): a = -xx / 2 is
    // reduced by n ln 2, b = p - residual / 2 added after; below the exponential's range a is raised to meet it.
    float32x4_t a = vmulq_f32(xx, vdupq_n_f32(-0.5f)), b = vfmsq_f32(p, residual, vdupq_n_f32(0.5f));
    a = vmaxq_f32(a, vsubq_f32(vdupq_n_f32(BLIP2_EXP_LO), b));
    float32x4_t n = vrndnq_f32(vmulq_f32(vaddq_f32(a, b), vdupq_n_f32(BLIP2_LOG2E)));
    float32x4_t r = vfmsq_f32(a, n, vdupq_n_f32(BLIP2_LN2_HI));
    r = vaddq_f32(vfmsq_f32(r, n, vdupq_n_f32(BLIP2_LN2_LO)), b);
    float32x4_t e = exp4_reduced_neon(n, r);
    float32x4_t half_erfc = vmulq_f32(vmulq_f32(u, e), vdupq_n_f32(0.5f));
    float32x4_t phi = vbslq_f32(vcltzq_f32(x), half_erfc, vsubq_f32(vdupq_n_f32(1.0f), half_erfc));
    return vmulq_f32(x, phi);
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



BLIP2_FLOAT_TILE(tile_f32_neon, float32x4_t, 4, float, load4_f32, BLIP2_SAME, zero4_neon, vld1q_f32, vfmaq_f32, vaddvq_f32)
BLIP2_FLOAT_TILE(tile_f16_neon, float32x4_t, 4, uint16_t, load4_f16, half_neon, zero4_neon, vld1q_f32, vfmaq_f32, vaddvq_f32)
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

#endif
