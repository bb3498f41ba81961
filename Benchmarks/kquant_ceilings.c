// Register-only loops that bound what the super-block (q4k) panel products can reach on this core
// (docs/KERNELS.md, "The x86 super-block tiles"), in the style of avx2_ceilings.c: independent chains of one
// tile's per-chunk instruction sequence on operands kept opaque to the compiler, one thread. A chunk is 32
// inputs of 8 rows against one token: 256 multiply-adds. Every product has its own operands (a weight
// register per group or step, an activation register per chain), so nothing is computed twice.
//
//   cc -O2 Benchmarks/kquant_ceilings.c -o /tmp/kquant_ceilings && /tmp/kquant_ceilings
//
// q4p AVX2   q4p's chunk: 8 x vpmaddubsw + vpaddw, vpmaddwd by ones, convert, 2 FMAs (scale, minimum)
// q4k AVX2   q4k's chunk: 8 x vpmaddubsw + vpaddw, vpmaddwd by the sub-scales, vpaddd
// q4p VNNI   4 x (vpermd + vpdpbusd zmm), fold, convert, 2 FMAs
// q4k VNNI   4 x vpdpbusd zmm (the activation pair broadcast from memory), vpmulld zmm by the sub-scales, vpaddd zmm
//            (the tile's sequence until it took the sub-scales by vpdpwssd)
// q4k dpwssd 4 x vpdpbusd zmm, vpdpwssd zmm by the sub-scales (its lane sums fit 16 bits): the tile's sequence now
// GOP/s = 2 x multiply-adds per second.
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define GOPS(iterations, chains, start) ((double)(iterations) * (chains) * 256 * 2 / (seconds() - (start)) / 1e9)

// AVX2: 2 chains (8 weight registers, 2 activations, their sums: the 16 registers); the 8 groups of a chunk
// are independent products, so 2 chains keep the multipliers busy.
#define AVX2_OPERANDS                                                                                        \
    __m256i w0 = _mm256_set1_epi8(1), w1 = _mm256_set1_epi8(2), w2 = _mm256_set1_epi8(3), w3 = _mm256_set1_epi8(4); \
    __m256i w4 = _mm256_set1_epi8(5), w5 = _mm256_set1_epi8(6), w6 = _mm256_set1_epi8(7), w7 = _mm256_set1_epi8(8); \
    __m256i a0 = _mm256_set1_epi8(9), a1 = _mm256_set1_epi8(10);
#define AVX2_OPAQUE __asm__ volatile("" : "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3), "+x"(w4), "+x"(w5), "+x"(w6), "+x"(w7), "+x"(a0), "+x"(a1));
#define CHUNK16(a) _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w0, a), _mm256_maddubs_epi16(w1, a)), \
                                                     _mm256_add_epi16(_mm256_maddubs_epi16(w2, a), _mm256_maddubs_epi16(w3, a))), \
                                    _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w4, a), _mm256_maddubs_epi16(w5, a)), \
                                                     _mm256_add_epi16(_mm256_maddubs_epi16(w6, a), _mm256_maddubs_epi16(w7, a))))

__attribute__((target("avx2,fma"))) static double q4p_avx2(uint64_t iterations) {
    AVX2_OPERANDS
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 scale = _mm256_set1_ps(0.5f), minimum = _mm256_set1_ps(0.25f);
    __m256 c0 = _mm256_setzero_ps(), c1 = c0;
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        AVX2_OPAQUE
        c0 = _mm256_fmadd_ps(minimum, scale, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(CHUNK16(a0), ones)), scale, c0));
        c1 = _mm256_fmadd_ps(minimum, scale, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(CHUNK16(a1), ones)), scale, c1));
    }
    double result = GOPS(iterations, 2, start);
    __asm__ volatile("" : : "x"(c0), "x"(c1));
    return result;
}

__attribute__((target("avx2,fma"))) static double q4k_avx2(uint64_t iterations) {
    AVX2_OPERANDS
    const __m256i scales = _mm256_set1_epi16(7);
    __m256i c0 = _mm256_setzero_si256(), c1 = c0;
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        AVX2_OPAQUE
        c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(CHUNK16(a0), scales));
        c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(CHUNK16(a1), scales));
    }
    double result = GOPS(iterations, 2, start);
    __asm__ volatile("" : : "x"(c0), "x"(c1));
    return result;
}

#define VNNI_TARGET __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#define VNNI_CHAINS 8

// 8 chains (one activation register each) against 4 weight registers (one per step of a chunk): every
// product distinct, and enough independent work to cover vpdpbusd's latency.
#define VNNI_OPERANDS                                                                                        \
    __m512i u0 = _mm512_set1_epi8(1), u1 = _mm512_set1_epi8(2), u2 = _mm512_set1_epi8(3), u3 = _mm512_set1_epi8(4); \
    __m512i a[VNNI_CHAINS];                                                                                  \
    for (int c = 0; c < VNNI_CHAINS; c++) a[c] = _mm512_set1_epi8((char)(c + 5));
