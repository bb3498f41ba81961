// Checks every kernel of the named instruction sets against the scalar reference on random data, odd
// sizes and tails included. Built from the package's own kernel sources for targets the host cannot run
// natively (AArch64 under qemu-user; AVX-512 through portable intrinsics) by Tools/test.sh.
//
//   kernel_harness [--emulated] ISA...    e.g. `kernel_harness neon dotprod`
//
// Each ISA must be compiled in and (unless --emulated) reported by the CPU: a missing one is a failure,
// never a skip. Prints one line per failure and ends with "<label>: N passed, M failed"; exits 1 on any
// failure.
#include "blip2_kernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Two float sums of the same n terms in different orders differ by at most 2(n-1)u sum|terms|
// (u = 2^-24, the unit roundoff); the extra 16 terms cover the per-block scale products and lane folds.
#define UNIT_ROUNDOFF 5.9604645e-8
static double sum_tolerance(size_t terms, double magnitude) { return 2.0 * (double)(terms + 16) * UNIT_ROUNDOFF * magnitude + 1e-30; }

static unsigned passed, failed;

static void check(int ok, const char *isa, const char *what, const char *detail) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s %s: %s\n", isa, what, detail);
    }
}

// MARK: - Random data

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next_u64() >> 40) * (1.0 / 16777216.0)); }

static void random_floats(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = uniform(-1, 1) * (next_u64() % 17 == 0 ? 30.0f : 1.0f);
}

static void random_q8(blip2_block_q8 *w, size_t blocks) {
    for (size_t b = 0; b < blocks; b++) {
        w[b].d = blip2_f32_to_f16(uniform(0.001f, 0.05f));
        for (int i = 0; i < BLIP2_QBLOCK; i++) w[b].qs[i] = (int8_t)(next_u64() & 0xff);   // -128 included
    }
}

static void random_q4(blip2_block_q4 *w, size_t blocks) {
    for (size_t b = 0; b < blocks; b++) {
        w[b].d = blip2_f32_to_f16(uniform(0.001f, 0.05f));
        w[b].m = blip2_f32_to_f16(uniform(-0.4f, 0.1f));
        for (int i = 0; i < BLIP2_QBLOCK / 2; i++) w[b].qs[i] = (uint8_t)(next_u64() & 0xff);
    }
}

static void random_f16(uint16_t *w, size_t n) {
    for (size_t i = 0; i < n; i++) w[i] = blip2_f32_to_f16(uniform(-0.2f, 0.2f));
}

// MARK: - Magnitudes (sum of |terms| each product adds up)

static double magnitude_q8(const blip2_block_q8 *w, const blip2_block_q8a *x, size_t nb) {
    double m = 0;
    for (size_t b = 0; b < nb; b++) {
        double dd = fabs((double)blip2_f16_to_f32(w[b].d) * x[b].d), terms = 0;
        // the AVX-512 path adds 128 * a to every product and takes it back (offset trick)
        for (int i = 0; i < BLIP2_QBLOCK; i++) terms += (abs(w[b].qs[i]) + 128.0) * abs(x[b].qs[i]);
        m += dd * terms;
    }
    return m;
}

static double magnitude_q4(const blip2_block_q4 *w, const blip2_block_q8a *x, size_t nb) {
    double m = 0;
    for (size_t b = 0; b < nb; b++) {
        double dd = fabs((double)blip2_f16_to_f32(w[b].d) * x[b].d), terms = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) terms += 15.0 * abs(x[b].qs[i]);
        m += dd * terms + fabs((double)blip2_f16_to_f32(w[b].m) * x[b].s);
    }
    return m;
}

static double magnitude_f32(const float *w, const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m += fabs((double)w[i] * x[i]);
    return m;
}

static double magnitude_f16(const uint16_t *w, const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m += fabs((double)blip2_f16_to_f32(w[i]) * x[i]);
    return m;
}

// MARK: - Checks

static void check_quantize(const blip2_kernels *k, const blip2_kernels *ref) {
    static const size_t sizes[] = {32, 64, 96, 992, 2560};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], nb = n / BLIP2_QBLOCK;
        float *x = malloc(n * sizeof *x);
        blip2_block_q8a *a = malloc(nb * sizeof *a), *b = malloc(nb * sizeof *b);
        random_floats(x, n);
        if (n == 64) {
            for (size_t i = 0; i < 32; i++) x[i] = 0;                        // an all-zero block
            for (size_t i = 32; i < 64; i++) x[i] = (float)(i - 48) + 0.5f;  // exact .5 ties: nearest even
            x[33] = 127;
        }
        k->quantize_q8a(x, a, n);
        ref->quantize_q8a(x, b, n);
        char detail[128];
        snprintf(detail, sizeof detail, "n=%zu: blocks differ from the reference (must be bit-identical)", n);
        check(memcmp(a, b, nb * sizeof *a) == 0, k->name, "quantize_q8a", detail);
        free(x); free(a); free(b);
    }
}

