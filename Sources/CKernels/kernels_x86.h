// What the two x86 tables share: kernels_avx2.c (AVX2 + FMA + F16C) and kernels_avx512.c (AVX-512 F/BW/VL +
// VNNI) include this. Every function carries its own target attribute (through the pragmas below), so the
// package builds without -m flags and runs on any x86-64 CPU; kernels.c only hands a table out where
// blip2_cpu_features() reports its instructions.
//
// BLIP2_X86_EMULATED compiles the same code against portable implementations of the intrinsics (the test
// harness does this to check both paths on machines without them).
#pragma once
#include "kernels_internal.h"
#include <math.h>

#if defined(BLIP2_X86_EMULATED)
#include "x86_emulated.h"
#define BLIP2_X86_KERNELS 1
#define BLIP2_BEGIN_AVX2
#define BLIP2_BEGIN_AVX512
#define BLIP2_END_TARGET
#elif defined(__x86_64__)
#include <immintrin.h>
#define BLIP2_X86_KERNELS 1
#if defined(__clang__)
#define BLIP2_BEGIN_AVX2 _Pragma("clang attribute push (__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define BLIP2_BEGIN_AVX512 _Pragma("clang attribute push (__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni\"))), apply_to = function)")
#define BLIP2_END_TARGET _Pragma("clang attribute pop")
#else
#define BLIP2_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define BLIP2_BEGIN_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni\")")
#define BLIP2_END_TARGET _Pragma("GCC pop_options")
#endif
#endif

#if BLIP2_X86_KERNELS

// Makes a register value opaque to the optimizer (the peak loops must not be folded). The emulated build's
// vectors are plain structs, so there it goes through memory.
#if defined(BLIP2_X86_EMULATED)
#define BLIP2_OPAQUE(v) __asm__ volatile("" : "+m"(v))
#else
#define BLIP2_OPAQUE(v) __asm__ volatile("" : "+x"(v))
#endif

