// AVX-512 kernels (F/BW/VL + VNNI): the x86-64 table for CPUs with vpdpbusd; the pieces it shares with the
// AVX2 table are in kernels_x86.h, and it uses the AVX2 table's activation quantizers.
#include "kernels_x86.h"

#if BLIP2_X86_KERNELS

BLIP2_BEGIN_AVX512

// vpdpbusd multiplies unsigned by signed bytes and accumulates in 32 bits with no 16-bit step to saturate:
// BLIP2_Q_ROWS with q8's offset trick.
BLIP2_INLINE __m256i dot_q_vnni(__m256i u, __m256i a) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a); }
BLIP2_Q_ROWS(tile_q_vnni, dot_q_vnni)

BLIP2_INLINE void tile_q8_vnni(const void *const *w, const void *const *x, size_t n, float *out, const int R, const int T) {
    tile_q_vnni(w, x, n, out, R, T, false);
}
BLIP2_INLINE void tile_q4_vnni(const void *const *w, const void *const *x, size_t n, float *out, const int R, const int T) {
    tile_q_vnni(w, x, n, out, R, T, true);
}

BLIP2_INLINE __m256i dot_vnni(__m256i u, __m256i a) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a); }
BLIP2_Q_MV4(tile_q_mv4_vnni, dot_vnni)
static void q8_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q_mv4_vnni(w, x, n, out, false, true); }
static void q4_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q_mv4_vnni(w, x, n, out, true, true); }

// MARK: Exponential, softmax and GELU on 16 lanes (ViT-g: 41 M exponentials and 61 M GELUs per image)

// The AVX2 table's exponential and GELU on 16 lanes (BLIP2_EXP_GELU), from AVX-512 F alone: abs and a
// sign-bit test, not DQ's andnot and movepi32_mask.
BLIP2_INLINE __m512 round16_avx512(__m512 x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
BLIP2_INLINE __m512 by_sign16_avx512(__m512 x, __m512 a, __m512 b) {
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN)), a, b);
}
BLIP2_EXP_GELU(exp16_avx512, gelu16_avx512, __m512, __m512i, _mm512, round16_avx512, _mm512_abs_ps, by_sign16_avx512, _mm512_castsi512_ps)

static void exp_row_avx512(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16_avx512(_mm512_loadu_ps(x + i)));
    blip2_exp_row_avx2(x + i, y + i, n - i);
}

// The row's last n % 16 values go under a mask (a row of 257 scores is 16 registers and one value).
static void softmax_avx512(float *x, size_t n) {
    size_t full = n / 16 * 16;
    __mmask16 tail = (__mmask16)((1u << (n - full)) - 1);
    __m512 m16 = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < full; i += 16) m16 = _mm512_max_ps(m16, _mm512_loadu_ps(x + i));
    m16 = _mm512_mask_max_ps(m16, tail, m16, _mm512_maskz_loadu_ps(tail, x + full));
    __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(m16)), sum16 = _mm512_setzero_ps();
    for (size_t i = 0; i < full; i += 16) {
        __m512 e = exp16_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), shift));
        _mm512_storeu_ps(x + i, e);
        sum16 = _mm512_add_ps(sum16, e);
    }
    __m512 e = exp16_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + full), shift));
    _mm512_mask_storeu_ps(x + full, tail, e);
    sum16 = _mm512_mask_add_ps(sum16, tail, sum16, e);
    __m512 inverse = _mm512_set1_ps(1 / _mm512_reduce_add_ps(sum16));
    for (size_t i = 0; i < full; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inverse));
    _mm512_mask_storeu_ps(x + full, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + full), inverse));
}

static void gelu_avx512(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, gelu16_avx512(_mm512_loadu_ps(x + i)));
    blip2_gelu_avx2(x + i, n - i);
}

// MARK: Many-token f32 products (attention: scores Q K^T and the sums of values P V)