// q8k: widths with short last blocks (any multiple of 32); one block all zero, one with exact .5 ties and the
// clamp reached, one with values past +-127 after scaling would round (the largest magnitude on both signs).
static void check_quantize_q8k(const blip2_kernels *k, const blip2_kernels *ref) {
    static const size_t sizes[] = {32, 64, 96, 256, 288, 544, 992, 1408, 2560};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], nb = (n + BLIP2_SUPERBLOCK - 1) / BLIP2_SUPERBLOCK;
        size_t bytes = blip2_activation_row_bytes(BLIP2_ACTIVATION_Q8K, n);
        float *x = malloc(n * sizeof *x);
        blip2_block_q8k *a = malloc(bytes), *b = malloc(bytes);
        random_floats(x, n);
        if (n >= 544) {
            for (size_t i = 0; i < 256; i++) x[i] = 0;                                        // an all-zero block
            for (size_t i = 256; i < 512; i++) x[i] = (float)((int)(i % 254) - 127) + 0.5f;   // .5 ties: nearest even
            x[300] = 127;
            x[301] = -127;
        }
        memset(a, 0x5a, bytes);   // padding must be written as zeros, not left alone
        memset(b, 0xa5, bytes);
        k->quantize_q8k(x, a, n);
        ref->quantize_q8k(x, b, n);
        char detail[128];
        snprintf(detail, sizeof detail, "n=%zu: %zu blocks differ from the reference (must be bit-identical)", n, nb);
        check(memcmp(a, b, bytes) == 0, k->name, "quantize_q8k", detail);
        free(x); free(a); free(b);
    }
}

// One row times one activation row through the one-token tile for `type`, as the driver calls it on a matrix's
// last row: every row pointer of the tile at the same row, the first output kept.
static double one_row_dot(const blip2_kernels *k, blip2_type type, const void *w, const void *x, size_t n) {
    const blip2_tile *tile = &k->matvec[type];
    const void *wp[64], *xp[64];
    float out[64 * 8];
    for (uint32_t r = 0; r < tile->rows; r++) wp[r] = w;
    for (uint32_t t = 0; t < tile->tokens; t++) xp[t] = x;
    tile->fn(wp, xp, n, out);
    return out[0];
}

static void check_one_row_tiles(const blip2_kernels *k, const blip2_kernels *ref) {
    static const size_t blocks[] = {1, 2, 3, 31};
    for (size_t s = 0; s < sizeof blocks / sizeof blocks[0]; s++) {
        size_t nb = blocks[s], n = nb * BLIP2_QBLOCK;
        float *x = malloc(n * sizeof *x);
        blip2_block_q8a *a = malloc(nb * sizeof *a);
        blip2_block_q8 *w8 = malloc(nb * sizeof *w8);
        blip2_block_q4 *w4 = malloc(nb * sizeof *w4);
        random_floats(x, n);
        ref->quantize_q8a(x, a, n);
        random_q8(w8, nb);
        random_q4(w4, nb);
        char detail[160];
        double got = one_row_dot(k, BLIP2_TYPE_Q8, w8, a, n), want = one_row_dot(ref, BLIP2_TYPE_Q8, w8, a, n);
        double tol = sum_tolerance(n, magnitude_q8(w8, a, nb));
        snprintf(detail, sizeof detail, "%zu blocks: %.9g vs reference %.9g (tolerance %.3g)", nb, got, want, tol);
        check(fabs(got - want) <= tol, k->name, "q8 one row", detail);
        got = one_row_dot(k, BLIP2_TYPE_Q4, w4, a, n); want = one_row_dot(ref, BLIP2_TYPE_Q4, w4, a, n);
        tol = sum_tolerance(n, magnitude_q4(w4, a, nb));
        snprintf(detail, sizeof detail, "%zu blocks: %.9g vs reference %.9g (tolerance %.3g)", nb, got, want, tol);
        check(fabs(got - want) <= tol, k->name, "q4 one row", detail);
        free(x); free(a); free(w8); free(w4);
    }
    static const size_t lengths[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 588};
    for (size_t s = 0; s < sizeof lengths / sizeof lengths[0]; s++) {
        size_t n = lengths[s];
        float *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w);
        uint16_t *h = malloc(n * sizeof *h);
        random_floats(x, n);
        random_floats(w, n);
        random_f16(h, n);
        char detail[160];
        double got = one_row_dot(k, BLIP2_TYPE_F32, w, x, n), want = one_row_dot(ref, BLIP2_TYPE_F32, w, x, n), tol = sum_tolerance(n, magnitude_f32(w, x, n));
        snprintf(detail, sizeof detail, "n=%zu: %.9g vs reference %.9g (tolerance %.3g)", n, got, want, tol);
        check(fabs(got - want) <= tol, k->name, "f32 one row", detail);
        got = one_row_dot(k, BLIP2_TYPE_F16, h, x, n); want = one_row_dot(ref, BLIP2_TYPE_F16, h, x, n); tol = sum_tolerance(n, magnitude_f16(h, x, n));
        snprintf(detail, sizeof detail, "n=%zu: %.9g vs reference %.9g (tolerance %.3g)", n, got, want, tol);
        check(fabs(got - want) <= tol, k->name, "f16 one row", detail);
        free(x); free(w); free(h);
    }
}