// The exponential and GELU of both x86 tables, written once over the register width (docs/KERNELS.md has
// the methods): P is the intrinsics' prefix (_mm256, _mm512), V the float register and VI the integer one;
// round(x) rounds to nearest, magnitude(x) is |x|, by_sign(x, a, b) takes b where x's sign bit is set and a
// elsewhere, as_float(i) reinterprets the bits. Every lane takes the same operations, so both widths give
// the same bits.
#define BLIP2_EXP_GELU(exp_name, gelu_name, V, VI, P, round, magnitude, by_sign, as_float)                          \
    /* e^(n ln 2 + r) for an integer-valued n in [-126, 127] and |r| <= ln 2 / 2 (plus rounding) */              \
    BLIP2_INLINE V exp_name##_reduced(V n, V r) {                                                                \
        V p = P##_set1_ps(BLIP2_EXP_P0);                                                                         \
        p = P##_fmadd_ps(p, r, P##_set1_ps(BLIP2_EXP_P1));                                                        \
        p = P##_fmadd_ps(p, r, P##_set1_ps(BLIP2_EXP_P2));                                                        \
        p = P##_fmadd_ps(p, r, P##_set1_ps(BLIP2_EXP_P3));                                                        \
        p = P##_fmadd_ps(p, r, P##_set1_ps(BLIP2_EXP_P4));                                                        \
        p = P##_fmadd_ps(p, r, P##_set1_ps(BLIP2_EXP_P5));                                                        \
        V y = P##_fmadd_ps(p, P##_mul_ps(r, r), P##_add_ps(r, P##_set1_ps(1.0f)));                                \
        VI scale = P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(n), P##_set1_epi32(127)), 23);                    \
        return P##_mul_ps(y, as_float(scale));                                                                   \
    }                                                                                                            \
    BLIP2_INLINE V exp_name(V x) {                                                                               \
        x = P##_min_ps(P##_max_ps(x, P##_set1_ps(BLIP2_EXP_LO)), P##_set1_ps(BLIP2_EXP_HI));                    \
        V n = round(P##_mul_ps(x, P##_set1_ps(BLIP2_LOG2E)));                                                    \
        V r = P##_fnmadd_ps(n, P##_set1_ps(BLIP2_LN2_HI), x);                                                     \
        r = P##_fnmadd_ps(n, P##_set1_ps(BLIP2_LN2_LO), r);                                                       \
        return exp_name##_reduced(n, r);                                                                         \
    }                                                                                                            \
    BLIP2_INLINE V gelu_name(V x) {                                                                              \
        V z = P##_mul_ps(magnitude(x), P##_set1_ps(0.70710678118654752f));                                       \
        V u = P##_div_ps(P##_set1_ps(1.0f), P##_fmadd_ps(z, P##_set1_ps(0.5f), P##_set1_ps(1.0f)));               \
        V t = P##_fmadd_ps(u, P##_set1_ps(BLIP2_GELU_T_SCALE), P##_set1_ps(BLIP2_GELU_T_SHIFT));                  \
        V p = P##_set1_ps(BLIP2_GELU_P9);                                                                        \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P8));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P7));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P6));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P5));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P4));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P3));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P2));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P1));                                                       \
        p = P##_fmadd_ps(p, t, P##_set1_ps(BLIP2_GELU_P0));                                                       \
        /* e^(-z^2 + p) as one exponential of a two-part argument: a = -x^2/2 rounded, b = p less that          \
           rounding (x^2 = xx + residual exactly). The large part a is reduced by n ln 2 exactly, the small b   \
           added after, so the sum is never rounded at a's magnitude. Where a + b is below the exponential's   \
           range, a is raised to meet it: e is then the smallest normal and GELU within 2e-38 of 0. */          \
        V xx = P##_mul_ps(x, x), residual = P##_fmsub_ps(x, x, xx);                                              \
        V a = P##_mul_ps(xx, P##_set1_ps(-0.5f)), b = P##_fnmadd_ps(residual, P##_set1_ps(0.5f), p);             \
        a = P##_max_ps(a, P##_sub_ps(P##_set1_ps(BLIP2_EXP_LO), b));                                             \
        V n = round(P##_mul_ps(P##_add_ps(a, b), P##_set1_ps(BLIP2_LOG2E)));                                     \
        V r = P##_fnmadd_ps(n, P##_set1_ps(BLIP2_LN2_HI), a);                                                     \
        r = P##_add_ps(P##_fnmadd_ps(n, P##_set1_ps(BLIP2_LN2_LO), r), b);                                        \
        V e = exp_name##_reduced(n, r);                                                                          \
        V half_erfc = P##_mul_ps(P##_mul_ps(u, e), P##_set1_ps(0.5f));                                           \
        return P##_mul_ps(x, by_sign(x, P##_sub_ps(P##_set1_ps(1.0f), half_erfc), half_erfc));                   \
    }

// The f32 many-token product (blip2_kernels.gemm_f32) over tiles of ROWS x COLS outputs: column blocks
// outside, row blocks inside, so a block of b (k x COLS floats: 16 or 49 KB for ViT-g's 257 keys) stays in
// L1 (48 KB on Ice Lake), or nearly, while every row of a passes it. tile(rows, cols, ...) takes up to ROWS
// rows and COLS columns.
#define BLIP2_GEMM_F32(name, tile, ROWS, COLS)                                                                   \
    static void name(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b,      \
                     size_t ldb, float *c, size_t ldc) {                                                         \
        for (size_t j = 0; j < n; j += (COLS)) {                                                                 \
            size_t cols = n - j < (COLS) ? n - j : (COLS);                                                       \
            for (size_t i = 0; i < m; i += (ROWS)) {                                                             \
                size_t rows = m - i < (ROWS) ? m - i : (ROWS);                                                   \
                tile(rows, cols, k, alpha, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc);                  \
            }                                                                                                    \
        }                                                                                                        \
    }

// Functions of kernels_avx2.c that the AVX-512 table uses: activation quantization as it is (defined to be
// bit-identical on every path); exp and GELU for the last n % 16 values of its own.
void blip2_exp_row_avx2(const float *x, float *y, size_t n);
void blip2_softmax_avx2(float *x, size_t n);
void blip2_gelu_avx2(float *x, size_t n);
void blip2_quantize_q8a_avx2(const float *x, blip2_block_q8a *y, size_t n);
void blip2_quantize_q8k_avx2(const float *x, blip2_block_q8k *y, size_t n);
void blip2_store_tile_avx2(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                           float *y, size_t ldy);

// The pieces both tables' tiles are built from, compiled for AVX2: an AVX-512 function inlines them (their
// target is a subset of its own) and there they take the AVX-512 encodings and its 32 registers.
BLIP2_BEGIN_AVX2

BLIP2_INLINE float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

BLIP2_INLINE float half_avx2(uint16_t h) { return _cvtsh_ss(h); }

// A q4 block's d and m are adjacent: one 32-bit load and one conversion for both. (Two 16-bit inserts and
// conversions per block cost a fifth of the one-token q4 product.)
BLIP2_INLINE void scale_and_minimum_avx2(const blip2_block_q4 *wb, float *d, float *m) {
    uint32_t pair;
    memcpy(&pair, wb, sizeof pair);
    __m128 both = _mm_cvtph_ps(_mm_cvtsi32_si128((int)pair));
    *d = _mm_cvtss_f32(both);
    *m = _mm_cvtss_f32(_mm_movehdup_ps(both));
}

// The 32 nibbles of a q4 block as bytes in element order: the 16 bytes go to both halves, the upper
// half shifted by 4 (one variable shift instead of a shift and an insert).
BLIP2_INLINE __m256i unpack_q4_avx2(const blip2_block_q4 *wb) {
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)wb->qs));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
}