// 8 rows of a against `vectors` (1 to 3) registers of 16 columns of b: up to 24 accumulators, a's value
// broadcast per row. Loads and stores go under masks, so columns past `cols` are neither read nor written
// (ViT-g's 88-wide heads end on half a register); rows past `rows` repeat the last row and are not stored.
BLIP2_INLINE void gemm_f32_block_avx512(size_t rows, size_t cols, size_t k, float alpha, const float *a, size_t lda,
                                        const float *b, size_t ldb, float *c, size_t ldc, const int vectors, const int R) {
    const float *ar[8];
    BLIP2_UNROLL for (int r = 0; r < R; r++) ar[r] = a + ((size_t)r < rows ? (size_t)r : rows - 1) * lda;
    __mmask16 mask[3];
    BLIP2_UNROLL for (int v = 0; v < 3; v++) {
        size_t left = cols > 16 * (size_t)v ? cols - 16 * (size_t)v : 0;
        mask[v] = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    }
    __m512 acc[8][3];
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int v = 0; v < vectors; v++) acc[r][v] = _mm512_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        const float *bp = b + p * ldb;
        __m512 bv[3];
        BLIP2_UNROLL for (int v = 0; v < vectors; v++) bv[v] = _mm512_maskz_loadu_ps(mask[v], bp + 16 * v);
        BLIP2_UNROLL for (int r = 0; r < R; r++) {
            __m512 x = _mm512_set1_ps(ar[r][p]);
            BLIP2_UNROLL for (int v = 0; v < vectors; v++) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
        }
    }
    const __m512 scale = _mm512_set1_ps(alpha);
    BLIP2_UNROLL for (int r = 0; r < R; r++) {
        if ((size_t)r >= rows) break;
        BLIP2_UNROLL for (int v = 0; v < vectors; v++) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask[v], _mm512_mul_ps(acc[r][v], scale));
    }
}

BLIP2_INLINE void gemm_f32_rows_avx512(size_t rows, size_t cols, size_t k, float alpha, const float *a, size_t lda,
                                       const float *b, size_t ldb, float *c, size_t ldc, const int R) {
    if (cols > 32) gemm_f32_block_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 3, R);
    else if (cols > 16) gemm_f32_block_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 2, R);
    else gemm_f32_block_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 1, R);
}

// One row of a (a decoding query's probabilities against its values) takes a block of its own: the 8-row
// block would repeat it 8 times.
static void gemm_f32_tile_avx512(size_t rows, size_t cols, size_t k, float alpha, const float *a, size_t lda, const float *b,
                                 size_t ldb, float *c, size_t ldc) {
    if (rows == 1) gemm_f32_rows_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 1);
    else gemm_f32_rows_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 8);
}
BLIP2_GEMM_F32(gemm_f32_avx512, gemm_f32_tile_avx512, 8, 48)

BLIP2_INLINE __m512 load16_f32(const float *p) { return _mm512_loadu_ps(p); }
BLIP2_INLINE __m512 load16_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
BLIP2_INLINE __m512 fma16_avx512(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
BLIP2_INLINE float hsum_avx512(__m512 v) { return _mm512_reduce_add_ps(v); }


BLIP2_FLOAT_TILE(tile_f32_avx512, __m512, 16, float, load16_f32, BLIP2_SAME, _mm512_setzero_ps, _mm512_loadu_ps, fma16_avx512, hsum_avx512)
BLIP2_FLOAT_TILE(tile_f16_avx512, __m512, 16, uint16_t, load16_f16, half_avx2, _mm512_setzero_ps, _mm512_loadu_ps, fma16_avx512, hsum_avx512)

BLIP2_TILE(q8_mm_vnni, tile_q8_vnni, 4, 4)
BLIP2_TILE(q4_mm_vnni, tile_q4_vnni, 4, 4)
BLIP2_TILE(f32_mv_avx512, tile_f32_avx512, 4, 1)
BLIP2_TILE(f32_mm_avx512, tile_f32_avx512, 4, 4)
BLIP2_TILE(f16_mv_avx512, tile_f16_avx512, 4, 1)
BLIP2_TILE(f16_mm_avx512, tile_f16_avx512, 4, 4)



// MARK: Panels with VNNI: one 512-bit register holds two groups (8 rows x 4 inputs each) interleaved per row,
// [row 0's group 2j, row 0's group 2j + 1, row 1's ...], so a token's activation bytes for the two groups
// are one 64-bit broadcast from memory. Lanes hold [row r's even groups, row r's odd groups] until the end
// of the row, where each pair is added.

// A token's 8 activation bytes for one step of a panel (two groups), in every 64-bit lane.
BLIP2_INLINE __m512i broadcast8_vnni(const int8_t *p) {
    int64_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi64(v);
}

// Row r of a panel is lanes 2r and 2r + 1 of `acc`, plus lane r of `per_row` when given (q4p's minimums,
// q8p's offsets: a term per row, summed apart on 256 bits).
BLIP2_INLINE void store_pairs_vnni(const __m512 *acc, const __m256 *per_row, float *out, const int T) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
    float lanes[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        __m256 rows = _mm512_castps512_ps256(_mm512_add_ps(_mm512_permutexvar_ps(even, acc[t]), _mm512_permutexvar_ps(odd, acc[t])));
        _mm256_storeu_ps(lanes, per_row ? _mm256_add_ps(rows, per_row[t]) : rows);
        BLIP2_UNROLL for (int r = 0; r < 8; r++) out[r * T + t] = lanes[r];
    }
}