// e^x within 2 ulp of the exact value over the whole clamped range (dense sweep plus the ends), and
// 0 <= e^x <= the smallest normal below it (where expf is subnormal).
static void check_exp(const blip2_kernels *k) {
    const size_t n = 400003;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = -87.0f + 175.0f * (float)i / (float)(n - 1);
    x[0] = -87.3f; x[1] = 0; x[2] = -0.0f; x[3] = 88.0f; x[4] = 1e-8f; x[5] = -1e-8f; x[6] = 0.6931472f;
    k->exp_row(x, y, n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double exact = exp((double)x[i]);
        double ulp = ldexp(1.0, ilogb(exact) - 23);
        double error = fabs((double)y[i] - exact) / ulp;
        if (!(error <= worst)) worst = error;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "worst error %.2f ulp over [-87.3, 88] (limit 2)", worst);
    check(worst <= 2, k->name, "exp_row", detail);
    if (getenv("BLIP2_HARNESS_VERBOSE")) printf("%s exp_row: %s\n", k->name, detail);
    float tiny[9] = {-87.5f, -90, -100, -103, -200, -1000, -1e30f, -87.34f, -88};
    float out[9];
    k->exp_row(tiny, out, 9);
    int ok = 1;
    for (int i = 0; i < 9; i++) ok &= out[i] >= 0 && out[i] <= 1.2e-38f;
    check(ok, k->name, "exp_row", "inputs below -87.3 give 0 or at most the smallest normal");
    free(x); free(y);
}

// GELU against the exact value (f64 erfc): SIMD paths within 8 ulp everywhere (floor 1e-37 where the
// value underflows); the reference (libm erff in 1 + erf) within 1 ulp plus |x| 2^-24 from its cancellation
// for negative x.
static void check_gelu(const blip2_kernels *k) {
    const size_t n = 200003;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = -16.0f + 32.0f * (float)i / (float)(n - 1);
    x[0] = 0; x[1] = -0.0f; x[2] = 1e-20f; x[3] = -1e-20f; x[4] = 100; x[5] = -100; x[6] = 1e-3f;
    memcpy(y, x, n * sizeof *x);
    k->gelu(y, n);
    double worst = 0;
    size_t bad = 0;
    int reference = k->isa == BLIP2_ISA_REF;
    for (size_t i = 0; i < n; i++) {
        double exact = 0.5 * (double)x[i] * erfc(-(double)x[i] / sqrt(2.0));
        double ulp = exact == 0 ? 1.4e-45 : ldexp(1.0, ilogb(exact) - 23);
        double error = fabs((double)y[i] - exact);
        double tol = reference ? ulp + fabs(x[i]) * UNIT_ROUNDOFF : 8 * ulp;
        if (!(error <= tol + 1e-37)) bad++;
        if (!reference && fabs(exact) > 1e-37 && error / ulp > worst) worst = error / ulp;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "%zu of %zu values off (worst %.2f ulp)", bad, n, worst);
    check(bad == 0, k->name, "gelu", detail);
    if (getenv("BLIP2_HARNESS_VERBOSE")) printf("%s gelu: %s\n", k->name, detail);
    free(x); free(y);
}

// A wider table that repeats a narrower one's element-wise functions operation for operation (AVX-512's 16
// lanes after AVX2's 8) must give its bits, tails included.
static void check_same_bits(const blip2_kernels *k, const blip2_kernels *narrower) {
    const size_t n = 100003;
    float *x = malloc(n * sizeof *x), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) x[i] = uniform(-16, 16);
    k->exp_row(x, a, n);
    narrower->exp_row(x, b, n);
    check(memcmp(a, b, n * sizeof *a) == 0, k->name, "exp_row", "differs from the narrower path's bits");
    memcpy(a, x, n * sizeof *x);
    memcpy(b, x, n * sizeof *x);
    k->gelu(a, n);
    narrower->gelu(b, n);
    check(memcmp(a, b, n * sizeof *a) == 0, k->name, "gelu", "differs from the narrower path's bits");
    free(x); free(a); free(b);
}

static void check_softmax(const blip2_kernels *k, const blip2_kernels *ref) {
    static const size_t lengths[] = {1, 2, 3, 7, 8, 9, 31, 33, 257, 512};
    for (size_t s = 0; s < sizeof lengths / sizeof lengths[0]; s++) {
        size_t n = lengths[s];
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        for (size_t i = 0; i < n; i++) a[i] = b[i] = uniform(-12, 12);
        k->softmax(a, n);
        ref->softmax(b, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            // exp within 2 ulp, the sum's order (2(n+16)u), the division and scaling: relative to the value.
            double tol = (8 + 2.0 * (double)(n + 16)) * UNIT_ROUNDOFF * b[i] + 1e-38;
            if (!(fabs((double)a[i] - b[i]) <= tol)) bad++;
        }
        char detail[128];
        snprintf(detail, sizeof detail, "n=%zu: %zu of %zu values differ from the reference", n, bad, n);
        check(bad == 0, k->name, "softmax", detail);
        free(a); free(b);
    }
}