// q8 and q4 rows x q8a tokens, for a dot product of unsigned by signed bytes that never saturates
// (`dot`: vpdpbusd; AVX2's vpmaddubsw + vpmaddwd where the unsigned operand is q4's nibbles, <= 15). q4's
// nibbles are unsigned already. q8 uses the offset trick: w + 128 (an xor of the sign bit) is unsigned, and
// sum (w + 128) a = sum w a + 128 sum a, so the correction is a "minimum" of -128 d_w per block, the same term
// q4 carries: one shared tile (AVX2 takes it for q4 only: its q8 keeps the sign trick).
#define BLIP2_Q_ROWS(name, dot)                                                                                                              \
BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T, const bool is_q4) {     \
    const size_t nb = n / BLIP2_QBLOCK;                                                                                                      \
    const __m256i offset = _mm256_set1_epi8((char)0x80);                                                                                     \
    __m256 acc[8][4];                                                                                                                        \
    float minimum[8][4];                                                                                                                     \
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                      \
        acc[r][t] = _mm256_setzero_ps();                                                                                                     \
        minimum[r][t] = 0;                                                                                                                   \
    }                                                                                                                                        \
    for (size_t b = 0; b < nb; b++) {                                                                                                        \
        __m256i a[4];                                                                                                                        \
        float da[4], sa[4];                                                                                                                  \
        BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                                                           \
            const blip2_block_q8a *xb = (const blip2_block_q8a *)xv[t] + b;                                                                  \
            a[t] = _mm256_loadu_si256((const __m256i *)xb->qs);                                                                              \
            da[t] = xb->d;                                                                                                                   \
            sa[t] = xb->s;                                                                                                                   \
        }                                                                                                                                    \
        BLIP2_UNROLL for (int r = 0; r < R; r++) {                                                                                           \
            __m256i u;                                                                                                                       \
            float dw, mw;                                                                                                                    \
            if (is_q4) {                                                                                                                     \
                const blip2_block_q4 *wb = (const blip2_block_q4 *)wv[r] + b;                                                                \
                u = unpack_q4_avx2(wb);                                                                                                      \
                scale_and_minimum_avx2(wb, &dw, &mw);                                                                                        \
            } else {                                                                                                                         \
                const blip2_block_q8 *wb = (const blip2_block_q8 *)wv[r] + b;                                                                \
                u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb->qs), offset);                                                   \
                dw = half_avx2(wb->d);                                                                                                       \
                mw = -128.0f * dw;                                                                                                           \
            }                                                                                                                                \
            BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                                                       \
                __m256i p = dot(u, a[t]);                                                                                                    \
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * da[t]), acc[r][t]);                                   \
                minimum[r][t] += mw * sa[t];                                                                                                 \
            }                                                                                                                                \
        }                                                                                                                                    \
    }                                                                                                                                        \
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) out[r * T + t] = hsum_avx2(acc[r][t]) + minimum[r][t]; \
}

// One-token tiles stream each weight byte once, straight from memory. The hardware prefetcher follows
// each row but has to pick up every new set of rows again, which left short rows (2560 inputs: 1600 bytes
// of q4) at half the read bandwidth. So while a tile runs it prefetches the next tile's rows: the four
// rows after its own, walked linearly in step with its blocks (`step` bytes per block: four rows' worth),
// one line per 64 bytes. Weight rows are contiguous in every model matrix; with a wider stride the
// prefetches merely miss. A prefetch never faults, so the last tile may point past the matrix.
BLIP2_INLINE const char *next_tile_avx2(const void *const *wv) {
    const char *first = (const char *)wv[0];
    return first + 4 * ((const char *)wv[1] - first);
}

BLIP2_INLINE void prefetch_step_avx2(const char *next, size_t b, const size_t step) {
    BLIP2_UNROLL for (size_t line = 0; line < step; line += 64) __builtin_prefetch(next + b * step + line, 0, 3);
}