// q8p: vpdpbusd wants its first product operand unsigned, so here the weights take the offset (w + 128, an
// xor of the sign bit, once per step for every token): (w + 128) . a = w . a + 128 sum(a), and 128 d_w s_a
// (s_a = d_a sum(a), stored with the activation block) comes off in floats, where q4p adds its minimums. A
// step's two groups are interleaved per row by one permute so that the activation is a 64-bit broadcast from
// memory, as in q4p below; up to 8 tokens per pass.
BLIP2_INLINE void tile_q8p_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_panel_q8 *w = (const blip2_panel_q8 *)wv[0];
    const blip2_block_q8a *x[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const __m512i offset = _mm512_set1_epi8((char)0x80);
    const __m512i by_row = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    const __m512i pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 acc[8];
    __m256 offsets[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        acc[t] = _mm512_setzero_ps();
        offsets[t] = _mm256_setzero_ps();
    }
    for (size_t b = 0; b < nb; b++) {
        const blip2_panel_q8 *p = w + b;
        blip2_prefetch_panel(p, sizeof(blip2_panel_q8));
        __m512i sum[8];
        BLIP2_UNROLL for (int t = 0; t < T; t++) sum[t] = _mm512_setzero_si512();
        BLIP2_UNROLL for (int j = 0; j < 4; j++) {
            __m512i u = _mm512_xor_si512(_mm512_permutexvar_epi32(by_row, _mm512_loadu_si512((const void *)(p->qs + 64 * j))), offset);
            BLIP2_UNROLL for (int t = 0; t < T; t++)
                sum[t] = _mm512_dpbusd_epi32(sum[t], u, broadcast8_vnni(x[t][b].qs + 8 * j));
        }
        __m256 d8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        __m512 dw = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(d8));
        __m256 offset = _mm256_mul_ps(d8, _mm256_set1_ps(-128.0f));   // one per row, as q4p's minimums
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(x[t][b].d)), acc[t]);
            offsets[t] = _mm256_fmadd_ps(offset, _mm256_set1_ps(x[t][b].s), offsets[t]);
        }
    }
    store_pairs_vnni(acc, offsets, out, T);
}

// q4p: the nibbles are the unsigned operand and the activation bytes go in as they are. A run's two groups
// are spread once (a permute and a variable shift, shared by every token) so that each row's group-2p and
// group-2p+1 bytes sit side by side; a token's 8 activation bytes for the run then reach all 8 rows through
// one 64-bit broadcast from memory, with no permute per token and step. Lanes hold [row r's even groups,
// row r's odd groups]; they are scaled as they are and added in pairs once per panel. Up to 8 tokens fit
// the registers (a sum and an accumulator each), which a decode step of up to 8 sequences uses in one pass.
BLIP2_INLINE __m512i spread_run_q4p(__m512i two_runs, int second, __m512i low) {
    const __m512i first_rows = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i nibble = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    __m512i index = second ? _mm512_add_epi32(first_rows, _mm512_set1_epi32(8)) : first_rows;
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi32(index, two_runs), nibble), low);
}