#define VNNI_OPAQUE                                                                                          \
    __asm__ volatile("" : "+v"(u0), "+v"(u1), "+v"(u2), "+v"(u3));                                         \
    for (int c = 0; c < VNNI_CHAINS; c++) __asm__ volatile("" : "+v"(a[c]));

VNNI_TARGET static double q4p_vnni(uint64_t iterations) {
    VNNI_OPERANDS
    const __m512i i0 = _mm512_set1_epi32(0), i1 = _mm512_set1_epi32(1), i2 = _mm512_set1_epi32(2), i3 = _mm512_set1_epi32(3);
    const __m256 scale = _mm256_set1_ps(0.5f), minimum = _mm256_set1_ps(0.25f);
    __m256 acc[VNNI_CHAINS];
    for (int c = 0; c < VNNI_CHAINS; c++) acc[c] = _mm256_setzero_ps();
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        VNNI_OPAQUE
        for (int c = 0; c < VNNI_CHAINS; c++) {
            __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, _mm512_permutexvar_epi32(i0, a[c]));
            sum = _mm512_dpbusd_epi32(sum, u1, _mm512_permutexvar_epi32(i1, a[c]));
            sum = _mm512_dpbusd_epi32(sum, u2, _mm512_permutexvar_epi32(i2, a[c]));
            sum = _mm512_dpbusd_epi32(sum, u3, _mm512_permutexvar_epi32(i3, a[c]));
            __m256i folded = _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
            acc[c] = _mm256_fmadd_ps(minimum, scale, _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded), scale, acc[c]));
        }
    }
    double result = GOPS(iterations, VNNI_CHAINS, start);
    for (int c = 0; c < VNNI_CHAINS; c++) __asm__ volatile("" : : "v"(acc[c]));
    return result;
}

// The tile broadcasts each step's activation pair from memory; here the chain's register stands for it
// (a broadcast from memory costs a load, not a shuffle). `apply` takes a chunk's sum to the chain's total
// through the sub-scales: vpmulld + vpaddd (the tile's sequence until the sums went into 16-bit lanes), or
// vpdpwssd (since: one instruction).
#define Q4K_VNNI(name, apply)                                                                                \
    VNNI_TARGET static double name(uint64_t iterations) {                                                    \
        VNNI_OPERANDS                                                                                        \
        const __m512i scales = _mm512_set1_epi32(7);                                                         \
        __m512i acc[VNNI_CHAINS];                                                                            \
        for (int c = 0; c < VNNI_CHAINS; c++) acc[c] = _mm512_setzero_si512();                              \
        double start = seconds();                                                                            \
        for (uint64_t i = 0; i < iterations; i++) {                                                          \
            VNNI_OPAQUE                                                                                      \
            for (int c = 0; c < VNNI_CHAINS; c++) {                                                          \
                __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, a[c]);                         \
                sum = _mm512_dpbusd_epi32(sum, u1, a[c]);                                                    \
                sum = _mm512_dpbusd_epi32(sum, u2, a[c]);                                                    \
                sum = _mm512_dpbusd_epi32(sum, u3, a[c]);                                                    \
                acc[c] = apply(acc[c], sum, scales);                                                         \
            }                                                                                                \
        }                                                                                                    \
        double result = GOPS(iterations, VNNI_CHAINS, start);                                                \
        for (int c = 0; c < VNNI_CHAINS; c++) __asm__ volatile("" : : "v"(acc[c]));                         \
        return result;                                                                                       \
    }
#define MULLO_ADD(acc, sum, scales) _mm512_add_epi32(acc, _mm512_mullo_epi32(sum, scales))
Q4K_VNNI(q4k_vnni, MULLO_ADD)
Q4K_VNNI(q4k_dpwssd_vnni, _mm512_dpwssd_epi32)

int main(void) {
    if (!__builtin_cpu_supports("avx2")) {
        fprintf(stderr, "this CPU has no AVX2\n");
        return 1;
    }
    const int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    const uint64_t iterations = 20000000;
    printf("%-12s %-12s %-12s %-12s %-12s (GOP/s, one thread, 3 rounds)\n", "q4p AVX2", "q4k AVX2", "q4p VNNI", "q4k VNNI", "q4k dpwssd");
    for (int round = 0; round < 3; round++) {
        printf("%-12.1f %-12.1f", q4p_avx2(iterations), q4k_avx2(iterations));
        if (vnni) printf(" %-12.1f %-12.1f %-12.1f", q4p_vnni(iterations), q4k_vnni(iterations), q4k_dpwssd_vnni(iterations));
        printf("\n");
    }
    return 0;
}
