// x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F/BW/VL + VNNI). Each function carries its own target
// attribute (through the pragmas below), so the package builds without -m flags and runs on any x86-64 CPU;
// kernels.c only hands these tables out where blip2_cpu_features() reports the instructions.
//
// BLIP2_X86_EMULATED compiles the same code against portable implementations of the intrinsics (the test
// harness does this to check the AVX-512 path on machines without it).
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

// MARK: - AVX2

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

// MARK: Exponential and softmax (attention: keys x queries x heads of them per layer)

BLIP2_INLINE __m256 exp8_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(BLIP2_EXP_LO)), _mm256_set1_ps(BLIP2_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(BLIP2_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(BLIP2_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(BLIP2_LN2_LO), r);
    __m256 p = _mm256_set1_ps(BLIP2_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(BLIP2_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(BLIP2_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(BLIP2_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(BLIP2_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(BLIP2_EXP_P5));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(scale));
}

static void exp_row_avx2(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8_avx2(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

static void softmax_avx2(float *x, size_t n) {
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

BLIP2_INLINE __m256 gelu8_avx2(__m256 x) {
    __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(0.70710678118654752f));
    __m256 u = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 t = _mm256_fmadd_ps(u, _mm256_set1_ps(BLIP2_GELU_T_SCALE), _mm256_set1_ps(BLIP2_GELU_T_SHIFT));
    __m256 p = _mm256_set1_ps(BLIP2_GELU_P9);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P8));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P7));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P6));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P5));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P4));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P3));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P2));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P1));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(BLIP2_GELU_P0));
    __m256 xx = _mm256_mul_ps(x, x), residual = _mm256_fmsub_ps(x, x, xx);   // x^2 = xx + residual exactly
    __m256 e = _mm256_mul_ps(exp8_avx2(_mm256_mul_ps(xx, _mm256_set1_ps(-0.5f))),
                             exp8_avx2(_mm256_fnmadd_ps(residual, _mm256_set1_ps(0.5f), p)));
    __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(u, e), _mm256_set1_ps(0.5f));
    __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc), half_erfc, x);   // sign of x picks
    return _mm256_mul_ps(x, phi);
}

static void gelu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8_avx2(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = blip2_gelu_ref(x[i]);
}

// Shared by both x86 paths: activation quantization is defined to be bit-identical everywhere.
static void quantize_q8a_avx2(const float *x, blip2_block_q8a *y, size_t n) {
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

// The 32 nibbles of a q4 block as bytes in element order: the 16 bytes go to both halves, the upper
// half shifted by 4 (one variable shift instead of a shift and an insert).
BLIP2_INLINE __m256i unpack_q4_avx2(const blip2_block_q4 *wb) {
    __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)wb->qs));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
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

// q4 x q8a: the nibbles are already unsigned (0..15); the minimum adds m * s per block.
BLIP2_INLINE void tile_q4_avx2(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) {
    const size_t nb = n / BLIP2_QBLOCK;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][4];
    float minimum[4][4];
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {
        acc[r][t] = _mm256_setzero_ps();
        minimum[r][t] = 0;
    }
    for (size_t b = 0; b < nb; b++) {
        __m256i a[4];
        float da[4], sa[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            const blip2_block_q8a *xb = (const blip2_block_q8a *)xv[t] + b;
            a[t] = _mm256_loadu_si256((const __m256i *)xb->qs);
            da[t] = xb->d;
            sa[t] = xb->s;
        }
        BLIP2_UNROLL for (int r = 0; r < R; r++) {
            const blip2_block_q4 *wb = (const blip2_block_q4 *)wv[r] + b;
            __m256i q = unpack_q4_avx2(wb);
            float dw, mw;
            scale_and_minimum_avx2(wb, &dw, &mw);
            BLIP2_UNROLL for (int t = 0; t < T; t++) {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, a[t]), ones);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * da[t]), acc[r][t]);
                minimum[r][t] += mw * sa[t];
            }
        }
    }
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) out[r * T + t] = hsum_avx2(acc[r][t]) + minimum[r][t];
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