// One token, four rows (decode). Each weight byte is used once, so per-block overhead decides the speed:
// the four rows' f16 scales (and q4 minimums) of a block are converted with one instruction and
// multiplied by the activation's (d, s) together; each row then takes its lane with one permute.
// Written once as a macro so each target region instantiates it with its own dot product: AVX2 uses it for
// q8 (q4 has its own tile below), AVX-512 for both. With `vnni`, q8 takes the offset trick of tile_q_vnni
// below: its lanes become [d0 -128d0 d1 -128d1 ...], the same layout as q4's (d, m), and vpdpbusd does
// each block's dot product.
#define BLIP2_Q_MV4(name, dot)                                                                                         \
BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const bool is_q4, const bool vnni) { \
    const size_t nb = n / BLIP2_QBLOCK;                                                                                \
    const __m256i ones = _mm256_set1_epi16(1);                                                                         \
    const blip2_block_q8a *x = (const blip2_block_q8a *)xv[0];                                                         \
    const uint8_t *w[4];                                                                                               \
    for (int r = 0; r < 4; r++) w[r] = (const uint8_t *)wv[r];                                                         \
    const size_t block_bytes = is_q4 ? sizeof(blip2_block_q4) : sizeof(blip2_block_q8);                                \
    /* q4 lanes: [d0 m0 d1 m1 d2 m2 d3 m3]; q8 lanes: [d0 d1 d2 d3 ...] */                                             \
    const bool paired = is_q4 || vnni;                                                                                 \
    const int step = paired ? 2 : 1;                                                                                   \
    const __m256i offset_bits = _mm256_set1_epi8((char)0x80);                                                          \
    const __m256 offset_weights = _mm256_setr_ps(1, -128, 1, -128, 1, -128, 1, -128);                                  \
    const __m256i lane[4] = {_mm256_set1_epi32(0), _mm256_set1_epi32(step), _mm256_set1_epi32(2 * step), _mm256_set1_epi32(3 * step)}; \
    __m256 acc[4], minimum = _mm256_setzero_ps();                                                                      \
    for (int r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();                                                          \
    const char *next = next_tile_avx2(wv);                                                                             \
    for (size_t b = 0; b < nb; b++) {                                                                                  \
        const size_t offset = b * block_bytes;                                                                         \
        if (is_q4) prefetch_step_avx2(next, b, 4 * sizeof(blip2_block_q4));                                           \
        else prefetch_step_avx2(next, b, 4 * sizeof(blip2_block_q8));                                                  \
        __m256i a = _mm256_loadu_si256((const __m256i *)x[b].qs);                                                      \
        __m256 scales;                                                                                                 \
        if (paired) {                                                                                                  \
            uint32_t pair[4];                                                                                          \
            for (int r = 0; r < 4; r++) {                                                                              \
                if (is_q4) {                                                                                           \
                    memcpy(&pair[r], w[r] + offset, 4);                                                                \
                } else {                                                                                               \
                    uint16_t h;                                                                                        \
                    memcpy(&h, w[r] + offset, 2);                                                                      \
                    pair[r] = (uint32_t)h | (uint32_t)h << 16;                                                         \
                }                                                                                                      \
            }                                                                                                          \
            __m128i halves = _mm_setr_epi32((int)pair[0], (int)pair[1], (int)pair[2], (int)pair[3]);                   \
            /* (d, s) of the activation block repeated: d_w d_a in even lanes, m_w s_a in odd ones. */                 \
            __m256 ds = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)&x[b].d));                                \
            if (!is_q4) ds = _mm256_mul_ps(ds, offset_weights);                                                        \
            scales = _mm256_mul_ps(_mm256_cvtph_ps(halves), ds);                                                       \
            minimum = _mm256_add_ps(minimum, scales);                                                                  \
        } else {                                                                                                       \
            uint64_t packed = 0;                                                                                       \
            for (int r = 0; r < 4; r++) {                                                                              \
                uint16_t h;                                                                                            \
                memcpy(&h, w[r] + offset, 2);                                                                          \
                packed |= (uint64_t)h << (16 * r);                                                                     \
            }                                                                                                          \
            scales = _mm256_mul_ps(_mm256_cvtph_ps(_mm_cvtsi64_si128((long long)packed)), _mm256_set1_ps(x[b].d));     \
        }                                                                                                              \
        BLIP2_UNROLL for (int r = 0; r < 4; r++) {                                                                     \
            __m256i p;                                                                                                 \
            if (vnni) {                                                                                                \
                __m256i u = is_q4 ? unpack_q4_avx2((const blip2_block_q4 *)(w[r] + offset))                            \
                                  : _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((const blip2_block_q8 *)(w[r] + offset))->qs), offset_bits); \
                p = dot(u, a);                                                                                         \
            } else {                                                                                                   \
                __m256i q = _mm256_loadu_si256((const __m256i *)((const blip2_block_q8 *)(w[r] + offset))->qs);        \
                p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(a, q)), ones);         \
            }                                                                                                          \
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(scales, lane[r]), acc[r]);        \
        }                                                                                                              \
    }                                                                                                                  \
    float minima[8];                                                                                                   \
    _mm256_storeu_ps(minima, minimum);                                                                                 \
    for (int r = 0; r < 4; r++) out[r] = hsum_avx2(acc[r]) + (paired ? minima[2 * r + 1] : 0.0f);                      \
}

BLIP2_INLINE __m256i broadcast4_avx2(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

// out[r * T + t] from one register of 8 row sums per token.
BLIP2_INLINE void store_panel_avx2(const __m256 *acc, float *out, const int T) {
    float lanes[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        _mm256_storeu_ps(lanes, acc[t]);
        BLIP2_UNROLL for (int r = 0; r < 8; r++) out[r * T + t] = lanes[r];
    }
}

// Eight bytes (one sub-block's scales of rows 0..7) as [s0 s0 s1 s1 ...] in 16 bits, the vpmaddwd operand.
BLIP2_INLINE __m256i row_scales_avx2(const int8_t *s, bool is_signed) {
    __m128i v = _mm_loadl_epi64((const __m128i *)s);
    v = _mm_unpacklo_epi8(v, v);
    return is_signed ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

// Two sub-blocks' scales of rows 0..7 as [s_j(r0) s_k(r0) s_j(r1) s_k(r1) ...] in 16 bits.
BLIP2_INLINE __m256i scale_pairs_avx2(const int8_t *sj, const int8_t *sk, bool is_signed) {
    __m128i v = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)sj), _mm_loadl_epi64((const __m128i *)sk));
    return is_signed ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