BLIP2_INLINE void tile_q4p_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_panel_q4 *w = (const blip2_panel_q4 *)wv[0];
    const blip2_block_q8a *x[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const __m512i low = _mm512_set1_epi8(0x0f);
    const __m512i pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 acc[8];
    __m256 minimums[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        acc[t] = _mm512_setzero_ps();
        minimums[t] = _mm256_setzero_ps();
    }
    for (size_t b = 0; b < nb; b++) {
        const blip2_panel_q4 *p = w + b;
        // At every token count: a decode step of several sequences streams the weights from memory as one
        // token does (4 tokens: 0.87x the step time, full-size q4; an image's products are not slowed).
        blip2_prefetch_panel(p, sizeof(blip2_panel_q4));
        __m512i sum[8];
        BLIP2_UNROLL for (int t = 0; t < T; t++) sum[t] = _mm512_setzero_si512();
        BLIP2_UNROLL for (int h = 0; h < 2; h++) {
            __m512i two_runs = _mm512_loadu_si512((const void *)(p->qs + 64 * h));
            BLIP2_UNROLL for (int k = 0; k < 2; k++) {
                __m512i u = spread_run_q4p(two_runs, k, low);
                BLIP2_UNROLL for (int t = 0; t < T; t++)
                    sum[t] = _mm512_dpbusd_epi32(sum[t], u, broadcast8_vnni(x[t][b].qs + 8 * (2 * h + k)));
            }
        }
        // Each row's scale in both of its lanes; the minimums, one per row, in a 256-bit register of their own
        // (half the width: a 512-bit multiply-add with half its lanes zero cost as much as a full one).
        __m512 dw = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d))));
        __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->m));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(x[t][b].d)), acc[t]);
            minimums[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t][b].s), minimums[t]);
        }
    }
    store_pairs_vnni(acc, minimums, out, T);
}

static void q8p_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, 1); }
static void q8p_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, 8); }
static void q4p_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, 1); }
static void q4p_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, 8); }
#define BLIP2_PANEL_NARROW_VNNI(T)                                                                                 \
    static void q8p_mm##T##_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, T); } \
    static void q4p_mm##T##_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, T); }
BLIP2_PANEL_NARROW_VNNI(2) BLIP2_PANEL_NARROW_VNNI(3) BLIP2_PANEL_NARROW_VNNI(4)
BLIP2_PANEL_NARROW_VNNI(5) BLIP2_PANEL_NARROW_VNNI(6) BLIP2_PANEL_NARROW_VNNI(7)

// MARK: q4k panels with VNNI, many tokens (q3k and q6k: below, with the one-token tiles). Two nibble runs
// (64 bytes) are masked as one 512-bit register per plane, and one two-source permute per run puts each row's
// two groups side by side (lanes 2r, 2r + 1: row r's low and high nibbles), so the activation operand is the
// run's 8 bytes broadcast from memory (as in q4p above). A chunk's 4 runs sum into one register per token, a lane over 16
// inputs (16 x 15 x 127 = 30480 fits 16 bits), so one vpdpwssd against the sub-scales (zero-extended: the
// lane's upper half, its sign, meets 0) applies them: one instruction where vpmulld (two micro-ops) and
// vpaddd were, and no 32-bit interleave or insert per run. The sums stay in this lane order through the
// float work and add in pairs once per panel (store_pairs_vnni).

// The two-source permutes: (low plane, high plane) of runs p, p + 1 -> run p's or run p + 1's rows.
BLIP2_INLINE __m512i q4k_run_first_vnni(void) { return _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23); }
BLIP2_INLINE __m512i q4k_run_second_vnni(void) { return _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31); }

// vpshufb control: the 8 sub-scale bytes (repeated in every 128-bit lane) to lanes 2r, 2r + 1, zero-extended.
BLIP2_INLINE __m512i q4k_scale_order_vnni(void) {
    return _mm512_setr_epi32(0x80808000, 0x80808000, 0x80808001, 0x80808001, 0x80808002, 0x80808002, 0x80808003, 0x80808003,
                             0x80808004, 0x80808004, 0x80808005, 0x80808005, 0x80808006, 0x80808006, 0x80808007, 0x80808007);
}

// Two tokens' minimum terms, sum_j m_j (32-input sum j of the activation), in one register (token t's 8 rows,
// then token t + 1's): one vpdpwssd per two sub-blocks against `pairs` (the rows' [m_2k, m_2k+1], in both
// halves). vphaddw of the two tokens' 16-input sums gives their 32-input sums as 16-bit pairs (in 128-bit lane
// L, dwords 0 and 1 are token t's pairs 2L and 2L + 1, dwords 2 and 3 token t + 1's); one permute per pair
// spreads them. All four pairs run, branch-free (a loop to the super-block's length cost a fifth of the
// tile): past a short super-block's end the activation's sums are 0 (its last block is zero-padded).
BLIP2_INLINE __m512i q4k_minimum_pair_vnni(const __m512i *pairs, const int16_t *sums, const int16_t *next) {
    const __m512i sum_pairs = _mm512_castsi256_si512(_mm256_hadd_epi16(_mm256_loadu_si256((const __m256i *)sums), _mm256_loadu_si256((const __m256i *)next)));
    const __m512i where[4] = {
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2), _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3),
        _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6), _mm512_setr_epi32(5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7),
    };
    __m512i minimum = _mm512_setzero_si512();
    BLIP2_UNROLL for (int k = 0; k < 4; k++) minimum = _mm512_dpwssd_epi32(minimum, pairs[k], _mm512_permutexvar_epi32(where[k], sum_pairs));
    return minimum;
}