// f32/f16 weights: FMA over 8 inputs at a time, a scalar tail for n not a multiple of 8.
#define BLIP2_FLOAT_TILE_AVX2(name, wtype, load, widen)                                                         \
    BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) { \
        const wtype *w[4];                                                                                      \
        const float *x[4];                                                                                      \
        BLIP2_UNROLL for (int r = 0; r < R; r++) w[r] = (const wtype *)wv[r];                                   \
        BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const float *)xv[t];                                   \
        __m256 acc[4][4];                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps(); \
        size_t i = 0;                                                                                           \
        for (; i + 8 <= n; i += 8) {                                                                            \
            __m256 xs[4];                                                                                       \
            BLIP2_UNROLL for (int t = 0; t < T; t++) xs[t] = _mm256_loadu_ps(x[t] + i);                          \
            BLIP2_UNROLL for (int r = 0; r < R; r++) {                                                          \
                __m256 ws = load(w[r] + i);                                                                     \
                BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = _mm256_fmadd_ps(ws, xs[t], acc[r][t]);     \
            }                                                                                                   \
        }                                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {                     \
            float sum = hsum_avx2(acc[r][t]);                                                                   \
            for (size_t j = i; j < n; j++) sum += widen(w[r][j]) * x[t][j];                                      \
            out[r * T + t] = sum;                                                                               \
        }                                                                                                       \
    }

#define BLIP2_SAME(v) (v)
BLIP2_FLOAT_TILE_AVX2(tile_f32_avx2, float, load8_f32, BLIP2_SAME)
BLIP2_FLOAT_TILE_AVX2(tile_f16_avx2, uint16_t, load8_f16, half_avx2)

BLIP2_TILE(q8_mm_avx2, tile_q8_avx2, 2, 4)
BLIP2_TILE(q4_mm_avx2, tile_q4_avx2, 2, 4)
BLIP2_TILE(f32_mv_avx2, tile_f32_avx2, 4, 1)
BLIP2_TILE(f32_mm_avx2, tile_f32_avx2, 2, 4)
BLIP2_TILE(f16_mv_avx2, tile_f16_avx2, 4, 1)
BLIP2_TILE(f16_mm_avx2, tile_f16_avx2, 2, 4)

static float vec_dot_q8_q8a_avx2(const blip2_block_q8 *w, const blip2_block_q8a *x, size_t nb) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_q8_avx2(wp, xp, nb * BLIP2_QBLOCK, &out, 1, 1);
    return out;
}
static float vec_dot_q4_q8a_avx2(const blip2_block_q4 *w, const blip2_block_q8a *x, size_t nb) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_q4_avx2(wp, xp, nb * BLIP2_QBLOCK, &out, 1, 1);
    return out;
}
static float vec_dot_f32_avx2(const float *w, const float *x, size_t n) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_f32_avx2(wp, xp, n, &out, 1, 1);
    return out;
}
static float vec_dot_f16_avx2(const uint16_t *w, const float *x, size_t n) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_f16_avx2(wp, xp, n, &out, 1, 1);
    return out;
}


// MARK: Panels (q8p, q4p): one register holds 4 inputs of 8 rows; each token's 4 activation bytes are
// broadcast against it, so one vpmaddubsw does 32 multiplies for 8 rows at once and the sums stay in int32
// across the block's 8 groups. The f16 scales of the 8 rows are converted with one instruction per block.

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

// MARK: Super-block panels (q4k, q3k, q6k): the q4p/q8p register layout (4 inputs of 8 rows per 32 bytes,
// against 4 broadcast activation bytes), with the sub-block scales applied in the integer domain: each
// sub-block's vpmaddubsw sums (16 bits) go through vpmaddwd against the 8 rows' sub-scales (each row's
// scale in both 16-bit lanes of its pair) instead of against ones. Float work is one convert and FMA per
// super-block and token. The minimums (q4k) and value offsets (q3k: 4, q6k: 32) meet the activation's
// 16-input sums through one more vpmaddwd per two sub-blocks: [row r: s_j, s_j+1] against (sum_j, sum_j+1).