BLIP2_INLINE __m256i sum_pair_avx2(const int16_t *sums) {
    int32_t pair;
    memcpy(&pair, sums, sizeof pair);
    return _mm256_set1_epi32(pair);
}

// Bits from..from+w-1 of every byte (w: the bits of `mask`, which sits at bit `to`) moved to bit `to`: one
// 16-bit shift (none where from == to) and the mask, which drops what the shift carried across a byte.
BLIP2_INLINE __m256i bits_at_avx2(__m256i v, int from, int to, __m256i mask) {
    if (to > from) v = _mm256_slli_epi16(v, to - from);
    if (to < from) v = _mm256_srli_epi16(v, from - to);
    return _mm256_and_si256(v, mask);
}

// 6-bit fields stored as a nibble plane and a crumb plane: (low & 15) | ((high >> shift) & 3) << 4, per byte.
BLIP2_INLINE __m256i six_bits_avx2(__m256i low, __m256i high, int low_shift, int high_shift) {
    return _mm256_or_si256(bits_at_avx2(low, low_shift, 0, _mm256_set1_epi8(0x0f)), bits_at_avx2(high, high_shift, 4, _mm256_set1_epi8(0x30)));
}

// The 64 sub-scales and 64 minimums of a q4k super-block (entry 8 j + r), unpacked from their planes.
BLIP2_INLINE void q4k_scales_avx2(const blip2_panel_q4k *p, int8_t *scales, int8_t *mins) {
    __m256i low = _mm256_loadu_si256((const __m256i *)p->scales_low), mlow = _mm256_loadu_si256((const __m256i *)p->mins_low);
    __m256i high = _mm256_loadu_si256((const __m256i *)p->high);
    _mm256_storeu_si256((__m256i *)scales, six_bits_avx2(low, high, 0, 0));
    _mm256_storeu_si256((__m256i *)(scales + 32), six_bits_avx2(low, high, 4, 2));
    _mm256_storeu_si256((__m256i *)mins, six_bits_avx2(mlow, high, 0, 4));
    _mm256_storeu_si256((__m256i *)(mins + 32), six_bits_avx2(mlow, high, 4, 6));
}

// The 32-input sums of chunks c, c + 1 (from the activation's 16-input sums) as a 16-bit pair.
BLIP2_INLINE int32_t q4k_sum_pair(const int16_t *s) {
    return (int32_t)(uint16_t)(s[0] + s[1]) | (int32_t)((uint32_t)(uint16_t)(s[2] + s[3]) << 16);
}

// The rows' minimum pairs [m_2k(r), m_2k+1(r)] of a q4k super-block in 16 bits, k = 0..3 (the vpmaddwd operands
// of q4k_minimum_avx2), unpacked once per super-block for every token.
BLIP2_INLINE void q4k_minimum_pairs_avx2(const int8_t *mins, __m256i *pairs) {
    BLIP2_UNROLL for (int k = 0; k < 4; k++) pairs[k] = scale_pairs_avx2(mins + 16 * k, mins + 16 * k + 8, false);
}

// One token's minimum term per row, sum_j m_j (32-input sum j of the activation): one vpmaddwd per two
// sub-blocks against the pair of 32-input sums (at most 32 x 127: 16 bits), which one vphaddw of the 16-input
// sums gives for all four pairs. All four run, branch-free (a loop to the super-block's length cost a fifth
// of the VNNI tile): past a short super-block's end the activation's sums are 0 (its last block is zero-padded).
BLIP2_INLINE __m256i q4k_minimum_avx2(const __m256i *pairs, const int16_t *sums) {
    int32_t sum_pairs[4];
    _mm_storeu_si128((__m128i *)sum_pairs, _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)sums), _mm_loadu_si128((const __m128i *)(sums + 8))));
    __m256i minimum = _mm256_madd_epi16(pairs[0], _mm256_set1_epi32(sum_pairs[0]));
    BLIP2_UNROLL for (int k = 1; k < 4; k++) minimum = _mm256_add_epi32(minimum, _mm256_madd_epi16(pairs[k], _mm256_set1_epi32(sum_pairs[k])));
    return minimum;
}

// The 128 signed sub-scales of a q3k or q6k super-block (q6k stores them as bytes; q3k's 6-bit planes are
// unpacked into `space`).
BLIP2_INLINE const int8_t *q36k_scales_avx2(const char *block, bool six, int8_t *space) {
    if (six) return ((const blip2_panel_q6k *)block)->scales;
    const blip2_panel_q3k *p = (const blip2_panel_q3k *)block;
    __m256i low0 = _mm256_loadu_si256((const __m256i *)p->scales_low), low1 = _mm256_loadu_si256((const __m256i *)(p->scales_low + 32));
    __m256i high = _mm256_loadu_si256((const __m256i *)p->scales_high), bias = _mm256_set1_epi8(32);
    _mm256_storeu_si256((__m256i *)space, _mm256_sub_epi8(six_bits_avx2(low0, high, 0, 0), bias));
    _mm256_storeu_si256((__m256i *)(space + 32), _mm256_sub_epi8(six_bits_avx2(low1, high, 0, 2), bias));
    _mm256_storeu_si256((__m256i *)(space + 64), _mm256_sub_epi8(six_bits_avx2(low0, high, 4, 4), bias));
    _mm256_storeu_si256((__m256i *)(space + 96), _mm256_sub_epi8(six_bits_avx2(low1, high, 4, 6), bias));
    return space;
}