// The many-token f32 product (attention's scores and sums of values) on every row and column tail of its
// blocks, with strides wider than the rows: natively each output is the reference's chain of fused
// multiply-adds, so the bits agree; the emulated x86 intrinsics round the products apart, so there the sum's
// bound holds. Columns past n and rows past m of the output must stay as they were.
static void check_gemm_f32(const blip2_kernels *k, const blip2_kernels *ref, int emulated) {
    static const size_t ms[] = {1, 2, 5, 6, 7, 8, 9, 13, 17, 33};
    static const size_t ns[] = {1, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 40, 47, 48, 49, 88, 97};
    static const size_t ks[] = {1, 3, 64, 88};
    size_t bad = 0, cases = 0;
    char detail[160] = "";
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        size_t m = ms[mi], n = ns[ni], kk = ks[ki], lda = kk + 3, ldb = n + 5, ldc = n + 7;
        float *a = malloc(m * lda * sizeof *a), *b = malloc((kk * ldb + 64) * sizeof *b);
        float *got = malloc((m + 1) * ldc * sizeof *got), *want = malloc((m + 1) * ldc * sizeof *want);
        random_floats(a, m * lda);
        random_floats(b, kk * ldb + 64);
        for (size_t i = 0; i < (m + 1) * ldc; i++) got[i] = want[i] = 1234.5f;
        float alpha = 0.125f + uniform(0, 1);
        k->gemm_f32(m, n, kk, alpha, a, lda, b, ldb, got, ldc);
        ref->gemm_f32(m, n, kk, alpha, a, lda, b, ldb, want, ldc);
        cases++;
        for (size_t i = 0; i < (m + 1) * ldc; i++) {
            size_t row = i / ldc, col = i % ldc;
            int ok;
            if (row >= m || col >= n) {
                ok = got[i] == 1234.5f;
            } else if (emulated) {
                double magnitude = 0;
                for (size_t p = 0; p < kk; p++) magnitude += fabs((double)a[row * lda + p] * b[p * ldb + col]);
                ok = fabs((double)got[i] - want[i]) <= 2 * sum_tolerance(kk, magnitude * alpha);
            } else {
                ok = memcmp(&got[i], &want[i], sizeof got[i]) == 0;
            }
            if (!ok && bad++ == 0) {
                snprintf(detail, sizeof detail, "m=%zu n=%zu k=%zu: c[%zu][%zu] = %.9g, reference %.9g", m, n, kk, row, col,
                         got[i], want[i]);
            }
        }
        free(a); free(b); free(got); free(want);
    }
    if (bad == 0) snprintf(detail, sizeof detail, "%zu shapes, %s", cases, emulated ? "within the sum's bound" : "bit-identical");
    check(bad == 0, k->name, "gemm_f32", detail);
}

// store_tile: each tile shape the tables use, every count of real rows and tokens, with and without a bias:
// y[t][r] is out[r][t] (+ bias[r]) with the sum's bits (a -0 result stays -0 without a bias), and nothing else
// of y changes. Copies and single adds: the same bits on every path, emulated or not.
static void check_store_tile(const blip2_kernels *k) {
    static const size_t shapes[][2] = {{1, 1}, {4, 1}, {8, 1}, {16, 1}, {32, 1}, {4, 4}, {8, 2}, {8, 3}, {8, 4},
                                       {8, 5}, {8, 6}, {8, 7}, {8, 8}, {1, 8}};
    size_t bad = 0, cases = 0;
    char detail[160] = "";
    float out[BLIP2_STORE_TILE_ROOM], bias[32], y[10 * 40];
    const float sentinel = -7777.25f;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t rows = shapes[s][0], tokens = shapes[s][1];
        random_floats(out, rows * tokens);
        for (size_t i = rows * tokens; i < BLIP2_STORE_TILE_ROOM; i++) out[i] = 4321.5f;
        out[0] = -0.0f;
        random_floats(bias, rows);
        for (size_t nr = 1; nr <= rows; nr++)
        for (size_t nt = 1; nt <= tokens; nt++)
        for (int use_bias = 0; use_bias < 2; use_bias++) {
            size_t ldy = nr + 3;
            for (size_t i = 0; i < (nt + 1) * ldy; i++) y[i] = sentinel;
            k->store_tile(out, rows, tokens, nr, nt, use_bias ? bias : NULL, y, ldy);
            cases++;
            for (size_t i = 0; i < (nt + 1) * ldy; i++) {
                size_t t = i / ldy, r = i % ldy;
                float want = sentinel;
                if (t < nt && r < nr) want = use_bias ? out[r * tokens + t] + bias[r] : out[r * tokens + t];
                if (memcmp(&y[i], &want, sizeof want) != 0 && bad++ == 0) {
                    snprintf(detail, sizeof detail, "%zu x %zu tile, %zu x %zu real, bias %d: y[%zu][%zu] = %.9g, want %.9g",
                             rows, tokens, nr, nt, use_bias, t, r, y[i], want);
                }
            }
        }
    }
    if (bad == 0) snprintf(detail, sizeof detail, "%zu cases, bit-identical", cases);
    check(bad == 0, k->name, "store_tile", detail);
}