// q8k: bit-identical to the reference (the same clamp, round-to-nearest-even conversion and sums).
static void quantize_q8k_avx2(const float *x, blip2_block_q8k *y, size_t n) {
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

// One token's minimum term per row, sum_j m_j (32-input sum j of the activation): one vpmaddwd per two
// sub-blocks, [row r: m_j, m_j+1] against the two sums (a 32-input sum is at most 32 x 127: 16 bits).
BLIP2_INLINE __m256i q4k_minimum_avx2(const int8_t *mins, const int16_t *sums, size_t chunks) {
    __m256i minimum = _mm256_setzero_si256();
    for (size_t c = 0; c < chunks; c += 2) {
        minimum = _mm256_add_epi32(minimum, _mm256_madd_epi16(scale_pairs_avx2(mins + 8 * c, mins + 8 * c + 8, false), _mm256_set1_epi32(q4k_sum_pair(sums + 2 * c))));
    }
    return minimum;
}

BLIP2_INLINE void tile_q4k_avx2(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const blip2_block_q8k *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const char *block = (const char *)wv[0];
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;
        const blip2_panel_q4k *p = (const blip2_panel_q4k *)block;
        int8_t scales[64], mins[64];
        q4k_scales_avx2(p, scales, mins);
        __m256i dot[4], minimum[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm256_setzero_si256();
        for (size_t c = 0; c < chunks; c++) {
            const __m256i scale = row_scales_avx2(scales + 8 * c, false);
            const uint8_t *qs = p->qs + 128 * c;
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
        BLIP2_UNROLL for (int t = 0; t < T; t++) minimum[t] = q4k_minimum_avx2(mins, x[t][s].sums, chunks);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->dmin));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            const __m256 da = _mm256_set1_ps(x[t][s].d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t]), _mm256_mul_ps(d, da), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(minimum[t]), _mm256_mul_ps(dmin, da), acc[t]);
        }
        block += offsetof(blip2_panel_q4k, qs) + count * 4;
    }
    store_panel_avx2(acc, out, T);
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

// q3k and q6k: signed sub-scales per 16 inputs, values offset by 4 or 32. Levels are unsigned for vpmaddubsw;
// the offset comes off as offset * sum_j s_j sum_j(a), from the activation's 16-input sums.
BLIP2_INLINE void tile_q36k_avx2(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool six) {
    const blip2_block_q8k *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];
    const size_t header = six ? offsetof(blip2_panel_q6k, qs) : offsetof(blip2_panel_q3k, qs), bits = six ? 6 : 3;
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const char *block = (const char *)wv[0];
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;
        int8_t stack_scales[128];
        const int8_t *scales = q36k_scales_avx2(block, six, stack_scales);
        const uint8_t *qs = (const uint8_t *)block + header;
        __m256i dot[4], offset[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) { dot[t] = _mm256_setzero_si256(); offset[t] = _mm256_setzero_si256(); }
        for (size_t c = 0; c < chunks; c++) {
            const uint8_t *chunk = qs + c * 32 * bits;
            BLIP2_UNROLL for (int h = 0; h < 2; h++) {   // sub-block j = 2c + h: groups 4h..4h+3 of the chunk
                const size_t j = 2 * c + h;
                const __m256i scale = row_scales_avx2(scales + 8 * j, true);
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
            const __m256i pairs = scale_pairs_avx2(scales + 16 * c, scales + 16 * c + 8, true);
            BLIP2_UNROLL for (int t = 0; t < T; t++) offset[t] = _mm256_add_epi32(offset[t], _mm256_madd_epi16(pairs, sum_pair_avx2(x[t][s].sums + 2 * c)));
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            __m256i total = _mm256_sub_epi32(dot[t], _mm256_slli_epi32(offset[t], six ? 5 : 2));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, _mm256_set1_ps(x[t][s].d)), acc[t]);
        }
        block += header + count * bits;
    }
    store_panel_avx2(acc, out, T);
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
// Panels per pass: on the Xeon (docs/KERNELS.md) 4 of 1, 2 and 4 ran fastest for every format (AVX2 q6k: a tie).
#define BLIP2_MV_PANELS 4
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
    .quantize_q8a = quantize_q8a_avx2,
    .quantize_q8k = quantize_q8k_avx2,
    .vec_dot_q8_q8a = vec_dot_q8_q8a_avx2,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_avx2,
    .vec_dot_f32 = vec_dot_f32_avx2,
    .vec_dot_f16 = vec_dot_f16_avx2,
    .exp_row = exp_row_avx2,
    .softmax = softmax_avx2,
    .gelu = gelu_avx2,
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
    .int8_peak = int8_peak_avx2,
};