// q3k's bit plane (byte 64 + v of a chunk: bit g the top bit of group g) for sub-block h: its 4 bits as a
// nibble per byte, then group k's bit at bit 2 by a table lookup (one vpshufb per group, where a shift and a
// mask of the plane took two).
static const uint8_t q3k_top_bit_tables[4][16] = {
    {0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4},
    {0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4},
    {0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4},
    {0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4},
};

BLIP2_INLINE __m256i q3k_top_nibbles_avx2(const uint8_t *chunk, int h) {
    const __m256i top = _mm256_loadu_si256((const __m256i *)(chunk + 64));
    return _mm256_and_si256(h ? _mm256_srli_epi16(top, 4) : top, _mm256_set1_epi8(0x0f));
}

BLIP2_INLINE __m256i q3k_top_bit_avx2(__m256i nibbles, int k) {
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q3k_top_bit_tables[k])), nibbles);
}

// The unsigned levels of sub-block h (0, 1) of a q3k or q6k chunk: its 4 groups of 8 rows x 4 inputs.
BLIP2_INLINE void q36k_levels_avx2(const uint8_t *chunk, int h, bool six, __m256i *g) {
    if (six) {
        __m256i low0 = _mm256_loadu_si256((const __m256i *)(chunk + 64 * h));
        __m256i low1 = _mm256_loadu_si256((const __m256i *)(chunk + 64 * h + 32));
        __m256i high = _mm256_loadu_si256((const __m256i *)(chunk + 128 + 32 * h));
        g[0] = six_bits_avx2(low0, high, 0, 0);
        g[1] = six_bits_avx2(low0, high, 4, 2);
        g[2] = six_bits_avx2(low1, high, 0, 4);
        g[3] = six_bits_avx2(low1, high, 4, 6);
        return;
    }
    const __m256i crumb = _mm256_set1_epi8(0x03), bit = _mm256_set1_epi8(0x04);
    __m256i low = _mm256_loadu_si256((const __m256i *)(chunk + 32 * h));
    __m256i top = _mm256_loadu_si256((const __m256i *)(chunk + 64));
    BLIP2_UNROLL for (int k = 0; k < 4; k++) g[k] = _mm256_or_si256(bits_at_avx2(low, 2 * k, 0, crumb), bits_at_avx2(top, 4 * h + k, 2, bit));
}

