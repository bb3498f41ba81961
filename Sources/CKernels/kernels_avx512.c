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
                                        const float *b, size_t ldb, float *c, size_t ldc, const int vectors) {
    const float *ar[8];
    BLIP2_UNROLL for (int r = 0; r < 8; r++) ar[r] = a + ((size_t)r < rows ? (size_t)r : rows - 1) * lda;
    __mmask16 mask[3];
    BLIP2_UNROLL for (int v = 0; v < 3; v++) {
        size_t left = cols > 16 * (size_t)v ? cols - 16 * (size_t)v : 0;
        mask[v] = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    }
    __m512 acc[8][3];
    BLIP2_UNROLL for (int r = 0; r < 8; r++) BLIP2_UNROLL for (int v = 0; v < vectors; v++) acc[r][v] = _mm512_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        const float *bp = b + p * ldb;
        __m512 bv[3];
        BLIP2_UNROLL for (int v = 0; v < vectors; v++) bv[v] = _mm512_maskz_loadu_ps(mask[v], bp + 16 * v);
        BLIP2_UNROLL for (int r = 0; r < 8; r++) {
            __m512 x = _mm512_set1_ps(ar[r][p]);
            BLIP2_UNROLL for (int v = 0; v < vectors; v++) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
        }
    }
    const __m512 scale = _mm512_set1_ps(alpha);
    BLIP2_UNROLL for (int r = 0; r < 8; r++) {
        if ((size_t)r >= rows) break;
        BLIP2_UNROLL for (int v = 0; v < vectors; v++) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask[v], _mm512_mul_ps(acc[r][v], scale));
    }
}

static void gemm_f32_tile_avx512(size_t rows, size_t cols, size_t k, float alpha, const float *a, size_t lda, const float *b,
                                 size_t ldb, float *c, size_t ldc) {
    if (cols > 32) gemm_f32_block_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 3);
    else if (cols > 16) gemm_f32_block_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 2);
    else gemm_f32_block_avx512(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, 1);
}
BLIP2_GEMM_F32(gemm_f32_avx512, gemm_f32_tile_avx512, 8, 48)

BLIP2_INLINE __m512 load16_f32(const float *p) { return _mm512_loadu_ps(p); }
BLIP2_INLINE __m512 load16_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
BLIP2_INLINE __m512 fma16_avx512(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
BLIP2_INLINE float hsum_avx512(__m512 v) { return _mm512_reduce_add_ps(v); }


BLIP2_FLOAT_TILE(tile_f32_avx512, __m512, 16, float, load16_f32, BLIP2_SAME, _mm512_setzero_ps, _mm512_loadu_ps, fma16_avx512, hsum_avx512)
BLIP2_FLOAT_TILE(tile_f16_avx512, __m512, 16, uint16_t, load16_f16, half_avx2, _mm512_setzero_ps, _mm512_loadu_ps, fma16_avx512, hsum_avx512)
BLIP2_VEC_DOTS(avx512, tile_q8_vnni, tile_q4_vnni, tile_f32_avx512, tile_f16_avx512)

BLIP2_TILE(q8_mm_vnni, tile_q8_vnni, 4, 4)
BLIP2_TILE(q4_mm_vnni, tile_q4_vnni, 4, 4)
BLIP2_TILE(f32_mv_avx512, tile_f32_avx512, 4, 1)
BLIP2_TILE(f32_mm_avx512, tile_f32_avx512, 4, 4)
BLIP2_TILE(f16_mv_avx512, tile_f16_avx512, 4, 1)
BLIP2_TILE(f16_mm_avx512, tile_f16_avx512, 4, 4)



// MARK: Panels with VNNI: one 512-bit register holds two groups (8 rows x 4 inputs each); the activation
// register is built per token and step with one permute: group 2j's 4 bytes in the low half, group
// 2j + 1's in the high half. Lanes then hold [8 rows of even groups | 8 rows of odd groups], folded per block.

BLIP2_INLINE __m512i pair_index_vnni(int j) {
    return _mm512_setr_epi32(2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j,
                             2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1);
}

BLIP2_INLINE __m256i fold_vnni(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// q8p: vpdpbusd wants its first product operand unsigned, so here the activation takes the offset
// (a + 128, an xor of the sign bit): (a + 128) . w = a . w + 128 sum(w), and sum(w) per row comes from one
// more vpdpbusd against ones, shared by every token.
BLIP2_INLINE void tile_q8p_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_panel_q8 *w = (const blip2_panel_q8 *)wv[0];
    const blip2_block_q8a *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const __m256i offset = _mm256_set1_epi8((char)0x80);
    const __m512i ones = _mm512_set1_epi8(1);
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const blip2_panel_q8 *p = w + b;
        blip2_prefetch_panel(p, sizeof(blip2_panel_q8));
        __m512i a[4], sum[4], weights = _mm512_setzero_si512();
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            a[t] = _mm512_castsi256_si512(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[t][b].qs), offset));
            sum[t] = _mm512_setzero_si512();
        }
        BLIP2_UNROLL for (int j = 0; j < 4; j++) {
            __m512i q = _mm512_loadu_si512((const void *)(p->qs + 64 * j));
            weights = _mm512_dpbusd_epi32(weights, ones, q);
            BLIP2_UNROLL for (int t = 0; t < T; t++)
                sum[t] = _mm512_dpbusd_epi32(sum[t], _mm512_permutexvar_epi32(pair_index_vnni(j), a[t]), q);
        }
        __m256i correction = _mm256_slli_epi32(fold_vnni(weights), 7);
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            __m256 dot = _mm256_cvtepi32_ps(_mm256_sub_epi32(fold_vnni(sum[t]), correction));
            acc[t] = _mm256_fmadd_ps(dot, _mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), acc[t]);
        }
    }
    store_panel_avx2(acc, out, T);
}

