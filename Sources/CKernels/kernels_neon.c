// NEON kernels (Advanced SIMD, every AArch64 core): the table for cores without the dot product, e.g. Raspberry
// Pi 4's Cortex-A72; the pieces it shares with the dotprod table are in kernels_arm.h.
#include "kernels_arm.h"

#if defined(__aarch64__)

void blip2_exp_row_neon(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, exp4_neon(vld1q_f32(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

void blip2_softmax_neon(float *x, size_t n) {
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

void blip2_gelu_neon(float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, gelu4_neon(vld1q_f32(x + i)));
    for (; i < n; i++) x[i] = blip2_gelu_ref(x[i]);
}

// MARK: Many-token f32 products (attention: scores Q K^T and the sums of values P V)

// 8 rows of a against `vectors` (1 or 2) registers of 4 columns of b: up to 16 accumulators, a's value
// multiplied in by lane. Rows past `rows` repeat the last row and are not stored.
BLIP2_INLINE void gemm_f32_block_neon(size_t rows, size_t k, float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                                      float *c, size_t ldc, const int vectors, const int R) {
    const float *ar[8];
    BLIP2_UNROLL for (int r = 0; r < R; r++) ar[r] = a + ((size_t)r < rows ? (size_t)r : rows - 1) * lda;
    float32x4_t acc[8][2];
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int v = 0; v < vectors; v++) acc[r][v] = vdupq_n_f32(0);
    for (size_t p = 0; p < k; p++) {
        const float *bp = b + p * ldb;
        float32x4_t bv[2];
        BLIP2_UNROLL for (int v = 0; v < vectors; v++) bv[v] = vld1q_f32(bp + 4 * v);
        BLIP2_UNROLL for (int r = 0; r < R; r++) {
            float x = ar[r][p];
            BLIP2_UNROLL for (int v = 0; v < vectors; v++) acc[r][v] = vfmaq_n_f32(acc[r][v], bv[v], x);
        }
    }
    BLIP2_UNROLL for (int r = 0; r < R; r++) {
        if ((size_t)r >= rows) break;
        BLIP2_UNROLL for (int v = 0; v < vectors; v++) vst1q_f32(c + r * ldc + 4 * v, vmulq_n_f32(acc[r][v], alpha));
    }
}

// Up to 8 rows of a against one column block; a single row (a decoding query's probabilities against its
// values) takes a one-row block: the 8-row block would repeat it 8 times.
BLIP2_INLINE void gemm_f32_rows_neon(size_t rows, size_t k, float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                                     float *c, size_t ldc, const int vectors) {
    if (rows == 1) gemm_f32_block_neon(rows, k, alpha, a, lda, b, ldb, c, ldc, vectors, 1);
    else gemm_f32_block_neon(rows, k, alpha, a, lda, b, ldb, c, ldc, vectors, 8);
}

// Column blocks of 8 outside, row blocks inside; a last block of 4 columns, then the last n % 4 columns one
// at a time (no masked loads here).
void blip2_gemm_f32_neon(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                         float *c, size_t ldc) {
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (size_t i = 0; i < m; i += 8) {
            size_t rows = m - i < 8 ? m - i : 8;
            gemm_f32_rows_neon(rows, k, alpha, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, 2);
        }
    }
    if (j + 4 <= n) {
        for (size_t i = 0; i < m; i += 8) {
            size_t rows = m - i < 8 ? m - i : 8;
            gemm_f32_rows_neon(rows, k, alpha, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, 1);
        }
        j += 4;
    }
    blip2_gemm_f32_columns(m, j, n, k, alpha, a, lda, b, ldb, c, ldc);
}

// A tile's results out (blip2_kernels.store_tile): a panel tile's [8 rows][2, 3 or 4 tokens] buffer is read
// by de-interleaving loads (vld2q/vld3q/vld4q: one register per token for 4 rows), stored a register at a time.
BLIP2_INLINE void store4_neon(float *y, float32x4_t v, const float *bias) { vst1q_f32(y, bias ? vaddq_f32(v, vld1q_f32(bias)) : v); }

void blip2_store_tile_neon(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                           float *y, size_t ldy) {
    if (tokens == 1) {
        size_t r = 0;
        for (; r + 4 <= nr; r += 4) store4_neon(y + r, vld1q_f32(out + r), bias ? bias + r : NULL);
        for (; r < nr; r++) y[r] = bias ? out[r] + bias[r] : out[r];
        return;
    }
    if (rows != 8 || nr != 8 || tokens > 4) {
        blip2_store_tile_ref(out, rows, tokens, nr, nt, bias, y, ldy);
        return;
    }
    float32x4_t column[2][4];
    for (int half = 0; half < 2; half++) {
        const float *o = out + 4 * half * tokens;
        if (tokens == 2) {
            float32x4x2_t v = vld2q_f32(o);
            column[half][0] = v.val[0], column[half][1] = v.val[1];
        } else if (tokens == 3) {
            float32x4x3_t v = vld3q_f32(o);
            column[half][0] = v.val[0], column[half][1] = v.val[1], column[half][2] = v.val[2];
        } else {
            float32x4x4_t v = vld4q_f32(o);
            column[half][0] = v.val[0], column[half][1] = v.val[1], column[half][2] = v.val[2], column[half][3] = v.val[3];
        }
    }
    for (size_t t = 0; t < nt; t++) {
        store4_neon(y + t * ldy, column[0][t], bias);
        store4_neon(y + t * ldy + 4, column[1][t], bias ? bias + 4 : NULL);
    }
}

void blip2_quantize_q8a_neon(const float *x, blip2_block_q8a *y, size_t n) {
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

// MARK: - NEON

BLIP2_Q_TILE_NEON(tile_q8_neon, unpack_q8_neon, dot_block_neon, 0)
BLIP2_Q_TILE_NEON(tile_q4_neon, unpack_q4_neon, dot_block_neon, 1)

BLIP2_TILE(q8_mv_neon, tile_q8_neon, 4, 1)
BLIP2_TILE(q8_mm_neon, tile_q8_neon, 2, 4)
BLIP2_TILE(q4_mv_neon, tile_q4_neon, 4, 1)
BLIP2_TILE(q4_mm_neon, tile_q4_neon, 2, 4)
BLIP2_SHARED_TILE(blip2_f32_mv_neon, tile_f32_neon, 4, 1)
BLIP2_SHARED_TILE(blip2_f32_mm_neon, tile_f32_neon, 4, 4)
BLIP2_SHARED_TILE(blip2_f16_mv_neon, tile_f16_neon, 4, 1)
BLIP2_SHARED_TILE(blip2_f16_mm_neon, tile_f16_neon, 4, 4)


// MARK: Panels (q8p, q4p): 16 bytes hold 4 inputs of 4 rows. Without sdot, each token's 4 broadcast
// activation bytes meet two groups at a time: vmull + vmlal give 16-bit sums of two products (at most
// 2 * 128 * 127, exact), vpadal folds them into 32-bit lanes [row A (k01), row A (k23), row B ..]; per
// block one vpadd per row quad leaves one lane per row.

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
static void q8p_mm2_neon(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_neon(w, x, n, out, 2, false); }
static void q4p_mm2_neon(const void *const *w, const void *const *x, size_t n, float *out) { tile_qp_neon(w, x, n, out, 2, true); }

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
void blip2_quantize_q8k_neon(const float *x, blip2_block_q8k *y, size_t n) {
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
    .quantize_q8a = blip2_quantize_q8a_neon,
    .quantize_q8k = blip2_quantize_q8k_neon,
    .exp_row = blip2_exp_row_neon,
    .softmax = blip2_softmax_neon,
    .gelu = blip2_gelu_neon,
    .matvec = {
        [BLIP2_TYPE_F32] = {blip2_f32_mv_neon, 4, 1}, [BLIP2_TYPE_F16] = {blip2_f16_mv_neon, 4, 1},
        [BLIP2_TYPE_Q8] = {q8_mv_neon, 4, 1}, [BLIP2_TYPE_Q4] = {q4_mv_neon, 4, 1},
        [BLIP2_TYPE_Q8P] = {q8p_mv_neon, 8, 1}, [BLIP2_TYPE_Q4P] = {q4p_mv_neon, 8, 1},
        [BLIP2_TYPE_Q4K] = {q4k_mv_neon, 8, 1}, [BLIP2_TYPE_Q3K] = {q3k_mv_neon, 8, 1}, [BLIP2_TYPE_Q6K] = {q6k_mv_neon, 8, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {blip2_f32_mm_neon, 4, 4}, [BLIP2_TYPE_F16] = {blip2_f16_mm_neon, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_neon, 2, 4}, [BLIP2_TYPE_Q4] = {q4_mm_neon, 2, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_neon, 8, 3}, [BLIP2_TYPE_Q4P] = {q4p_mm_neon, 8, 3},
        [BLIP2_TYPE_Q4K] = {q4k_mm_neon, 8, 3}, [BLIP2_TYPE_Q3K] = {q3k_mm_neon, 8, 3}, [BLIP2_TYPE_Q6K] = {q6k_mm_neon, 8, 3},
    },
    .matmul_narrow = {[BLIP2_TYPE_Q8P] = {NULL, NULL, q8p_mm2_neon}, [BLIP2_TYPE_Q4P] = {NULL, NULL, q4p_mm2_neon}},
    .int8_peak = int8_peak_neon,
    .gemm_f32 = blip2_gemm_f32_neon,
    .store_tile = blip2_store_tile_neon,
};

#endif
