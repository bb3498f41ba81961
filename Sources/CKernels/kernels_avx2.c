// AVX2 kernels (+FMA, F16C): the x86-64 table for CPUs without AVX-512 VNNI; the pieces it shares with the
// AVX-512 table are in kernels_x86.h.
#include "kernels_x86.h"

#if BLIP2_X86_KERNELS

BLIP2_BEGIN_AVX2

// MARK: Exponential and softmax (attention: keys x queries x heads of them per layer)

BLIP2_INLINE __m256 round8_avx2(__m256 x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
BLIP2_INLINE __m256 magnitude8_avx2(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
BLIP2_INLINE __m256 by_sign8_avx2(__m256 x, __m256 a, __m256 b) { return _mm256_blendv_ps(a, b, x); }
BLIP2_EXP_GELU(exp8_avx2, gelu8_avx2, __m256, __m256i, _mm256, round8_avx2, magnitude8_avx2, by_sign8_avx2, _mm256_castsi256_ps)

void blip2_exp_row_avx2(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8_avx2(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

void blip2_softmax_avx2(float *x, size_t n) {
    size_t i = 0;
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float maximum = _mm_cvtss_f32(m4);
    for (; i < n; i++) maximum = fmaxf(maximum, x[i]);
    __m256 shift = _mm256_set1_ps(maximum), sum8 = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), shift));
        _mm256_storeu_ps(x + i, e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    float sum = hsum_avx2(sum8);
    for (; i < n; i++) {
        x[i] = expf(x[i] - maximum);
        sum += x[i];
    }
    __m256 inverse = _mm256_set1_ps(1 / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inverse));
    for (; i < n; i++) x[i] *= 1 / sum;
}

// MARK: A tile's results out (blip2_kernels.store_tile)

// A panel tile's [8 rows][tokens] buffer as 8 x 8 floats, row r read from r * tokens (past the tile's own
// values for fewer than 8 tokens: the buffer's room), transposed by shuffles into one register per token,
// each stored with one instruction. A value at a time, the stores (8 to each line of y, which the product
// writes for the first time) filled the store buffer.
BLIP2_INLINE void store8_avx2(float *y, __m256 v, const float *bias) {
    _mm256_storeu_ps(y, bias ? _mm256_add_ps(v, _mm256_loadu_ps(bias)) : v);
}

void blip2_store_tile_avx2(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                           float *y, size_t ldy) {
    if (tokens == 1) {
        size_t r = 0;
        for (; r + 8 <= nr; r += 8) store8_avx2(y + r, _mm256_loadu_ps(out + r), bias ? bias + r : NULL);
        for (; r < nr; r++) y[r] = bias ? out[r] + bias[r] : out[r];
        return;
    }
    if (rows != 8 || nr != 8) {
        blip2_store_tile_ref(out, rows, tokens, nr, nt, bias, y, ldy);
        return;
    }
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        __m256 a = _mm256_loadu_ps(out + i * tokens), b = _mm256_loadu_ps(out + (i + 1) * tokens);
        t[i] = _mm256_unpacklo_ps(a, b);
        t[i + 1] = _mm256_unpackhi_ps(a, b);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    BLIP2_UNROLL for (int i = 0; i < 4; i++) {
        if ((size_t)i < nt) store8_avx2(y + i * ldy, _mm256_permute2f128_ps(s[i], s[i + 4], 0x20), bias);
        if ((size_t)i + 4 < nt) store8_avx2(y + (i + 4) * ldy, _mm256_permute2f128_ps(s[i], s[i + 4], 0x31), bias);
    }
}

void blip2_gelu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8_avx2(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = blip2_gelu_ref(x[i]);
}

// MARK: Many-token f32 products (attention: scores Q K^T and the sums of values P V)

// 6 rows of a against 16 columns of b: 12 accumulators, a's value broadcast per row, two registers of b's row
// per step. `masked` loads and stores only the first `cols` columns (maskload never touches masked lanes);
// rows past `rows` repeat the last row and are not stored.
BLIP2_INLINE void gemm_f32_block_avx2(size_t rows, size_t cols, size_t k, float alpha, const float *a, size_t lda,
                                      const float *b, size_t ldb, float *c, size_t ldc, const bool masked, const int R) {
    const float *ar[6];
    BLIP2_UNROLL for (int r = 0; r < R; r++) ar[r] = a + ((size_t)r < rows ? (size_t)r : rows - 1) * lda;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask[2];
    BLIP2_UNROLL for (int v = 0; v < 2; v++) mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cols - 8 * v), lanes);
    __m256 acc[6][2];
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int v = 0; v < 2; v++) acc[r][v] = _mm256_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        const float *bp = b + p * ldb;
        __m256 bv[2];
        BLIP2_UNROLL for (int v = 0; v < 2; v++) bv[v] = masked ? _mm256_maskload_ps(bp + 8 * v, mask[v]) : _mm256_loadu_ps(bp + 8 * v);
        BLIP2_UNROLL for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(ar[r] + p);
            BLIP2_UNROLL for (int v = 0; v < 2; v++) acc[r][v] = _mm256_fmadd_ps(x, bv[v], acc[r][v]);
        }
    }
    const __m256 scale = _mm256_set1_ps(alpha);
    BLIP2_UNROLL for (int r = 0; r < R; r++) {
        if ((size_t)r >= rows) break;
        BLIP2_UNROLL for (int v = 0; v < 2; v++) {
            __m256 y = _mm256_mul_ps(acc[r][v], scale);
            if (masked) _mm256_maskstore_ps(c + r * ldc + 8 * v, mask[v], y);
            else _mm256_storeu_ps(c + r * ldc + 8 * v, y);
        }
    }
}