// MARK: Many-token super-block tiles (one panel x T tokens), written once for both instruction sets: `sum` holds
// a super-block's integer sums for one token (the 8 rows of a __m256i) and `zero` makes one; q4k_chunk(dot, T, qs, x, s, c, scales) adds chunk c's products to every
// token's sums, q36k_sub(dot, T, chunk, h, six, x, s, c, scales) those of sub-block 2c + h; `rows` turns a sum
// into the 8 rows' sums in order; `pair_dot` accumulates a 16-bit pair product (the q4k minimums and the
// q3k/q6k value offsets against the activation's 16-input sums).
#define BLIP2_KQ4_MM(q4k_name, sum, zero, q4k_chunk, rows)                             \
BLIP2_INLINE void q4k_name(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {        \
    const blip2_block_q8k *x[4];                                                                                     \
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];                                  \
    __m256 acc[4];                                                                                                   \
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();                                           \
    const char *block = (const char *)wv[0];                                                                         \
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {                                                              \
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;                                      \
        const blip2_panel_q4k *p = (const blip2_panel_q4k *)block;                                                   \
        int8_t scales[64], mins[64];                                                                                 \
        q4k_scales_avx2(p, scales, mins);                                                                            \
        sum dot[4];                                                                                                  \
        __m256i minimum[4];                                                                                          \
        BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = zero();                                                    \
        for (size_t c = 0; c < chunks; c++) q4k_chunk(dot, T, p->qs + 128 * c, x, s, c, scales + 8 * c);             \
        __m256i pairs[4];                                                                                            \
        q4k_minimum_pairs_avx2(mins, pairs);                                                                         \
        BLIP2_UNROLL for (int t = 0; t < T; t++) minimum[t] = q4k_minimum_avx2(pairs, x[t][s].sums);                 \
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));                                    \
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->dmin));                              \
        BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                                   \
            const __m256 da = _mm256_set1_ps(x[t][s].d);                                                             \
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(rows(dot[t])), _mm256_mul_ps(d, da), acc[t]);                \
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(minimum[t]), _mm256_mul_ps(dmin, da), acc[t]);              \
        }                                                                                                            \
        block += offsetof(blip2_panel_q4k, qs) + count * 4;                                                          \
    }                                                                                                                \
    store_panel_avx2(acc, out, T);                                                                                   \
}
#define BLIP2_KQ36_MM(q36k_name, sum, zero, q36k_sub, chunk3, rows, pair_dot)                                        \
BLIP2_INLINE void q36k_name(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool six) {\
    const blip2_block_q8k *x[8];                                                                                     \
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];                                  \
    const size_t header = six ? offsetof(blip2_panel_q6k, qs) : offsetof(blip2_panel_q3k, qs), bits = six ? 6 : 3;   \
    __m256 acc[8];                                                                                                   \
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();                                           \
    const char *block = (const char *)wv[0];                                                                         \
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {                                                              \
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;                                      \
        int8_t stack_scales[128];                                                                                    \
        const int8_t *scales = q36k_scales_avx2(block, six, stack_scales);                                           \
        const uint8_t *qs = (const uint8_t *)block + header;                                                         \
        sum dot[8];                                                                                                  \
        __m256i offset[8];                                                                                           \
        BLIP2_UNROLL for (int t = 0; t < T; t++) { dot[t] = zero(); offset[t] = _mm256_setzero_si256(); }            \
        for (size_t c = 0; c < chunks; c++) {                                                                        \
            const uint8_t *chunk = qs + c * 32 * bits;                                                               \
            if (!six) {                                                                                              \
                BLIP2_UNROLL for (int t = 0; t < T; t++)                                                             \
                    dot[t] = chunk3(dot[t], chunk, x[t][s].qs + 32 * c, scales + 16 * c, sum_pair_avx2(x[t][s].sums + 2 * c));\
                continue;                                                                                            \
            }                                                                                                        \
            BLIP2_UNROLL for (int h = 0; h < 2; h++) q36k_sub(dot, T, chunk, h, six, x, s, c, scales + 8 * (2 * c + h));\
            const __m256i pairs = scale_pairs_avx2(scales + 16 * c, scales + 16 * c + 8, true);                      \
            BLIP2_UNROLL for (int t = 0; t < T; t++) offset[t] = pair_dot(offset[t], pairs, sum_pair_avx2(x[t][s].sums + 2 * c));\
        }                                                                                                            \
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));                                   \
        BLIP2_UNROLL for (int t = 0; t < T; t++) {                                                                   \
            __m256i total = _mm256_sub_epi32(rows(dot[t]), _mm256_slli_epi32(offset[t], six ? 5 : 2));               \
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, _mm256_set1_ps(x[t][s].d)), acc[t]);\
        }                                                                                                            \
        block += header + count * bits;                                                                              \
    }                                                                                                                \
    store_panel_avx2(acc, out, T);                                                                                   \
}