// Up to 8 tokens; with an odd count the last token's minimums pair with themselves.
BLIP2_INLINE void tile_q4k_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const blip2_block_q8k *x[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];
    const __m512i nibble = _mm512_set1_epi8(0x0f), first = q4k_run_first_vnni(), second = q4k_run_second_vnni();
    const __m512i scale_order = q4k_scale_order_vnni();
    const __m512i pairs_of_rows = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m512 acc[8], below[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    BLIP2_UNROLL for (int t = 0; t < T; t += 2) below[t / 2] = _mm512_setzero_ps();
    const char *block = (const char *)wv[0];
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;
        const blip2_panel_q4k *p = (const blip2_panel_q4k *)block;
        int8_t scales[64], mins[64];
        q4k_scales_avx2(p, scales, mins);
        __m512i dot[8];
        BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm512_setzero_si512();
        for (size_t c = 0; c < chunks; c++) {
            __m512i run[4];
            BLIP2_UNROLL for (int h = 0; h < 2; h++) {
                const __m512i raw = _mm512_loadu_si512((const void *)(p->qs + 128 * c + 64 * h));
                const __m512i low = _mm512_and_si512(raw, nibble), high = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
                run[2 * h] = _mm512_permutex2var_epi32(low, first, high);
                run[2 * h + 1] = _mm512_permutex2var_epi32(low, second, high);
            }
            int64_t scale_bytes;
            memcpy(&scale_bytes, scales + 8 * c, sizeof scale_bytes);
            const __m512i scale = _mm512_shuffle_epi8(_mm512_set1_epi64(scale_bytes), scale_order);
            BLIP2_UNROLL for (int t = 0; t < T; t++) {
                const int8_t *a = x[t][s].qs + 32 * c;
                __m512i part = _mm512_setzero_si512();
                BLIP2_UNROLL for (int r = 0; r < 4; r++) part = _mm512_dpbusd_epi32(part, run[r], broadcast8_vnni(a + 8 * r));
                dot[t] = _mm512_dpwssd_epi32(dot[t], part, scale);
            }
        }
        __m512i pairs[4];
        BLIP2_UNROLL for (int k = 0; k < 4; k++) {
            const __m128i both = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(mins + 16 * k)), _mm_loadl_epi64((const __m128i *)(mins + 16 * k + 8)));
            pairs[k] = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(both));
        }
        const __m512 d = _mm512_permutexvar_ps(pairs_of_rows, _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d))));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p->dmin)));
        BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[t]), _mm512_mul_ps(d, _mm512_set1_ps(x[t][s].d)), acc[t]);
        BLIP2_UNROLL for (int t = 0; t < T; t += 2) {
            const blip2_block_q8k *next = x[t + 1 < T ? t + 1 : t];
            const __m512i minimum = q4k_minimum_pair_vnni(pairs, x[t][s].sums, next[s].sums);
            const __m512 da = _mm512_mask_mov_ps(_mm512_set1_ps(x[t][s].d), 0xff00, _mm512_set1_ps(next[s].d));
            below[t / 2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(minimum), _mm512_mul_ps(dmin, da), below[t / 2]);
        }
        block += offsetof(blip2_panel_q4k, qs) + count * 4;
    }
    // Each token's minimums off its rows' even lanes (the pairs are added in store_pairs_vnni).
    const __m512i first_token = pairs_of_rows, second_token = _mm512_add_epi32(pairs_of_rows, _mm512_set1_epi32(8));
    BLIP2_UNROLL for (int t = 0; t < T; t++)
        acc[t] = _mm512_sub_ps(acc[t], _mm512_maskz_permutexvar_ps(0x5555, t % 2 ? second_token : first_token, below[t / 2]));
    store_pairs_vnni(acc, NULL, out, T);
}