// The weight types the products take, and how the harness fills them: the row formats with random
// blocks (q8 includes -128, which the quantizer never writes), the panel formats quantized from random
// floats through their traits, the super-block formats either so or with random fields over their whole
// stored range (random_superblocks).
static const uint32_t product_types[] = {BLIP2_TYPE_F32, BLIP2_TYPE_F16, BLIP2_TYPE_Q8, BLIP2_TYPE_Q4, BLIP2_TYPE_Q8P, BLIP2_TYPE_Q4P,
                                         BLIP2_TYPE_Q4K, BLIP2_TYPE_Q3K, BLIP2_TYPE_Q6K};

// How a super-block product's operands are filled: random fields; or every level, sub-scale and minimum
// at the end of its range that makes the integer sums largest (HIGH: top levels against activations of
// +127; LOW: level 0, the most negative sub-scale, activations of -127), the bounds the SIMD paths'
// 16-bit partial sums are sized for.
enum { FILL_FITTED, FILL_RANDOM, FILL_HIGH, FILL_LOW };

static int is_superblock_type(uint32_t type) { return blip2_traits(type)->activation == BLIP2_ACTIVATION_Q8K; }

// Bits per value and the stored sub-scale range of a super-block type (blip2_kernels.h, "Super-block formats").
static void superblock_ranges(uint32_t type, int *bits, int *scale_lo, int *scale_hi) {
    switch (type) {
    case BLIP2_TYPE_Q4K: *bits = 4; *scale_lo = 0; *scale_hi = 63; break;
    case BLIP2_TYPE_Q3K: *bits = 3; *scale_lo = -32; *scale_hi = 31; break;
    default: *bits = 6; *scale_lo = -128; *scale_hi = 127; break;
    }
}

// Every row (padding rows too) of every super-block of `groups` panel groups, written through
// blip2_superblock_pack; sub-blocks past a short super-block's end keep scale and minimum 0, as the fits write.
static void random_superblocks(uint32_t type, char *w, size_t groups, size_t group_bytes, size_t n, int fill) {
    const blip2_type_traits *t = blip2_traits(type);
    int bits, scale_lo, scale_hi;
    superblock_ranges(type, &bits, &scale_lo, &scale_hi);
    const int sub = type == BLIP2_TYPE_Q4K ? 32 : 16, top = (1 << bits) - 1;
    memset(w, 0, groups * group_bytes);
    for (size_t g = 0; g < groups; g++) {
        for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
            size_t count = n - s * BLIP2_SUPERBLOCK < BLIP2_SUPERBLOCK ? n - s * BLIP2_SUPERBLOCK : BLIP2_SUPERBLOCK;
            char *block = w + g * group_bytes + s * t->block_bytes;
            for (size_t r = 0; r < BLIP2_PANEL_ROWS; r++) {
                blip2_superblock_row row;
                memset(&row, 0, sizeof row);
                row.d = uniform(0.001f, 0.05f);
                row.dmin = type == BLIP2_TYPE_Q4K ? uniform(0.001f, 0.05f) : 0;
                for (size_t j = 0; j * (size_t)sub < count; j++) {
                    switch (fill) {
                    case FILL_HIGH: row.scales[j] = (int16_t)scale_hi; row.mins[j] = 0; break;
                    case FILL_LOW: row.scales[j] = (int16_t)scale_lo; row.mins[j] = 63; break;
                    default:
                        row.scales[j] = (int16_t)(scale_lo + (int)(next_u64() % (uint64_t)(scale_hi - scale_lo + 1)));
                        row.mins[j] = (int16_t)(next_u64() % 64);
                        break;
                    }
                    if (type != BLIP2_TYPE_Q4K) row.mins[j] = 0;
                }
                for (size_t i = 0; i < count; i++) {
                    row.q[i] = (uint8_t)(fill == FILL_HIGH ? top : fill == FILL_LOW ? 0 : (int)(next_u64() % (uint64_t)(top + 1)));
                }
                blip2_superblock_pack(type, &row, r, count, block);
            }
        }
    }
}

