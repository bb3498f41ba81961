// Shared by the per-instruction-set kernel files; not part of the public interface.
#pragma once
#include "blip2_kernels.h"
#include <string.h>
#include <math.h>

// Tiles are written once with their row and token counts as parameters; each table entry instantiates a
// fixed size, and full unrolling turns the accumulator arrays into registers.
#if defined(__clang__)
#define BLIP2_UNROLL _Pragma("unroll")
#else
#define BLIP2_UNROLL _Pragma("GCC unroll 16")
#endif
#define BLIP2_INLINE static inline __attribute__((always_inline))

// The most row groups (rows, or panels of 8) and tokens any tile takes (the driver's padding buffers are
// this size; the one-token super-block tiles take up to 4 panels).
#define BLIP2_TILE_MAX 8
_Static_assert(BLIP2_TILE_MAX_TOKENS <= BLIP2_TILE_MAX, "the driver's buffers hold every tile's tokens");
_Static_assert(BLIP2_TILE_MAX * BLIP2_TILE_MAX >= BLIP2_STORE_TILE_ROOM, "the driver's tile buffer is store_tile's room");

/// Declares `name` as a table entry running `body` with fixed `rows` x `tokens` (BLIP2_SHARED_TILE: one that
/// another file's table also uses, declared in that family's header).
#define BLIP2_SHARED_TILE(name, body, rows, tokens) \
    void name(const void *const *w, const void *const *x, size_t n, float *out) { body(w, x, n, out, rows, tokens); }
#define BLIP2_TILE(name, body, rows, tokens) static BLIP2_SHARED_TILE(name, body, rows, tokens)

// One token reads a panel matrix as one linear stream, yet on the AVX2 machine the hardware prefetcher alone
// kept q4p decode below the rate the row tiles reach with their own prefetches (docs/KERNELS.md); so every
// one-token panel tile asks for the block this many bytes ahead (several blocks: far enough to cover the
// memory latency at the rate the tile consumes, near enough to stay in L1). A prefetch never faults past
// the end of the matrix.
#define BLIP2_PANEL_PREFETCH_DISTANCE 2048

BLIP2_INLINE void blip2_prefetch_panel(const void *block, size_t bytes) {
    const char *ahead = (const char *)block + BLIP2_PANEL_PREFETCH_DISTANCE;
    BLIP2_UNROLL for (size_t line = 0; line < bytes; line += 64) __builtin_prefetch(ahead + line, 0, 3);
}

// f32/f16 weights on any vector width: registers of `width` floats (type `vec`), one FMA per register of
// inputs, a scalar tail for n not a multiple of width. zero(), loadx(p), fma(acc, w, x) = acc + w x and
// reduce(v) are the target's; load(p) loads `width` weights as floats and widen(w) one.
#define BLIP2_FLOAT_TILE(name, vec, width, wtype, load, widen, zero, loadx, fma, reduce)                       \
    BLIP2_INLINE void name(const void *const *wv, const void *const *xv, size_t n, float *out, const int R, const int T) { \
        const wtype *w[4];                                                                                      \
        const float *x[4];                                                                                      \
        BLIP2_UNROLL for (int r = 0; r < R; r++) w[r] = (const wtype *)wv[r];                                   \
        BLIP2_UNROLL for (int t = 0; t < T; t++) x[t] = (const float *)xv[t];                                   \
        vec acc[4][4];                                                                                          \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = zero();   \
        size_t i = 0;                                                                                           \
        for (; i + (width) <= n; i += (width)) {                                                                \
            vec xs[4];                                                                                          \
            BLIP2_UNROLL for (int t = 0; t < T; t++) xs[t] = loadx(x[t] + i);                                    \
            BLIP2_UNROLL for (int r = 0; r < R; r++) {                                                          \
                vec ws = load(w[r] + i);                                                                        \
                BLIP2_UNROLL for (int t = 0; t < T; t++) acc[r][t] = fma(acc[r][t], ws, xs[t]);                 \
            }                                                                                                   \
        }                                                                                                       \
        BLIP2_UNROLL for (int r = 0; r < R; r++) BLIP2_UNROLL for (int t = 0; t < T; t++) {                     \
            float sum = reduce(acc[r][t]);                                                                      \
            for (size_t j = i; j < n; j++) sum += widen(w[r][j]) * x[t][j];                                      \
            out[r * T + t] = sum;                                                                               \
        }                                                                                                       \
    }
#define BLIP2_SAME(v) (v)

extern const blip2_kernels blip2_kernels_ref;
#if defined(__x86_64__) || defined(BLIP2_X86_EMULATED)
extern const blip2_kernels blip2_kernels_avx2;
extern const blip2_kernels blip2_kernels_avx512;
#endif
#if defined(__aarch64__)
extern const blip2_kernels blip2_kernels_neon;
extern const blip2_kernels blip2_kernels_dotprod;
#endif

