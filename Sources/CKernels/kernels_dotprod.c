// NEON with the Armv8.2 dot product (sdot): the table for cores that have it, e.g. Raspberry Pi 5's Cortex-A76.
// Compiled through a per-function target (BLIP2_BEGIN_DOTPROD), so the package builds for plain Armv8-A and
// kernels.c picks this table from HWCAP at run time. Shared pieces: kernels_arm.h.
#include "kernels_arm.h"

#if defined(__aarch64__)

// MARK: - NEON with dot product

BLIP2_BEGIN_DOTPROD

BLIP2_INLINE int32x4_t dot_block_sdot(weight_block_neon w, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w.lo, a0), w.hi, a1);
}

BLIP2_Q_TILE_NEON(tile_q8_sdot, unpack_q8_neon, dot_block_sdot, 0)
BLIP2_Q_TILE_NEON(tile_q4_sdot, unpack_q4_neon, dot_block_sdot, 1)

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
static void q8p_mm2_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 2, false); }
static void q8p_mm3_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 3, false); }
static void q4p_mm2_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 2, true); }
static void q4p_mm3_sdot(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_sdot(w, x, n, out, 3, true); }

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
    .quantize_q8a = blip2_quantize_q8a_neon,
    .quantize_q8k = blip2_quantize_q8k_neon,
    .exp_row = blip2_exp_row_neon,
    .softmax = blip2_softmax_neon,
    .gelu = blip2_gelu_neon,
    .matvec = {
        [BLIP2_TYPE_F32] = {blip2_f32_mv_neon, 4, 1}, [BLIP2_TYPE_F16] = {blip2_f16_mv_neon, 4, 1},
        [BLIP2_TYPE_Q8] = {q8_mv_sdot, 4, 1}, [BLIP2_TYPE_Q4] = {q4_mv_sdot, 4, 1},
        [BLIP2_TYPE_Q8P] = {q8p_mv_sdot, 8, 1}, [BLIP2_TYPE_Q4P] = {q4p_mv_sdot, 8, 1},
        [BLIP2_TYPE_Q4K] = {q4k_mv_sdot, 8, 1}, [BLIP2_TYPE_Q3K] = {q3k_mv_sdot, 8, 1}, [BLIP2_TYPE_Q6K] = {q6k_mv_sdot, 8, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {blip2_f32_mm_neon, 4, 4}, [BLIP2_TYPE_F16] = {blip2_f16_mm_neon, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_sdot, 4, 4}, [BLIP2_TYPE_Q4] = {q4_mm_sdot, 4, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_sdot, 8, 4}, [BLIP2_TYPE_Q4P] = {q4p_mm_sdot, 8, 4},
        [BLIP2_TYPE_Q4K] = {q4k_mm_sdot, 8, 4}, [BLIP2_TYPE_Q3K] = {q3k_mm_sdot, 8, 4}, [BLIP2_TYPE_Q6K] = {q6k_mm_sdot, 8, 4},
    },
    .matmul_narrow = {
        [BLIP2_TYPE_Q8P] = {NULL, NULL, q8p_mm2_sdot, q8p_mm3_sdot}, [BLIP2_TYPE_Q4P] = {NULL, NULL, q4p_mm2_sdot, q4p_mm3_sdot},
    },
    .int8_peak = int8_peak_sdot,
    .gemm_f32 = blip2_gemm_f32_neon,
    .store_tile = blip2_store_tile_neon,
};

#endif