// q4p: the nibbles are the unsigned operand and the activation bytes go in as they are.
BLIP2_INLINE void tile_q4p_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_panel_q4 *w = (const blip2_panel_q4 *)wv[0];
    const blip2_block_q8a *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const blip2_panel_q4 *p = w + b;
        // At every token count: a decode step of several sequences streams the weights from memory as one
        // token does (4 tokens: 0.87x the step time, full-size q4; an image's products are not slowed).
        blip2_prefetch_panel(p, sizeof(blip2_panel_q4));
        __m512i a[4], sum[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            a[t] = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[t][b].qs));
            sum[t] = _mm512_setzero_si512();
        }
        BLIP2_UNROLL for (int j = 0; j < 4; j++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(p->qs + 32 * j));
            __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(raw, low)),
                                           _mm256_and_si256(_mm256_srli_epi16(raw, 4), low), 1);
            BLIP2_UNROLL for (int t = 0; t < T; t++)
                sum[t] = _mm512_dpbusd_epi32(sum[t], u, _mm512_permutexvar_epi32(pair_index_vnni(j), a[t]));
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->m));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            __m256 dot = _mm256_cvtepi32_ps(fold_vnni(sum[t]));
            acc[t] = _mm256_fmadd_ps(dot, _mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), acc[t]);
            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t][b].s), acc[t]);
        }
    }
    store_panel_avx2(acc, out, T);
}

static void q8p_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, 1); }
static void q8p_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, 4); }
static void q4p_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, 1); }
static void q4p_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, 4); }

// MARK: q4k panels with VNNI (q3k and q6k: below, with the one-token tiles). A 512-bit register holds two
// groups of 8 rows with each row's two groups side by side (the 32-bit unpack of the low and high nibbles), so
// the activation operand is one 64-bit broadcast from memory (the two groups' 4 bytes) instead of q4p's permute
// per token and step. Each sub-block sums in 32 bits, is multiplied by the 8 rows' sub-scales (laid out to
// match) and added up; the row pairs fold and return to row order once per super-block.
//
// Lane l of such a register belongs to row interleaved_row[l / 2] (the unpack works within 128-bit halves).

// The 8 sub-scale bytes at s, one per row, as the 16 lanes of an interleaved register.
BLIP2_INLINE __m512i interleaved_scales_vnni(const int8_t *s, bool is_signed) {
    const __m128i order = _mm_setr_epi8(0, 0, 1, 1, 4, 4, 5, 5, 2, 2, 3, 3, 6, 6, 7, 7);
    __m128i v = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)s), order);
    return is_signed ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v);
}