/// Inputs of super-block s of a row of n: 256, or fewer for a row's last one.
BLIP2_INLINE size_t blip2_superblock_count(size_t n, size_t s) {
    return n - s * BLIP2_SUPERBLOCK < BLIP2_SUPERBLOCK ? n - s * BLIP2_SUPERBLOCK : BLIP2_SUPERBLOCK;
}

/// The reference q8k quantizer (kernels_ref.c); tables without a SIMD one use it as it is.
void blip2_quantize_q8k_ref(const float *x, blip2_block_q8k *y, size_t n);

// Scalar pieces every path shares so that activation quantization is bit-identical across paths:
// d = max|x| / 127, inverse 1 / d, values clamped to +-127 and rounded to nearest even.
static inline float blip2_q8a_scale(float amax) { return amax / 127.0f; }
static inline float blip2_q8a_inverse(float d) { return d > 0 ? 1.0f / d : 0.0f; }

// Cephes-style single-precision exponential, shared by the SIMD paths: n = round(x log2 e),
// r = x - n ln 2 (two-part ln 2, so r is exact to a few ulp), e^r by a degree-7 polynomial, then 2^n
// through the exponent bits. Relative error below 2 ulp on [-87.3, 88]; inputs are clamped to that range.
#define BLIP2_EXP_HI 88.0f
#define BLIP2_EXP_LO -87.3365447504f
#define BLIP2_LOG2E 1.44269504088896341f
#define BLIP2_LN2_HI 0.693359375f
#define BLIP2_LN2_LO -2.12194440e-4f
#define BLIP2_EXP_P0 1.9875691500e-4f
#define BLIP2_EXP_P1 1.3981999507e-3f
#define BLIP2_EXP_P2 8.3334519073e-3f
#define BLIP2_EXP_P3 4.1665795894e-2f
#define BLIP2_EXP_P4 1.6666665459e-1f
#define BLIP2_EXP_P5 5.0000001201e-1f

// GELU through erfc, so that negative inputs keep their relative accuracy: with z = |x| / sqrt 2 and
// u = 1 / (1 + z / 2), erfc(z) = u exp(-z^2 + P(u)), where P is a degree-9 least-squares fit (Chebyshev
// nodes, u in [1/6, 1], i.e. z in [0, 10]) of log(erfc(z) / u) + z^2, written in t = 2.4 u - 1.4
// (docs/KERNELS.md has the fit). z^2 = x^2 / 2 is kept exact (x^2 split by an FMA) and e^(-x^2/2) taken on
// its own: rounding x / sqrt 2 first would cost ~100 ulp in the far negative tail.
// Phi(x) = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 otherwise; gelu = x Phi(x).
#define BLIP2_GELU_T_SCALE 2.4f
#define BLIP2_GELU_T_SHIFT -1.4f
#define BLIP2_GELU_P0 -0.5585953983680997f
#define BLIP2_GELU_P1 0.5703071029766184f
#define BLIP2_GELU_P2 0.01574730608082492f
#define BLIP2_GELU_P3 -0.029470336858019447f
#define BLIP2_GELU_P4 -0.001063407905037902f
#define BLIP2_GELU_P5 0.003707476740350102f
#define BLIP2_GELU_P6 -0.00022596416188561545f
#define BLIP2_GELU_P7 -0.0005343206104750811f
#define BLIP2_GELU_P8 7.272879018112664e-05f
#define BLIP2_GELU_P9 5.4860246829818323e-05f

static inline float blip2_gelu_ref(float x) { return 0.5f * x * (1 + erff(x * 0.70710678118654752f)); }

// A tile's results out of its [row][token] buffer (blip2_kernels.store_tile): the reference, and what the
// vector paths do for the shapes they have no transpose for.
typedef void (*blip2_store_fn)(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                               float *y, size_t ldy);
void blip2_store_tile_ref(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                          float *y, size_t ldy);

// The f32 many-token product (blip2_kernels.gemm_f32) for columns [j0, n), one output row at a time: each
// output a chain of fmaf over p in order, then times alpha. The reference, and the column tails of vector
// paths without masked loads.
static inline void blip2_gemm_f32_columns(size_t m, size_t j0, size_t n, size_t k, float alpha, const float *a, size_t lda,
                                          const float *b, size_t ldb, float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++) {
        float *row = c + i * ldc;
        for (size_t j = j0; j < n; j++) row[j] = 0;
        for (size_t p = 0; p < k; p++) {
            float x = a[i * lda + p];
            const float *bp = b + p * ldb;
            for (size_t j = j0; j < n; j++) row[j] = fmaf(x, bp[j], row[j]);
        }
        for (size_t j = j0; j < n; j++) row[j] *= alpha;
    }
}