BLIP2_INLINE __m256i pair_dot_vnni(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }

// MARK: One-token super-block tiles with VNNI (BLIP2_KQ_MV): 256-bit vpdpbusd issues on two ports where the
// 512-bit one has one, and 512-bit instructions shut port 1's vector unit.

// (A & mask) | B in one vpternlogd: joins a value's low bits (A, shifted into place) and its high bits (B,
// shifted into place and masked).
BLIP2_INLINE __m256i join_bits_vnni(__m256i a, __m256i b, __m256i mask) { return _mm256_ternarylogic_epi32(a, b, mask, 0xEC); }

// The unsigned levels of sub-block h (0, 1) of a q3k or q6k chunk, as q36k_levels_avx2, with the two planes
// joined by vpternlogd: 3 to 4 instructions per group where the AVX2 sequence takes 4 to 5 (q3k: 3 to 4).
BLIP2_INLINE void q36k_levels_vnni(const uint8_t *chunk, int h, bool six, __m256i *g) {
    if (six) {
        const __m256i nibble = _mm256_set1_epi8(0x0f), top = _mm256_set1_epi8(0x30);
        __m256i low0 = _mm256_loadu_si256((const __m256i *)(chunk + 64 * h));
        __m256i low1 = _mm256_loadu_si256((const __m256i *)(chunk + 64 * h + 32));
        __m256i high = _mm256_loadu_si256((const __m256i *)(chunk + 128 + 32 * h));
        g[0] = join_bits_vnni(low0, bits_at_avx2(high, 0, 4, top), nibble);
        g[1] = join_bits_vnni(_mm256_srli_epi16(low0, 4), bits_at_avx2(high, 2, 4, top), nibble);
        g[2] = join_bits_vnni(low1, bits_at_avx2(high, 4, 4, top), nibble);
        g[3] = join_bits_vnni(_mm256_srli_epi16(low1, 4), bits_at_avx2(high, 6, 4, top), nibble);
        return;
    }
    const __m256i low = _mm256_loadu_si256((const __m256i *)(chunk + 32 * h));
    const __m256i bits = q3k_top_nibbles_avx2(chunk, h);
    BLIP2_UNROLL for (int k = 0; k < 4; k++)
        g[k] = join_bits_vnni(k ? _mm256_srli_epi16(low, 2 * k) : low, q3k_top_bit_avx2(bits, k), _mm256_set1_epi8(0x03));
}

// q4k chunk: the high nibble is used where it lies (raw & 0xf0 is 16 x its value: one AND per group instead
// of a shift and an AND); the low-nibble sums are shifted up by 4 to match, and d carries the 1/16 (exact).
// A 32-input sum stays within 16 x 32 x 15 x 128 < 2^20, times a 6-bit sub-scale, 8 sub-blocks: < 2^29.
BLIP2_INLINE __m256i q4k_chunk_vnni(const uint8_t *qs, const int8_t *a, const int8_t *scales) {
    const __m256i low = _mm256_set1_epi8(0x0f), high = _mm256_set1_epi8((char)0xf0);
    __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
    BLIP2_UNROLL for (int run = 0; run < 4; run++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * run));
        even = _mm256_dpbusd_epi32(even, _mm256_and_si256(raw, low), broadcast4_avx2(a + 8 * run));
        odd = _mm256_dpbusd_epi32(odd, _mm256_and_si256(raw, high), broadcast4_avx2(a + 8 * run + 4));
    }
    const __m256i part = _mm256_add_epi32(_mm256_slli_epi32(even, 4), odd);
    return _mm256_mullo_epi32(part, _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)scales)));
}

// q3k/q6k sub-block h of a chunk: its 4 groups sum in 32 bits and meet the rows' signed sub-scales.
BLIP2_INLINE __m256i q36k_sub_vnni(const uint8_t *chunk, int h, bool six, const int8_t *a, const int8_t *scales) {
    __m256i g[4];
    q36k_levels_vnni(chunk, h, six, g);
    __m256i part = _mm256_dpbusd_epi32(_mm256_setzero_si256(), g[0], broadcast4_avx2(a));
    BLIP2_UNROLL for (int k = 1; k < 4; k++) part = _mm256_dpbusd_epi32(part, g[k], broadcast4_avx2(a + 4 * k));
    return _mm256_mullo_epi32(part, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)scales)));
}