// One row of a (a decoding query's probabilities against its values) takes a block of its own: the 6-row
// block would repeat it 6 times.
static void gemm_f32_tile_avx2(size_t rows, size_t cols, size_t k, float alpha, const float *a, size_t lda, const float *b,
                               size_t ldb, float *c, size_t ldc) {
    const bool masked = cols != 16;
    if (rows == 1) gemm_f32_block_avx2(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, masked, 1);
    else gemm_f32_block_avx2(rows, cols, k, alpha, a, lda, b, ldb, c, ldc, masked, 6);
}
BLIP2_GEMM_F32(gemm_f32_avx2, gemm_f32_tile_avx2, 6, 16)

// Shared by both x86 paths: activation quantization is defined to be bit-identical everywhere.
void blip2_quantize_q8a_avx2(const float *x, blip2_block_q8a *y, size_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), top = _mm256_set1_ps(127.0f), bottom = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        const float *xb = x + b * BLIP2_QBLOCK;
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(xb + 8 * j);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float d = blip2_q8a_scale(_mm_cvtss_f32(m4));
        __m256 inverse = _mm256_set1_ps(blip2_q8a_inverse(d));
        __m256i q[4];
        for (int j = 0; j < 4; j++) {
            __m256 s = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v[j], inverse), top), bottom);
            q[j] = _mm256_cvtps_epi32(s);   // MXCSR default: round to nearest even
        }
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        // packs interleave the 128-bit lanes; the permute puts the 32 bytes back in element order.
        __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)y[b].qs, _mm256_permutevar8x32_epi32(packed, order));
        y[b].d = d;
        y[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

// q8 x q8a: maddubs wants an unsigned operand, so it takes |w| and moves w's sign onto the activation
// (sign trick); |w| <= 128 and |a| <= 127 keep each 16-bit pair sum below saturation.
BLIP2_INLINE void tile_q8_avx2(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][4];
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        __m256i a[4];
        float da[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            const blip2_block_q8a *xb = (const blip2_block_q8a *)xv[t] + b;
            a[t] = _mm256_loadu_si256((const __m256i *)xb->qs);
            da[t] = xb->d;
        }
        BLIP2_UNROLL for (int r = 0; r < R; r++) {
            const blip2_block_q8 *wb = (const blip2_block_q8 *)wv[r] + b;
            __m256i q = _mm256_loadu_si256((const __m256i *)wb->qs);
            __m256i magnitude = _mm256_abs_epi8(q);
            float dw = half_avx2(wb->d);
            BLIP2_UNROLL for (int t = 0; t < T; t++) {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a[t], q)), ones);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * da[t]), acc[r][t]);
            }
        }
    }
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) out[r * T + t] = hsum_avx2(acc[r][t]);
}