// Sum of |terms| a super-block product adds up for row r: per input |d sc (q - offset)| |a| and, for q4k,
// |dmin m| |a| (the two float terms are added apart, so their cancellation does not shrink the bound).
__attribute__((noinline)) static double magnitude_superblock(uint32_t type, const void *group, size_t r, const blip2_block_q8k *x, size_t n) {
    const blip2_type_traits *t = blip2_traits(type);
    double m = 0;
    for (size_t s = 0; s * BLIP2_SUPERBLOCK < n; s++) {
        size_t count = n - s * BLIP2_SUPERBLOCK < BLIP2_SUPERBLOCK ? n - s * BLIP2_SUPERBLOCK : BLIP2_SUPERBLOCK;
        blip2_superblock_row row;
        float values[BLIP2_SUPERBLOCK];
        blip2_superblock_unpack(type, (const char *)group + s * t->block_bytes, r, count, &row);
        double dmin = row.dmin;
        row.dmin = 0;
        blip2_superblock_dequantize(type, &row, count, values);
        for (size_t i = 0; i < count; i++) {
            double a = fabs((double)x[s].qs[i] * x[s].d);
            m += (fabs((double)values[i]) + fabs(dmin * row.mins[i / 32])) * a;
        }
    }
    return m;
}

// Sum of |terms| a quantized product adds up for row r: |w| |a| per element, widened by 128 |a| or 128 |w|
// per element where a path offsets one operand (vpdpbusd) and takes the offset back.
__attribute__((noinline)) static double magnitude_quantized(const blip2_type_traits *t, const void *w, size_t r, const blip2_block_q8a *x, size_t n) {
    float *row = malloc(n * sizeof *row);
    t->to_f32(w, r, n, row);
    double m = 0;
    for (size_t b = 0; b < n / BLIP2_QBLOCK; b++) {
        double block = 0, amax = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) {
            double a = fabs((double)x[b].qs[i] * x[b].d);
            block += fabs((double)row[b * BLIP2_QBLOCK + i]) * a;
            if (a > amax) amax = a;
        }
        // w's scale is at most max|w| / 127 per block for q8 (a row's magnitude bounds its offset term)
        double wmax = 0;
        for (int i = 0; i < BLIP2_QBLOCK; i++) {
            double v = fabs((double)row[b * BLIP2_QBLOCK + i]);
            if (v > wmax) wmax = v;
        }
        m += block + 128.0 * 32 * (wmax / 127.0 * 2) * amax + fabs(x[b].s) * 16;
    }
    free(row);
    return m;
}

// Weights of `type` for `rows` x n: super-block fields as `fill` says (fitted: quantized from random floats,
// through `scratch`, rows x n floats), panels quantized from random floats, row formats with random blocks.
static void fill_weights(uint32_t type, char *w, size_t rows, size_t n, int fill, float *scratch) {
    const blip2_type_traits *traits = blip2_traits(type);
    size_t group_bytes = blip2_group_bytes(type, n), groups = (rows + traits->block_rows - 1) / traits->block_rows;
    if (is_superblock_type(type) && fill != FILL_FITTED) {
        random_superblocks(type, w, groups, group_bytes, n, fill);
    } else if (traits->block_rows > 1) {
        random_floats(scratch, rows * n);
        traits->from_f32(scratch, rows, n, w);
    } else {
        for (size_t r = 0; r < rows; r++) {
            void *row = w + r * group_bytes;
            switch (type) {
            case BLIP2_TYPE_F32: random_floats(row, n); break;
            case BLIP2_TYPE_F16: random_f16(row, n); break;
            case BLIP2_TYPE_Q8: random_q8(row, n / BLIP2_QBLOCK); break;
            default: random_q4(row, n / BLIP2_QBLOCK); break;
            }
        }
    }
}