// q3k's whole chunk. A sub-block's sum of (q - 4) a over 16 inputs is at most 16 x 4 x 127 = 8128, so the two
// sub-blocks' sums share a 32-bit lane (a 16-bit blend) and one vpdpwssd applies both rows' sub-scales: the
// offset comes off in 16 bits first (4 x the activation's 16-input sums), with no vpmulld and no second sum.
BLIP2_INLINE __m256i q3k_chunk_vnni(__m256i dot, const uint8_t *chunk, const int8_t *a, const int8_t *scales, __m256i sums) {
    __m256i part[2];
    BLIP2_UNROLL for (int h = 0; h < 2; h++) {
        __m256i g[4];
        q36k_levels_vnni(chunk, h, false, g);
        part[h] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), g[0], broadcast4_avx2(a + 16 * h));
        BLIP2_UNROLL for (int k = 1; k < 4; k++) part[h] = _mm256_dpbusd_epi32(part[h], g[k], broadcast4_avx2(a + 16 * h + 4 * k));
    }
    const __m256i both = _mm256_blend_epi16(part[0], _mm256_slli_epi32(part[1], 16), 0xAA);
    return _mm256_dpwssd_epi32(dot, _mm256_sub_epi16(both, _mm256_slli_epi16(sums, 2)), scale_pairs_avx2(scales, scales + 8, true));
}

BLIP2_KQ_MV(tile_q4k_mv_vnni, tile_q36k_mv_vnni, q4k_chunk_vnni, q36k_sub_vnni, q3k_chunk_vnni, pair_dot_vnni, 0.0625f)

// q3k and q6k over several tokens: the one-token tile's sub-block product (q36k_sub_vnni: levels joined by
// vpternlogd, 256-bit vpdpbusd, the rows in the lanes) for each token, the levels unpacked once for all of them.
// Against two groups per 512-bit register (a 32-bit interleave of the groups, a fold per super-block), on the
// Ice Lake Xeon in one process (load 7-8): q3k 0.84-0.92x the time at 1408 x 6144 and 6144 x 1408 x 257
// tokens (medians of 8 runs), q6k 0.87-1.06x; both 0.88x at 1408 x 256 x 4. Results identical. 8 tokens per
// pass (as q4k) against 4: 0.82-0.85x the time at the ViT-g shapes (one process, load ~5), results identical.
BLIP2_INLINE void q36k_sub_mm_vnni(__m256i *dot, const int T, const uint8_t *chunk, int h, bool six, const blip2_block_q8k *const *x, size_t s, size_t c,
                                   const int8_t *scales) {
    BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm256_add_epi32(dot[t], q36k_sub_vnni(chunk, h, six, x[t][s].qs + 32 * c + 16 * h, scales));
}
BLIP2_INLINE __m256i rows_vnni(__m256i v) { return v; }
BLIP2_KQ36_MM(tile_q36k_vnni, __m256i, _mm256_setzero_si256, q36k_sub_mm_vnni, q3k_chunk_vnni, rows_vnni, pair_dot_vnni)

static void q4k_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_mv_vnni(w, x, n, out, BLIP2_MV_PANELS); }
// 8 tokens per tile: the weights' unpacking is shared by twice the tokens (docs/KERNELS.md); narrower forms
// for 2..7 tokens (a decode step of a few sequences).
static void q4k_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_vnni(w, x, n, out, 8); }
static void q3k_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_mv_vnni(w, x, n, out, BLIP2_MV_PANELS, false); }
static void q3k_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_vnni(w, x, n, out, 8, false); }
static void q6k_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_mv_vnni(w, x, n, out, BLIP2_MV_PANELS, true); }
static void q6k_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_vnni(w, x, n, out, 8, true); }
#define BLIP2_KQ_NARROW_VNNI(T)                                                                                    \
    static void q4k_mm##T##_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_vnni(w, x, n, out, T); } \
    static void q3k_mm##T##_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_vnni(w, x, n, out, T, false); } \
    static void q6k_mm##T##_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_vnni(w, x, n, out, T, true); }
BLIP2_KQ_NARROW_VNNI(2) BLIP2_KQ_NARROW_VNNI(3) BLIP2_KQ_NARROW_VNNI(4)
BLIP2_KQ_NARROW_VNNI(5) BLIP2_KQ_NARROW_VNNI(6) BLIP2_KQ_NARROW_VNNI(7)