// q4 x q8a: the nibbles are already unsigned (0..15), so vpmaddubsw never saturates (pairs <= 3810).
BLIP2_INLINE __m256i dot_q4_avx2(__m256i u, __m256i a) { return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1)); }
BLIP2_Q_ROWS(tile_q_avx2, dot_q4_avx2)
BLIP2_INLINE void tile_q4_avx2(const void *const *w, const void *const *x, size_t n, float *out, const int R, const int T) {
    tile_q_avx2(w, x, n, out, R, T, true);
}

// The AVX2 instantiation never takes the vnni branch (vnni is false): it only needs something to compile.
BLIP2_INLINE __m256i no_dot_avx2(__m256i u, __m256i a) { (void)u; (void)a; return _mm256_setzero_si256(); }
BLIP2_Q_MV4(tile_q_mv4_avx2, no_dot_avx2)
static void q8_mv_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q_mv4_avx2(w, x, n, out, false, false); }

// q4, one token, four rows. Two rows share a register: their 16 nibble bytes side by side, so one AND gives
// both rows' first 16 elements and a shift and AND their last 16, against the activation's halves
// broadcast to both lanes. The two vpmaddubsw results add in 16 bits (|sum| <= 4 * 15 * 127 = 7620), and
// a vphaddw folds the two row pairs into one register (<= 15240, still exact): per block one vpmaddwd,
// one convert and one FMA serve all four rows. Lanes then hold [r0 r0 r2 r2 | r1 r1 r3 r3], which is
// the order the scales are permuted into. Against the shared four-row form (one unpack, vpmaddubsw,
// vpmaddwd, convert, permute and FMA per row) this is 0.95 against 1.15 ns per row-block from L2.
static void q4_mv_avx2(const void *const *wv, const void *const *xv, size_t n, float *out) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_block_q8a *x = (const blip2_block_q8a *)xv[0];
    const blip2_block_q4 *w0 = wv[0], *w1 = wv[1], *w2 = wv[2], *w3 = wv[3];
    const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const __m256i order = _mm256_setr_epi32(0, 0, 4, 4, 2, 2, 6, 6);
    const char *next = next_tile_avx2(wv);
    // scales: [d0 m0 d1 m1 d2 m2 d3 m3] x [da sa da sa ...]; the odd lanes add up the minimum terms.
    __m256 acc = _mm256_setzero_ps(), minimum = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        prefetch_step_avx2(next, b, 4 * sizeof(blip2_block_q4));
        __m256i first = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[b].qs));
        __m256i last = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x[b].qs + 16)));
        uint32_t pair[4];
        memcpy(&pair[0], &w0[b], 4);
        memcpy(&pair[1], &w1[b], 4);
        memcpy(&pair[2], &w2[b], 4);
        memcpy(&pair[3], &w3[b], 4);
        __m128i halves = _mm_setr_epi32((int)pair[0], (int)pair[1], (int)pair[2], (int)pair[3]);
        __m256 ds = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)&x[b].d));
        __m256 scales = _mm256_mul_ps(_mm256_cvtph_ps(halves), ds);
        minimum = _mm256_add_ps(minimum, scales);
        __m256i q01 = _mm256_loadu2_m128i((const __m128i *)w1[b].qs, (const __m128i *)w0[b].qs);
        __m256i q23 = _mm256_loadu2_m128i((const __m128i *)w3[b].qs, (const __m128i *)w2[b].qs);
        __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(q01, low), first),
                                       _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q01, 4), low), last));
        __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(q23, low), first),
                                       _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q23, 4), low), last));
        __m256i p = _mm256_madd_epi16(_mm256_hadd_epi16(p01, p23), ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(scales, order), acc);
    }
    float sums[8], minima[8];
    _mm256_storeu_ps(sums, acc);
    _mm256_storeu_ps(minima, minimum);
    out[0] = (sums[0] + sums[1]) + minima[1];
    out[1] = (sums[4] + sums[5]) + minima[3];
    out[2] = (sums[2] + sums[3]) + minima[5];
    out[3] = (sums[6] + sums[7]) + minima[7];
}