// MARK: One-token super-block tiles: P panels per pass. Decode does the many-token tile's weight work for a
// single token, and on two cores that work, not the memory reads, set its pace (docs/KERNELS.md). Here a
// group (8 rows x 4 inputs) is used as stored and meets its 4 activation bytes through one vpbroadcastd from
// memory, with no shuffles; P panels per pass share the broadcasts and the activation's sums, and give P
// independent chains. Written once for both instruction sets: `chunk` is q4k's scaled sum of one chunk
// (times `unit`, undone with d), `sub` q3k's/q6k's of one sub-block, `pair_dot` a 16-bit pair product
// accumulated (the minimums and offsets against the activation's sums).
// The prefetches cover a whole super-block whatever its length (a constant count, so they unroll: as a
// loop they cost a tenth of the tile).
// Panels per pass: one. From L2 (the Xeon, docs/KERNELS.md) 4 ran fastest, but streamed from memory, as decode
// reads them, 4 panels are 4 streams a super-block apart each and ran at 0.6x one panel's rate on Zen 4 (the
// whole decode step 1.6x slower); the form for P panels stays for machines where that measures otherwise.
#define BLIP2_MV_PANELS 1
#define BLIP2_KQ_MV(q4k_name, q36k_name, chunk, sub, chunk3, pair_dot, unit)                                              \
BLIP2_INLINE void q4k_name(const void *const *wv, const void *const *xv, size_t n, float *out, const int P) {      \
    const blip2_block_q8k *x = (const blip2_block_q8k *)xv[0];                                                    \
    const char *block[4];                                                                                        \
    __m256 acc[4];                                                                                               \
    BLIP2_UNROLL for (int p = 0; p < P; p++) { block[p] = (const char *)wv[p]; acc[p] = _mm256_setzero_ps(); }   \
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {                                                          \
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;                                  \
        int8_t scales[4][64], mins[4][64];                                                                       \
        __m256i dot[4], minimum[4];                                                                              \
        BLIP2_UNROLL for (int p = 0; p < P; p++) {                                                               \
            blip2_prefetch_panel(block[p], sizeof(blip2_panel_q4k));                                             \
            q4k_scales_avx2((const blip2_panel_q4k *)block[p], scales[p], mins[p]);                              \
            dot[p] = _mm256_setzero_si256();                                                                     \
            minimum[p] = _mm256_setzero_si256();                                                                 \
        }                                                                                                        \
        for (size_t c = 0; c < chunks; c++) {                                                                    \
            BLIP2_UNROLL for (int p = 0; p < P; p++)                                                             \
                dot[p] = _mm256_add_epi32(dot[p], chunk(((const blip2_panel_q4k *)block[p])->qs + 128 * c, x[s].qs + 32 * c, scales[p] + 8 * c)); \
        }                                                                                                        \
        for (size_t c = 0; c < chunks; c += 2) {                                                                 \
            const __m256i sums = _mm256_set1_epi32(q4k_sum_pair(x[s].sums + 2 * c));                             \
            BLIP2_UNROLL for (int p = 0; p < P; p++)                                                             \
                minimum[p] = pair_dot(minimum[p], scale_pairs_avx2(mins[p] + 8 * c, mins[p] + 8 * c + 8, false), sums); \
        }                                                                                                        \
        const __m256 da = _mm256_set1_ps(x[s].d), scaled = _mm256_set1_ps(x[s].d * (unit));                      \
        BLIP2_UNROLL for (int p = 0; p < P; p++) {                                                               \
            const blip2_panel_q4k *panel = (const blip2_panel_q4k *)block[p];                                    \
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)panel->d));                        \
            const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)panel->dmin));                  \
            acc[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[p]), _mm256_mul_ps(d, scaled), acc[p]);              \
            acc[p] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(minimum[p]), _mm256_mul_ps(dmin, da), acc[p]);          \
            block[p] += offsetof(blip2_panel_q4k, qs) + count * 4;                                               \
        }                                                                                                        \
    }                                                                                                            \
    BLIP2_UNROLL for (int p = 0; p < P; p++) store_panel_avx2(&acc[p], out + 8 * p, 1);                          \
}                                                                                                                \
BLIP2_INLINE void q36k_name(const void *const *wv, const void *const *xv, size_t n, float *out, const int P, const bool six) { \
    const blip2_block_q8k *x = (const blip2_block_q8k *)xv[0];                                                    \
    const size_t header = six ? offsetof(blip2_panel_q6k, qs) : offsetof(blip2_panel_q3k, qs), bits = six ? 6 : 3; \
    const char *block[4];                                                                                        \
    __m256 acc[4];                                                                                               \
    BLIP2_UNROLL for (int p = 0; p < P; p++) { block[p] = (const char *)wv[p]; acc[p] = _mm256_setzero_ps(); }   \
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {                                                          \
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;                                  \
        int8_t stack_scales[4][128];                                                                             \
        const int8_t *scales[4];                                                                                 \
        __m256i dot[4], offset[4];                                                                               \
        BLIP2_UNROLL for (int p = 0; p < P; p++) {                                                               \
            blip2_prefetch_panel(block[p], header + BLIP2_SUPERBLOCK * bits);                                    \
            scales[p] = q36k_scales_avx2(block[p], six, stack_scales[p]);                                        \
            dot[p] = _mm256_setzero_si256();                                                                     \
            offset[p] = _mm256_setzero_si256();                                                                  \
        }                                                                                                        \
        for (size_t c = 0; c < chunks; c++) {                                                                    \
            const __m256i sums = sum_pair_avx2(x[s].sums + 2 * c);                                               \
            if (!six) {                                                                                          \
                BLIP2_UNROLL for (int p = 0; p < P; p++) {                                                       \
                    const uint8_t *qs = (const uint8_t *)block[p] + header + c * 96;                             \
                    dot[p] = chunk3(dot[p], qs, x[s].qs + 32 * c, scales[p] + 16 * c, sums);                      \
                }                                                                                                \
                continue;                                                                                        \
            }                                                                                                    \
            BLIP2_UNROLL for (int h = 0; h < 2; h++) BLIP2_UNROLL for (int p = 0; p < P; p++) {                   \
                const uint8_t *qs = (const uint8_t *)block[p] + header + c * 32 * bits;                           \
                dot[p] = _mm256_add_epi32(dot[p], sub(qs, h, six, x[s].qs + 32 * c + 16 * h, scales[p] + 8 * (2 * c + h))); \
            }                                                                                                    \
            BLIP2_UNROLL for (int p = 0; p < P; p++)                                                             \
                offset[p] = pair_dot(offset[p], scale_pairs_avx2(scales[p] + 16 * c, scales[p] + 16 * c + 8, true), sums); \
        }                                                                                                        \
        const __m256 da = _mm256_set1_ps(x[s].d);                                                                \
        BLIP2_UNROLL for (int p = 0; p < P; p++) {                                                               \
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block[p]));                         \
            const __m256i total = six ? _mm256_sub_epi32(dot[p], _mm256_slli_epi32(offset[p], 5)) : dot[p];      \
            acc[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, da), acc[p]);                   \
            block[p] += header + count * bits;                                                                   \
        }                                                                                                        \
    }                                                                                                            \
    BLIP2_UNROLL for (int p = 0; p < P; p++) store_panel_avx2(&acc[p], out + 8 * p, 1);                          \
}

BLIP2_END_TARGET

#endif