// Groups a (one dword per row) and b, each row's two dwords side by side.
BLIP2_INLINE __m512i interleave_groups_vnni(__m256i a, __m256i b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_unpacklo_epi32(a, b)), _mm256_unpackhi_epi32(a, b), 1);
}

// Both groups' 4 activation bytes (8 consecutive bytes) in every lane pair.
BLIP2_INLINE __m512i group_pair_vnni(const int8_t *a) {
    int64_t v;
    memcpy(&v, a, sizeof v);
    return _mm512_set1_epi64(v);
}

// Row sums in row order from an interleaved register: lane pairs added, then rows gathered.
BLIP2_INLINE __m256i fold_interleaved_vnni(__m512i v) {
    const __m512i rows = _mm512_setr_epi32(0, 2, 8, 10, 4, 6, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i pairs = _mm512_add_epi32(v, _mm512_srli_epi64(v, 32));   // even lanes: lane + its neighbour
    return _mm512_castsi512_si256(_mm512_permutexvar_epi32(rows, pairs));
}

BLIP2_INLINE void q4k_chunk_mm_vnni(__m512i *dot, const int T, const uint8_t *qs, const blip2_block_q8k *const *x, size_t s, size_t c, const int8_t *scales) {
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m512i scale = interleaved_scales_vnni(scales, false);
    __m512i part[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) part[t] = _mm512_setzero_si512();
    BLIP2_UNROLL for (int run = 0; run < 4; run++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * run));
        __m512i u = interleave_groups_vnni(_mm256_and_si256(raw, nibble), _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble));
        BLIP2_UNROLL for (int t = 0; t < T; t++)
            part[t] = _mm512_dpbusd_epi32(part[t], u, group_pair_vnni(x[t][s].qs + 32 * c + 8 * run));
    }
    BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm512_add_epi32(dot[t], _mm512_mullo_epi32(part[t], scale));
}

BLIP2_INLINE __m256i pair_dot_vnni(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
BLIP2_KQ4_MM(tile_q4k_vnni, __m512i, _mm512_setzero_si512, q4k_chunk_mm_vnni, fold_interleaved_vnni)

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
// tokens (medians of 8 runs), q6k 0.87-1.06x; both 0.88x at 1408 x 256 x 4. Results identical.
BLIP2_INLINE void q36k_sub_mm_vnni(__m256i *dot, const int T, const uint8_t *chunk, int h, bool six, const blip2_block_q8k *const *x, size_t s, size_t c,
                                   const int8_t *scales) {
    BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm256_add_epi32(dot[t], q36k_sub_vnni(chunk, h, six, x[t][s].qs + 32 * c + 16 * h, scales));
}
BLIP2_INLINE __m256i rows_vnni(__m256i v) { return v; }
BLIP2_KQ36_MM(tile_q36k_vnni, __m256i, _mm256_setzero_si256, q36k_sub_mm_vnni, q3k_chunk_vnni, rows_vnni, pair_dot_vnni)

static void q4k_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_mv_vnni(w, x, n, out, BLIP2_MV_PANELS); }
static void q4k_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_vnni(w, x, n, out, 4); }
static void q3k_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_mv_vnni(w, x, n, out, BLIP2_MV_PANELS, false); }
static void q3k_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_vnni(w, x, n, out, 4, false); }
static void q6k_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_mv_vnni(w, x, n, out, BLIP2_MV_PANELS, true); }
static void q6k_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_vnni(w, x, n, out, 4, true); }

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
    .vec_dot_q8_q8a = vec_dot_q8_q8a_avx512,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_avx512,
    .vec_dot_f32 = vec_dot_f32_avx512,
    .vec_dot_f16 = vec_dot_f16_avx512,
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
        [BLIP2_TYPE_Q8P] = {q8p_mm_vnni, 8, 4}, [BLIP2_TYPE_Q4P] = {q4p_mm_vnni, 8, 4},
        [BLIP2_TYPE_Q4K] = {q4k_mm_vnni, 8, 4}, [BLIP2_TYPE_Q3K] = {q3k_mm_vnni, 8, 4}, [BLIP2_TYPE_Q6K] = {q6k_mm_vnni, 8, 4},
    },
    .int8_peak = int8_peak_vnni,
    .gemm_f32 = gemm_f32_avx512,
};

#endif