BLIP2_INLINE __m256 load8_f32(const float *p) { return _mm256_loadu_ps(p); }
BLIP2_INLINE __m256 load8_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
BLIP2_INLINE __m256 fma8_avx2(__m256 acc, __m256 w, __m256 x) { return _mm256_fmadd_ps(w, x, acc); }


BLIP2_FLOAT_TILE(tile_f32_avx2, __m256, 8, float, load8_f32, BLIP2_SAME, _mm256_setzero_ps, _mm256_loadu_ps, fma8_avx2, hsum_avx2)
BLIP2_FLOAT_TILE(tile_f16_avx2, __m256, 8, uint16_t, load8_f16, half_avx2, _mm256_setzero_ps, _mm256_loadu_ps, fma8_avx2, hsum_avx2)

BLIP2_TILE(q8_mm_avx2, tile_q8_avx2, 2, 4)
BLIP2_TILE(q4_mm_avx2, tile_q4_avx2, 2, 4)
BLIP2_TILE(f32_mv_avx2, tile_f32_avx2, 4, 1)
BLIP2_TILE(f32_mm_avx2, tile_f32_avx2, 2, 4)
BLIP2_TILE(f16_mv_avx2, tile_f16_avx2, 4, 1)
BLIP2_TILE(f16_mm_avx2, tile_f16_avx2, 2, 4)



// MARK: Panels (q8p, q4p): one register holds 4 inputs of 8 rows; each token's 4 activation bytes are
// broadcast against it, so one vpmaddubsw does 32 multiplies for 8 rows at once and the sums stay in int32
// across the block's 8 groups. The f16 scales of the 8 rows are converted with one instruction per block.

// q8p: the sign trick of tile_q8_avx2 (|w| against a with w's sign), per group and token.
BLIP2_INLINE void tile_q8p_avx2(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_panel_q8 *w = (const blip2_panel_q8 *)wv[0];
    const blip2_block_q8a *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const blip2_panel_q8 *p = w + b;
        if (T == 1) blip2_prefetch_panel(p, sizeof(blip2_panel_q8));
        __m256i sum[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) sum[t] = _mm256_setzero_si256();
        BLIP2_UNROLL for (int g = 0; g < 8; g++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(p->qs + 32 * g));
            __m256i magnitude = _mm256_abs_epi8(q);
            BLIP2_UNROLL for (int t = 0; t < T; t++) {
                __m256i a = broadcast4_avx2(x[t][b].qs + 4 * g);
                sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, q)), ones));
            }
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        BLIP2_UNROLL for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), acc[t]);
    }
    store_panel_avx2(acc, out, T);
}

// q4p: nibbles are unsigned already, so no sign trick; each vpmaddubsw pair sum is at most 2 * 15 * 127
// and a block's eight of them add up to 30480 at most, so the block sums in 16 bits and widens once.
BLIP2_INLINE void tile_q4p_avx2(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const blip2_panel_q4 *w = (const blip2_panel_q4 *)wv[0];
    const blip2_block_q8a *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8a *)xv[t];
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const blip2_panel_q4 *p = w + b;
        if (T == 1) blip2_prefetch_panel(p, sizeof(blip2_panel_q4));
        __m256i sum[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) sum[t] = _mm256_setzero_si256();
        BLIP2_UNROLL for (int run = 0; run < 4; run++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(p->qs + 32 * run));
            __m256i even = _mm256_and_si256(raw, low), odd = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            BLIP2_UNROLL for (int t = 0; t < T; t++) {
                __m256i pair = _mm256_add_epi16(_mm256_maddubs_epi16(even, broadcast4_avx2(x[t][b].qs + 8 * run)),
                                                _mm256_maddubs_epi16(odd, broadcast4_avx2(x[t][b].qs + 8 * run + 4)));
                sum[t] = _mm256_add_epi16(sum[t], pair);
            }
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->m));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum[t], ones));
            acc[t] = _mm256_fmadd_ps(dot, _mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), acc[t]);
            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t][b].s), acc[t]);
        }
    }
    store_panel_avx2(acc, out, T);
}