// One product through the driver (every tile shape, padding and the bias) against the reference table.
static void check_gemm(const blip2_kernels *k, const blip2_kernels *ref, uint32_t type, size_t rows, size_t tokens, size_t n, int fill) {
    const blip2_type_traits *traits = blip2_traits(type);
    int quantized = traits->activation != BLIP2_ACTIVATION_F32, superblocks = is_superblock_type(type);
    size_t nb = n / BLIP2_QBLOCK;
    size_t group_bytes = blip2_group_bytes(type, n), groups = (rows + traits->block_rows - 1) / traits->block_rows;
    size_t x_row_bytes = blip2_activation_row_bytes(traits->activation, n);
    size_t ldy = rows + 3;
    char *w = malloc(groups * group_bytes);
    float *xf = malloc(tokens * n * sizeof *xf), *bias = malloc(rows * sizeof *bias), *wf = malloc(rows * n * sizeof *wf);
    char *x = malloc(tokens * x_row_bytes);
    float *got = malloc(tokens * ldy * sizeof *got), *want = malloc(tokens * ldy * sizeof *want);
    random_floats(xf, tokens * n);
    random_floats(bias, rows);
    if (fill == FILL_HIGH || fill == FILL_LOW) {
        for (size_t i = 0; i < tokens * n; i++) xf[i] = fill == FILL_HIGH ? 1.0f : -1.0f;
    }
    fill_weights(type, w, rows, n, fill, wf);
    if (superblocks) {
        for (size_t t = 0; t < tokens; t++) ref->quantize_q8k(xf + t * n, (blip2_block_q8k *)(x + t * x_row_bytes), n);
    } else if (quantized) {
        for (size_t t = 0; t < tokens; t++) ref->quantize_q8a(xf + t * n, (blip2_block_q8a *)(x + t * x_row_bytes), n);
    } else {
        memcpy(x, xf, tokens * n * sizeof *xf);
    }
    const float *b = (rows + tokens) % 2 ? bias : NULL;
    for (size_t i = 0; i < tokens * ldy; i++) got[i] = want[i] = -12345.0f;   // the gaps past `rows` stay untouched
    blip2_gemm(k, type, w, group_bytes, rows, x, x_row_bytes, tokens, n, b, got, ldy);
    blip2_gemm(ref, type, w, group_bytes, rows, x, x_row_bytes, tokens, n, b, want, ldy);
    size_t bad = 0;
    double worst = 0;
    for (size_t t = 0; t < tokens; t++) {
        const void *xt = x + t * x_row_bytes;
        for (size_t r = 0; r < ldy; r++) {
            size_t i = t * ldy + r;
            if (r >= rows) { bad += got[i] != -12345.0f; continue; }
            const void *wr = w + r * group_bytes;
            double magnitude = type == BLIP2_TYPE_F32 ? magnitude_f32(wr, xt, n) : type == BLIP2_TYPE_F16 ? magnitude_f16(wr, xt, n)
                             : type == BLIP2_TYPE_Q8 ? magnitude_q8(wr, xt, nb) : type == BLIP2_TYPE_Q4 ? magnitude_q4(wr, xt, nb)
                             : superblocks ? magnitude_superblock(type, w + r / 8 * group_bytes, r % 8, xt, n)
                             : magnitude_quantized(traits, w, r, xt, n);
            double error = fabs((double)got[i] - want[i]), tol = sum_tolerance(n, magnitude + (b ? fabs(b[r]) : 0));
            if (!(error <= tol)) bad++;
            if (error / tol > worst) worst = error / tol;
        }
    }
    static const char *const fills[] = {"", " random fields", " high extremes", " low extremes"};
    char what[32], detail[192];
    snprintf(what, sizeof what, "gemm %s", traits->name);
    snprintf(detail, sizeof detail, "rows=%zu tokens=%zu n=%zu%s: %zu of %zu outputs off (worst %.2fx the tolerance)",
             rows, tokens, n, superblocks ? fills[fill] : "", bad, tokens * ldy, worst);
    check(bad == 0, k->name, what, detail);
    free(w); free(xf); free(bias); free(wf); free(x); free(got); free(want);
}

static void check_products(const blip2_kernels *k, const blip2_kernels *ref) {
    static const size_t rows[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 31, 67};
    static const size_t blocks[] = {1, 2, 3, 31};
    static const size_t lengths[] = {1, 3, 17, 33, 588};
    // super-block widths: short last super-blocks of 1..4 chunks (ViT-g's 1408 = 5 x 256 + 128) and whole ones
    static const size_t widths[] = {32, 96, 128, 256, 544, 1408, 2560};
    for (size_t ti = 0; ti < sizeof product_types / sizeof product_types[0]; ti++) {
        uint32_t type = product_types[ti];
        int quantized = blip2_traits(type)->activation == BLIP2_ACTIVATION_Q8A, superblocks = is_superblock_type(type);
        char what[32];
        snprintf(what, sizeof what, "tiles %s", blip2_traits(type)->name);
        check(k->matvec[type].fn && k->matmul[type].fn, k->name, what, "the table has no tile for this type");
        if (!k->matvec[type].fn || !k->matmul[type].fn) continue;
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
            for (size_t tokens = 1; tokens <= 9; tokens++) {
                // every row and token count meets a short and a long inner dimension; the rest rotate
                if (superblocks) {
                    // fitted panels (the fit is slow under qemu) for one token, one tile of 4 and a tile plus
                    // a leftover token; random fields everywhere
                    size_t n = widths[(ri + tokens) % (sizeof widths / sizeof widths[0])];
                    check_gemm(k, ref, type, rows[ri], tokens, n, FILL_RANDOM);
                    if (tokens == 1 || tokens == 4 || tokens == 5) check_gemm(k, ref, type, rows[ri], tokens, 288, FILL_FITTED);
                    continue;
                }
                size_t choices = quantized ? 4 : 5;
                size_t pick = (ri + tokens) % choices;
                size_t n = quantized ? blocks[pick] * BLIP2_QBLOCK : lengths[pick];
                check_gemm(k, ref, type, rows[ri], tokens, n, FILL_FITTED);
                check_gemm(k, ref, type, rows[ri], tokens, quantized ? 2 * BLIP2_QBLOCK : 9, FILL_FITTED);
            }
        }
        if (!superblocks) continue;
        // the integer sums at their bounds, through the one-token and the many-token tiles
        static const size_t extreme_tokens[] = {1, 4, 5};
        for (size_t e = 0; e < sizeof extreme_tokens / sizeof extreme_tokens[0]; e++) {
            check_gemm(k, ref, type, 9, extreme_tokens[e], 2560, FILL_HIGH);
            check_gemm(k, ref, type, 9, extreme_tokens[e], 1408, FILL_LOW);
        }
    }
}