// MARK: - AVX-512 with VNNI

BLIP2_BEGIN_AVX512

// vpdpbusd multiplies unsigned by signed bytes and accumulates in 32 bits with no 16-bit step to saturate.
// q4's nibbles are unsigned already. q8 uses the offset trick: w + 128 (an xor of the sign bit) is unsigned,
// and sum (w + 128) a = sum w a + 128 sum a, so the correction is a "minimum" of -128 d_w per block, the
// same term q4 carries: one shared kernel.
BLIP2_INLINE void tile_q_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T, const bool is_q4) {
    const size_t nb = n / BLIP2_QBLOCK;
    const __m256i offset = _mm256_set1_epi8((char)0x80);
    __m256 acc[8][4];
    float minimum[8][4];
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {
        acc[r][t] = _mm256_setzero_ps();
        minimum[r][t] = 0;
    }
    for (size_t b = 0; b < nb; b++) {
        __m256i a[4];
        float da[4], sa[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            const blip2_block_q8a *xb = (const blip2_block_q8a *)xv[t] + b;
            a[t] = _mm256_loadu_si256((const __m256i *)xb->qs);
            da[t] = xb->d;
            sa[t] = xb->s;
        }
        BLIP2_UNROLL for (int r = 0; r < R; r++) {
            __m256i u;
            float dw, mw;
            if (is_q4) {
                const blip2_block_q4 *wb = (const blip2_block_q4 *)wv[r] + b;
                u = unpack_q4_avx2(wb);
                scale_and_minimum_avx2(wb, &dw, &mw);
            } else {
                const blip2_block_q8 *wb = (const blip2_block_q8 *)wv[r] + b;
                u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb->qs), offset);
                dw = half_avx2(wb->d);
                mw = -128.0f * dw;
            }
            BLIP2_UNROLL for (int t = 0; t < T; t++) {
                __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a[t]);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * da[t]), acc[r][t]);
                minimum[r][t] += mw * sa[t];
            }
        }
    }
    BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) out[r * T + t] = hsum_avx2(acc[r][t]) + minimum[r][t];
}

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

BLIP2_INLINE __m512 load16_f32(const float *p) { return _mm512_loadu_ps(p); }
BLIP2_INLINE __m512 load16_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

#define BLIP2_FLOAT_TILE_AVX512(name, wtype, load, widen)                                                       \
    BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) { \
        const wtype *w[4];                                                                                      \
        const float *x[4];                                                                                      \
        BLIP2_UNROLL for (int r = 0; r < R; r++) w[r] = (const wtype *)wv[r];                                   \
        BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const float *)xv[t];                                   \
        __m512 acc[4][4];                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps(); \
        size_t i = 0;                                                                                           \
        for (; i + 16 <= n; i += 16) {                                                                          \
            __m512 xs[4];                                                                                       \
            BLIP2_UNROLL for (int t = 0; t < T; t++) xs[t] = _mm512_loadu_ps(x[t] + i);                          \
            BLIP2_UNROLL for (int r = 0; r < R; r++) {                                                          \
                __m512 ws = load(w[r] + i);                                                                     \
                BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = _mm512_fmadd_ps(ws, xs[t], acc[r][t]);     \
            }                                                                                                   \
        }                                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {                     \
            float sum = _mm512_reduce_add_ps(acc[r][t]);                                                        \
            for (size_t j = i; j < n; j++) sum += widen(w[r][j]) * x[t][j];                                      \
            out[r * T + t] = sum;                                                                               \
        }                                                                                                       \
    }