// 512-bit vpdpbusd in 12 independent accumulator chains: 64 multiply-adds each.
static uint64_t int8_peak_vnni(uint64_t iterations) {
    __m512i v[12], a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    for (int j = 0; j < 12; j++) v[j] = _mm512_set1_epi32(j);
    for (uint64_t i = 0; i < iterations; i++) {
        BLIP2_OPAQUE(a);
        BLIP2_OPAQUE(b);
        for (int j = 0; j < 12; j++) v[j] = _mm512_dpbusd_epi32(v[j], a, b);
    }
    __m512i s = v[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_epi32(s, v[j]);
    volatile int sink = _mm256_extract_epi32(_mm512_castsi512_si256(s), 0);
    (void)sink;
    return iterations * 12 * 64 * 2;
}

BLIP2_END_TARGET

const blip2_kernels blip2_kernels_avx512 = {
    .isa = BLIP2_ISA_AVX512,
    .name = "avx512",
    .quantize_q8a = blip2_quantize_q8a_avx2,
    .quantize_q8k = blip2_quantize_q8k_avx2,
    .exp_row = exp_row_avx512,
    .softmax = softmax_avx512,
    .gelu = gelu_avx512,
    .matvec = {
        [BLIP2_TYPE_F32] = {f32_mv_avx512, 4, 1}, [BLIP2_TYPE_F16] = {f16_mv_avx512, 4, 1},
        [BLIP2_TYPE_Q8] = {q8_mv_vnni, 4, 1}, [BLIP2_TYPE_Q4] = {q4_mv_vnni, 4, 1},
        [BLIP2_TYPE_Q8P] = {q8p_mv_vnni, 8, 1}, [BLIP2_TYPE_Q4P] = {q4p_mv_vnni, 8, 1},
        [BLIP2_TYPE_Q4K] = {q4k_mv_vnni, 8 * BLIP2_MV_PANELS, 1},
        [BLIP2_TYPE_Q3K] = {q3k_mv_vnni, 8 * BLIP2_MV_PANELS, 1}, [BLIP2_TYPE_Q6K] = {q6k_mv_vnni, 8 * BLIP2_MV_PANELS, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {f32_mm_avx512, 4, 4}, [BLIP2_TYPE_F16] = {f16_mm_avx512, 4, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_vnni, 4, 4}, [BLIP2_TYPE_Q4] = {q4_mm_vnni, 4, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_vnni, 8, 8}, [BLIP2_TYPE_Q4P] = {q4p_mm_vnni, 8, 8},
        [BLIP2_TYPE_Q4K] = {q4k_mm_vnni, 8, 8}, [BLIP2_TYPE_Q3K] = {q3k_mm_vnni, 8, 8}, [BLIP2_TYPE_Q6K] = {q6k_mm_vnni, 8, 8},
    },
    .matmul_narrow = {
        [BLIP2_TYPE_Q8P] = {NULL, NULL, q8p_mm2_vnni, q8p_mm3_vnni, q8p_mm4_vnni, q8p_mm5_vnni, q8p_mm6_vnni, q8p_mm7_vnni},
        [BLIP2_TYPE_Q4P] = {NULL, NULL, q4p_mm2_vnni, q4p_mm3_vnni, q4p_mm4_vnni, q4p_mm5_vnni, q4p_mm6_vnni, q4p_mm7_vnni},
        [BLIP2_TYPE_Q4K] = {NULL, NULL, q4k_mm2_vnni, q4k_mm3_vnni, q4k_mm4_vnni, q4k_mm5_vnni, q4k_mm6_vnni, q4k_mm7_vnni},
        [BLIP2_TYPE_Q3K] = {NULL, NULL, q3k_mm2_vnni, q3k_mm3_vnni, q3k_mm4_vnni, q3k_mm5_vnni, q3k_mm6_vnni, q3k_mm7_vnni},
        [BLIP2_TYPE_Q6K] = {NULL, NULL, q6k_mm2_vnni, q6k_mm3_vnni, q6k_mm4_vnni, q6k_mm5_vnni, q6k_mm6_vnni, q6k_mm7_vnni},
    },
    .int8_peak = int8_peak_vnni,
    .gemm_f32 = gemm_f32_avx512,
    .store_tile = blip2_store_tile_avx2,
};

#endif