// A product split in two parts of the tokens (an image's rows and a prompt's in one prefill) gives every
// output the bits of two calls over the parts: 3-, 4- and 8-token tiles never straddle the split.
static void check_split(const blip2_kernels *k, const blip2_kernels *ref) {
    static const size_t cases[][3] = {{64, 13, 5}, {256, 33, 32}, {64, 9, 1}, {64, 7, 6}, {64, 2, 1}, {2560, 130, 61}, {256, 40, 8}};
    for (size_t ti = 0; ti < sizeof product_types / sizeof product_types[0]; ti++) {
        uint32_t type = product_types[ti];
        const blip2_type_traits *traits = blip2_traits(type);
        if (!k->matvec[type].fn || !k->matmul[type].fn) continue;
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            size_t n = cases[ci][0], tokens = cases[ci][1], split = cases[ci][2], rows = 19, ldy = rows + 2;
            size_t group_bytes = blip2_group_bytes(type, n), groups = (rows + traits->block_rows - 1) / traits->block_rows;
            size_t x_row_bytes = blip2_activation_row_bytes(traits->activation, n);
            char *w = malloc(groups * group_bytes), *x = malloc(tokens * x_row_bytes);
            float *wf = malloc(rows * n * sizeof *wf), *xf = malloc(tokens * n * sizeof *xf);
            float *together = malloc(tokens * ldy * sizeof *together), *apart = malloc(tokens * ldy * sizeof *apart);
            random_floats(xf, tokens * n);
            fill_weights(type, w, rows, n, FILL_RANDOM, wf);
            for (size_t t = 0; t < tokens; t++) {
                if (traits->activation == BLIP2_ACTIVATION_Q8K) ref->quantize_q8k(xf + t * n, (blip2_block_q8k *)(x + t * x_row_bytes), n);
                else if (traits->activation == BLIP2_ACTIVATION_Q8A) ref->quantize_q8a(xf + t * n, (blip2_block_q8a *)(x + t * x_row_bytes), n);
                else memcpy(x + t * x_row_bytes, xf + t * n, n * sizeof *xf);
            }
            for (size_t i = 0; i < tokens * ldy; i++) together[i] = apart[i] = -12345.0f;
            blip2_gemm_split(k, type, w, group_bytes, rows, x, x_row_bytes, tokens, split, n, NULL, together, ldy);
            blip2_gemm(k, type, w, group_bytes, rows, x, x_row_bytes, split, n, NULL, apart, ldy);
            blip2_gemm(k, type, w, group_bytes, rows, x + split * x_row_bytes, x_row_bytes, tokens - split, n, NULL, apart + split * ldy, ldy);
            size_t differing = 0;
            for (size_t i = 0; i < tokens * ldy; i++) differing += memcmp(&together[i], &apart[i], sizeof(float)) != 0;
            char what[32], detail[128];
            snprintf(what, sizeof what, "split %s", traits->name);
            snprintf(detail, sizeof detail, "n=%zu tokens=%zu split=%zu: %zu outputs differ from two calls", n, tokens, split, differing);
            check(differing == 0, k->name, what, detail);
            free(w); free(x); free(wf); free(xf); free(together); free(apart);
        }
    }
}

// The peak loop runs and counts its operations.
static void check_peak(const blip2_kernels *k) {
    check(k->int8_peak && k->int8_peak(1000) > 0, k->name, "int8_peak", "missing, or counts no operations");
}

int main(int argc, char **argv) {
    int emulated = 0;
    const char *label = "kernels";
    int isas = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--emulated") == 0) { emulated = 1; continue; }
        if (strncmp(argv[i], "--label=", 8) == 0) { label = argv[i] + 8; continue; }
        isas++;
        int isa = blip2_isa_from_name(argv[i]);
        const blip2_kernels *k = isa < 0 ? NULL : blip2_kernels_for((blip2_isa)isa);
        if (!k) {
            check(0, argv[i], "availability", "not compiled into this build");
            continue;
        }
        if (!emulated && !blip2_isa_supported((blip2_isa)isa)) {
            check(0, argv[i], "availability", "this CPU does not report it (under qemu: check -cpu)");
            continue;
        }
        const blip2_kernels *ref = blip2_kernels_for(BLIP2_ISA_REF);
        unsigned before = passed + failed;
        check_quantize(k, ref);
        check_quantize_q8k(k, ref);
        check_one_row_tiles(k, ref);
        check_products(k, ref);
        check_split(k, ref);
        check_peak(k);
        check_exp(k);
        check_softmax(k, ref);
        check_gelu(k);
        check_gemm_f32(k, ref, emulated);
        check_store_tile(k);
        if (isa == BLIP2_ISA_AVX512) check_same_bits(k, blip2_kernels_for(BLIP2_ISA_AVX2));
        printf("%s: %u checks\n", k->name, passed + failed - before);
    }
    if (isas == 0) {
        fprintf(stderr, "usage: kernel_harness [--emulated] [--label=NAME] ISA...\n");
        return 2;
    }
    printf("%s: %u passed, %u failed\n", label, passed, failed);
    return failed ? 1 : 0;
}