static void q8p_mv_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_avx2(w, x, n, out, 1); }
static void q8p_mm_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_avx2(w, x, n, out, 4); }
static void q4p_mv_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_avx2(w, x, n, out, 1); }
static void q4p_mm_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_avx2(w, x, n, out, 4); }
static void q8p_mm2_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_avx2(w, x, n, out, 2); }
static void q8p_mm3_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_avx2(w, x, n, out, 3); }
static void q4p_mm2_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_avx2(w, x, n, out, 2); }
static void q4p_mm3_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_avx2(w, x, n, out, 3); }

// MARK: Super-block panels (q4k, q3k, q6k): the q4p/q8p register layout (4 inputs of 8 rows per 32 bytes,
// against 4 broadcast activation bytes), with the sub-block scales applied in the integer domain: each
// sub-block's vpmaddubsw sums (16 bits) go through vpmaddwd against the 8 rows' sub-scales (each row's
// scale in both 16-bit lanes of its pair) instead of against ones. Float work is one convert and FMA per
// super-block and token. The minimums (q4k) and value offsets (q3k: 4, q6k: 32) meet the activation's
// 16-input sums through one more vpmaddwd per two sub-blocks: [row r: s_j, s_j+1] against (sum_j, sum_j+1).

// q8k: bit-identical to the reference (the same clamp, round-to-nearest-even conversion and sums).
void blip2_quantize_q8k_avx2(const float *x, blip2_block_q8k *y, size_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), top = _mm256_set1_ps(127.0f), bottom = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t b = 0; b * BLIP2_SUPERBLOCK < n; b++) {
        size_t count = n - b * BLIP2_SUPERBLOCK < BLIP2_SUPERBLOCK ? n - b * BLIP2_SUPERBLOCK : BLIP2_SUPERBLOCK;
        const float *xb = x + b * BLIP2_SUPERBLOCK;
        __m256 m = _mm256_setzero_ps();
        for (size_t i = 0; i < count; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float d = blip2_q8a_scale(_mm_cvtss_f32(m4));
        __m256 inverse = _mm256_set1_ps(blip2_q8a_inverse(d));
        memset(&y[b], 0, sizeof y[b]);
        y[b].d = d;
        for (size_t i = 0; i < count; i += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                __m256 s = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * j), inverse), top), bottom);
                q[j] = _mm256_cvtps_epi32(s);
            }
            for (int h = 0; h < 2; h++) {
                __m256i sum = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
                y[b].sums[i / 16 + h] = (int16_t)_mm_cvtsi128_si32(s4);
            }
            __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(y[b].qs + i), _mm256_permutevar8x32_epi32(packed, order));
        }
    }
}

// q4k chunk c for every token: q4p's 16-bit sums (8 x 2 x 15 x 127 = 30480 at most), vpmaddwd by the sub-scales.
BLIP2_INLINE void q4k_chunk_mm_avx2(__m256i *dot, const int T, const uint8_t *qs, const blip2_block_q8k *const *x, size_t s, size_t c, const int8_t *scales) {
    const __m256i nibble = _mm256_set1_epi8(0x0f), scale = row_scales_avx2(scales, false);
    __m256i part[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) part[t] = _mm256_setzero_si256();
    BLIP2_UNROLL for (int run = 0; run < 4; run++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * run));
        __m256i even = _mm256_and_si256(raw, nibble), odd = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            const int8_t *a = x[t][s].qs + 32 * c + 8 * run;
            part[t] = _mm256_add_epi16(part[t], _mm256_add_epi16(_mm256_maddubs_epi16(even, broadcast4_avx2(a)),
                                                                _mm256_maddubs_epi16(odd, broadcast4_avx2(a + 4))));
        }
    }
    BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(part[t], scale));
}