BLIP2_FLOAT_TILE_AVX512(tile_f32_avx512, float, load16_f32, BLIP2_SAME)
BLIP2_FLOAT_TILE_AVX512(tile_f16_avx512, uint16_t, load16_f16, half_avx2)

BLIP2_TILE(q8_mm_vnni, tile_q8_vnni, 4, 4)
BLIP2_TILE(q4_mm_vnni, tile_q4_vnni, 4, 4)
BLIP2_TILE(f32_mv_avx512, tile_f32_avx512, 4, 1)
BLIP2_TILE(f32_mm_avx512, tile_f32_avx512, 4, 4)
BLIP2_TILE(f16_mv_avx512, tile_f16_avx512, 4, 1)
BLIP2_TILE(f16_mm_avx512, tile_f16_avx512, 4, 4)

static float vec_dot_q8_q8a_vnni(const blip2_block_q8 *w, const blip2_block_q8a *x, size_t nb) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_q8_vnni(wp, xp, nb * BLIP2_QBLOCK, &out, 1, 1);
    return out;
}
static float vec_dot_q4_q8a_vnni(const blip2_block_q4 *w, const blip2_block_q8a *x, size_t nb) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_q4_vnni(wp, xp, nb * BLIP2_QBLOCK, &out, 1, 1);
    return out;
}
static float vec_dot_f32_avx512(const float *w, const float *x, size_t n) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_f32_avx512(wp, xp, n, &out, 1, 1);
    return out;
}
static float vec_dot_f16_avx512(const uint16_t *w, const float *x, size_t n) {
    const void *wp[1] = {w}, *xp[1] = {x};
    float out;
    tile_f16_avx512(wp, xp, n, &out, 1, 1);
    return out;
}


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

BLIP2_INLINE void store_panel_vnni(const __m256 *acc, float *out, const int T) {
    float lanes[8];
    BLIP2_UNROLL for (int t = 0; t < T; t++) {
        _mm256_storeu_ps(lanes, acc[t]);
        BLIP2_UNROLL for (int r = 0; r < 8; r++) out[r * T + t] = lanes[r];
    }
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
        if (T == 1) blip2_prefetch_panel(p, sizeof(blip2_panel_q8));
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
    store_panel_vnni(acc, out, T);
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
        if (T == 1) blip2_prefetch_panel(p, sizeof(blip2_panel_q4));
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
    store_panel_vnni(acc, out, T);
}

static void q8p_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, 1); }
static void q8p_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q8p_vnni(w, x, n, out, 4); }
static void q4p_mv_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, 1); }
static void q4p_mm_vnni(const void *const *w, const void *const *x, size_t n, float *out) { tile_q4p_vnni(w, x, n, out, 4); }

// MARK: Super-block panels with VNNI. A 512-bit register holds two groups of 8 rows with each row's two
// groups side by side (the 32-bit unpack of the low and high nibbles), so the activation operand is one
// 64-bit broadcast from memory (the two groups' 4 bytes) instead of q4p's permute per token and step. Each
// sub-block sums in 32 bits, is multiplied by the 8 rows' sub-scales (laid out to match) and added up; the
// row pairs fold and return to row order once per super-block.
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

BLIP2_INLINE void tile_q4k_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T) {
    const blip2_block_q8k *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const char *block = (const char *)wv[0];
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;
        const blip2_panel_q4k *p = (const blip2_panel_q4k *)block;
        int8_t scales[64], mins[64];
        q4k_scales_avx2(p, scales, mins);
        __m512i dot[4];
        __m256i minimum[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) dot[t] = _mm512_setzero_si512();
        for (size_t c = 0; c < chunks; c++) {
            const __m512i scale = interleaved_scales_vnni(scales + 8 * c, false);
            const uint8_t *qs = p->qs + 128 * c;
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
        BLIP2_UNROLL for (int t = 0; t < T; t++) minimum[t] = q4k_minimum_avx2(mins, x[t][s].sums, chunks);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->d));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p->dmin));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            const __m256 da = _mm256_set1_ps(x[t][s].d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold_interleaved_vnni(dot[t])), _mm256_mul_ps(d, da), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(minimum[t]), _mm256_mul_ps(dmin, da), acc[t]);
        }
        block += offsetof(blip2_panel_q4k, qs) + count * 4;
    }
    store_panel_vnni(acc, out, T);
}