// q3k and q6k: signed sub-scales per 16 inputs, values offset by 4 or 32. Levels are unsigned for vpmaddubsw;
// the offset comes off as offset * sum_j s_j sum_j(a), from the activation's 16-input sums.
BLIP2_INLINE void q36k_sub_mm_avx2(__m256i *dot, const int T, const uint8_t *chunk, int h, bool six, const blip2_block_q8k *const *x, size_t s, size_t c,
                                   const int8_t *scales) {
    const __m256i scale = row_scales_avx2(scales, true);
    __m256i g[4];
    q36k_levels_avx2(chunk, h, six, g);
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        const int8_t *a = x[t][s].qs + 32 * c + 16 * h;
        // q6k pair sums reach 2 * 63 * 127 = 16002: two groups fit 16 bits, four do not.
        __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(g[0], broadcast4_avx2(a)), _mm256_maddubs_epi16(g[1], broadcast4_avx2(a + 4)));
        __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(g[2], broadcast4_avx2(a + 8)), _mm256_maddubs_epi16(g[3], broadcast4_avx2(a + 12)));
        if (six) {
            dot[t] = _mm256_add_epi32(dot[t], _mm256_add_epi32(_mm256_madd_epi16(p01, scale), _mm256_madd_epi16(p23, scale)));
        } else {
            dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(_mm256_add_epi16(p01, p23), scale));
        }
    }
}

// q4k's chunk with vpmaddubsw: 16-bit sums (8 x 2 x 15 x 127 = 30480 at most), vpmaddwd by the sub-scales.
BLIP2_INLINE __m256i q4k_chunk_avx2(const uint8_t *qs, const int8_t *a, const int8_t *scales) {
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    __m256i part = _mm256_setzero_si256();
    BLIP2_UNROLL for (int run = 0; run < 4; run++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * run));
        const __m256i even = _mm256_and_si256(raw, nibble), odd = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
        part = _mm256_add_epi16(part, _mm256_add_epi16(_mm256_maddubs_epi16(even, broadcast4_avx2(a + 8 * run)),
                                                       _mm256_maddubs_epi16(odd, broadcast4_avx2(a + 8 * run + 4))));
    }
    return _mm256_madd_epi16(part, row_scales_avx2(scales, false));
}

// q3k's/q6k's sub-block with vpmaddubsw (q6k: pairs of groups only, as in tile_q36k_avx2).
BLIP2_INLINE __m256i q36k_sub_avx2(const uint8_t *chunk, int h, bool six, const int8_t *a, const int8_t *scales) {
    __m256i g[4];
    q36k_levels_avx2(chunk, h, six, g);
    const __m256i scale = row_scales_avx2(scales, true);
    __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(g[0], broadcast4_avx2(a)), _mm256_maddubs_epi16(g[1], broadcast4_avx2(a + 4)));
    __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(g[2], broadcast4_avx2(a + 8)), _mm256_maddubs_epi16(g[3], broadcast4_avx2(a + 12)));
    if (six) return _mm256_add_epi32(_mm256_madd_epi16(p01, scale), _mm256_madd_epi16(p23, scale));
    return _mm256_madd_epi16(_mm256_add_epi16(p01, p23), scale);
}

// q3k's whole chunk (sub-blocks 2c, 2c + 1) with its value offset: sum_j s_j sum_i (q_i - 4) a_i.
BLIP2_INLINE __m256i q3k_chunk_avx2(__m256i dot, const uint8_t *chunk, const int8_t *a, const int8_t *scales, __m256i sums) {
    dot = _mm256_add_epi32(dot, _mm256_add_epi32(q36k_sub_avx2(chunk, 0, false, a, scales), q36k_sub_avx2(chunk, 1, false, a + 16, scales + 8)));
    return _mm256_sub_epi32(dot, _mm256_slli_epi32(_mm256_madd_epi16(scale_pairs_avx2(scales, scales + 8, true), sums), 2));
}

BLIP2_INLINE __m256i pair_dot_avx2(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
BLIP2_INLINE __m256i rows_avx2(__m256i v) { return v; }
BLIP2_KQ4_MM(tile_q4k_avx2, __m256i, _mm256_setzero_si256, q4k_chunk_mm_avx2, rows_avx2)
BLIP2_KQ36_MM(tile_q36k_avx2, __m256i, _mm256_setzero_si256, q36k_sub_mm_avx2, q3k_chunk_avx2, rows_avx2, pair_dot_avx2)
BLIP2_KQ_MV(tile_q4k_mv_avx2, tile_q36k_mv_avx2, q4k_chunk_avx2, q36k_sub_avx2, q3k_chunk_avx2, pair_dot_avx2, 1.0f)

static void q4k_mv_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_mv_avx2(w, x, n, out, BLIP2_MV_PANELS); }
static void q4k_mm_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4k_avx2(w, x, n, out, 4); }
static void q3k_mv_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_mv_avx2(w, x, n, out, BLIP2_MV_PANELS, false); }
static void q3k_mm_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_avx2(w, x, n, out, 4, false); }
static void q6k_mv_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_mv_avx2(w, x, n, out, BLIP2_MV_PANELS, true); }
static void q6k_mm_avx2(const void *const *w, const void *const *x, size_t n, float *out) { tile_q36k_avx2(w, x, n, out, 4, true); }