// q3k and q6k: a sub-block is 4 groups, two registers of two groups each.
BLIP2_INLINE void tile_q36k_vnni(const void *const *wv, const void *const *xv, size_t n, float *out, const int T, const bool six) {
    const blip2_block_q8k *x[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const blip2_block_q8k *)xv[t];
    const size_t header = six ? offsetof(blip2_panel_q6k, qs) : offsetof(blip2_panel_q3k, qs), bits = six ? 6 : 3;
    __m256 acc[4];
    BLIP2_UNROLL for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const char *block = (const char *)wv[0];
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
        const size_t count = blip2_superblock_count(n, s), chunks = count / 32;
        int8_t stack_scales[128];
        const int8_t *scales = q36k_scales_avx2(block, six, stack_scales);
        const uint8_t *qs = (const uint8_t *)block + header;
        __m512i dot[4];
        __m256i offset[4];
        BLIP2_UNROLL for (int t = 0; t < T; t++) { dot[t] = _mm512_setzero_si512(); offset[t] = _mm256_setzero_si256(); }
        for (size_t c = 0; c < chunks; c++) {
            const uint8_t *chunk = qs + c * 32 * bits;
            BLIP2_UNROLL for (int h = 0; h < 2; h++) {
                const __m512i scale = interleaved_scales_vnni(scales + 8 * (2 * c + h), true);
                __m256i g[4];
                q36k_levels_avx2(chunk, h, six, g);
                __m512i u01 = interleave_groups_vnni(g[0], g[1]), u23 = interleave_groups_vnni(g[2], g[3]);
                BLIP2_UNROLL for (int t = 0; t < T; t++) {
                    const int8_t *a = x[t][s].qs + 32 * c + 16 * h;
                    __m512i part = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u01, group_pair_vnni(a));
                    part = _mm512_dpbusd_epi32(part, u23, group_pair_vnni(a + 8));
                    dot[t] = _mm512_add_epi32(dot[t], _mm512_mullo_epi32(part, scale));
                }
            }
            const __m256i pairs = scale_pairs_avx2(scales + 16 * c, scales + 16 * c + 8, true);
            BLIP2_UNROLL for (int t = 0; t < T; t++) offset[t] = _mm256_dpwssd_epi32(offset[t], pairs, sum_pair_avx2(x[t][s].sums + 2 * c));
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
        BLIP2_UNROLL for (int t = 0; t < T; t++) {
            __m256i total = _mm256_sub_epi32(fold_interleaved_vnni(dot[t]), _mm256_slli_epi32(offset[t], six ? 5 : 2));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, _mm256_set1_ps(x[t][s].d)), acc[t]);
        }
        block += header + count * bits;
    }
    store_panel_vnni(acc, out, T);
}

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

BLIP2_INLINE __m256i pair_dot_vnni(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
BLIP2_KQ_MV(tile_q4k_mv_vnni, tile_q36k_mv_vnni, q4k_chunk_vnni, q36k_sub_vnni, q3k_chunk_vnni, pair_dot_vnni, 0.0625f)

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
    .quantize_q8a = quantize_q8a_avx2,
    .quantize_q8k = quantize_q8k_avx2,
    .vec_dot_q8_q8a = vec_dot_q8_q8a_vnni,
    .vec_dot_q4_q8a = vec_dot_q4_q8a_vnni,
    .vec_dot_f32 = vec_dot_f32_avx512,
    .vec_dot_f16 = vec_dot_f16_avx512,
    .exp_row = exp_row_avx2,
    .softmax = softmax_avx2,
    .gelu = gelu_avx2,
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
};

#endif