// vpmaddubsw + vpmaddwd, the pair every AVX2 int8 product is built from, in 12 independent chains (enough to
// cover their latency at two per cycle); each pair is 32 multiply-adds. The empty asm keeps the operand
// opaque so the loop is not folded.
static uint64_t int8_peak_avx2(uint64_t iterations) {
    __m256i v[12], a = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int j = 0; j < 12; j++) v[j] = _mm256_set1_epi8((char)(j + 1));
    for (uint64_t i = 0; i < iterations; i++) {
        BLIP2_OPAQUE(a);
        for (int j = 0; j < 12; j++) v[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(v[j], a), ones);
    }
    __m256i s = v[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_epi32(s, v[j]);
    volatile int sink = _mm256_extract_epi32(s, 0);
    (void)sink;
    return iterations * 12 * 32 * 2;
}

BLIP2_END_TARGET

const blip2_kernels blip2_kernels_avx2 = {
    .isa = BLIP2_ISA_AVX2,
    .name = "avx2",
    .quantize_q8a = blip2_quantize_q8a_avx2,
    .quantize_q8k = blip2_quantize_q8k_avx2,
    .exp_row = blip2_exp_row_avx2,
    .softmax = blip2_softmax_avx2,
    .gelu = blip2_gelu_avx2,
    .matvec = {
        [BLIP2_TYPE_F32] = {f32_mv_avx2, 4, 1}, [BLIP2_TYPE_F16] = {f16_mv_avx2, 4, 1},
        [BLIP2_TYPE_Q8] = {q8_mv_avx2, 4, 1}, [BLIP2_TYPE_Q4] = {q4_mv_avx2, 4, 1},
        [BLIP2_TYPE_Q8P] = {q8p_mv_avx2, 8, 1}, [BLIP2_TYPE_Q4P] = {q4p_mv_avx2, 8, 1},
        [BLIP2_TYPE_Q4K] = {q4k_mv_avx2, 8 * BLIP2_MV_PANELS, 1},
        [BLIP2_TYPE_Q3K] = {q3k_mv_avx2, 8 * BLIP2_MV_PANELS, 1}, [BLIP2_TYPE_Q6K] = {q6k_mv_avx2, 8 * BLIP2_MV_PANELS, 1},
    },
    .matmul = {
        [BLIP2_TYPE_F32] = {f32_mm_avx2, 2, 4}, [BLIP2_TYPE_F16] = {f16_mm_avx2, 2, 4},
        [BLIP2_TYPE_Q8] = {q8_mm_avx2, 2, 4}, [BLIP2_TYPE_Q4] = {q4_mm_avx2, 2, 4},
        [BLIP2_TYPE_Q8P] = {q8p_mm_avx2, 8, 4}, [BLIP2_TYPE_Q4P] = {q4p_mm_avx2, 8, 4},
        [BLIP2_TYPE_Q4K] = {q4k_mm_avx2, 8, 4}, [BLIP2_TYPE_Q3K] = {q3k_mm_avx2, 8, 4}, [BLIP2_TYPE_Q6K] = {q6k_mm_avx2, 8, 4},
    },
    .matmul_narrow = {
        [BLIP2_TYPE_Q8P] = {NULL, NULL, q8p_mm2_avx2, q8p_mm3_avx2}, [BLIP2_TYPE_Q4P] = {NULL, NULL, q4p_mm2_avx2, q4p_mm3_avx2},
    },
    .int8_peak = int8_peak_avx2,
    .gemm_f32 = gemm_f32_avx2,
    .store_tile = blip2_store_tile_avx2,
};

#endif
