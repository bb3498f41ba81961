// Register-only loops that bound what the super-block (q4k) panel products can reach on this core
// (docs/KERNELS.md, "The super-block tiles"), in the style of avx2_ceilings.c: 6 independent chains of one
// tile's per-chunk instruction sequence on opaque operands, one thread. A chunk is 32 inputs of 8 rows
// against one token: 256 multiply-adds.
//
//   cc -O2 Benchmarks/kquant_ceilings.c -o /tmp/kquant_ceilings && /tmp/kquant_ceilings
//
// q4p AVX2       q4p's chunk: 8 x vpmaddubsw + vpaddw, then vpmaddwd by ones, convert, 2 FMAs (scale, minimum)
// q4k AVX2       q4k's chunk: the same 8 x vpmaddubsw + vpaddw, then vpmaddwd by the sub-scales and vpaddd
// q4p VNNI       4 x (vpermd + vpdpbusd zmm), fold, convert, 2 FMAs
// q4k VNNI       4 x (vpermd + vpdpbusd zmm), vpmulld zmm by the sub-scales, vpaddd zmm
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

#define CHAINS 6
#define REPORT(iterations, start) ((double)(iterations) * CHAINS * 256 * 2 / (seconds() - (start)) / 1e9)

__attribute__((target("avx2,fma"))) static double q4p_avx2(uint64_t iterations) {
    __m256i a = _mm256_set1_epi8(3), w = _mm256_set1_epi8(5);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[CHAINS], scale = _mm256_set1_ps(0.5f), minimum = _mm256_set1_ps(0.25f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_setzero_ps();
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+x"(a), "+x"(w));
        for (int c = 0; c < CHAINS; c++) {
            __m256i sum = _mm256_maddubs_epi16(w, a);
            for (int g = 1; g < 8; g++) sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(w, a));
            __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum, ones));
            acc[c] = _mm256_fmadd_ps(minimum, scale, _mm256_fmadd_ps(dot, scale, acc[c]));
        }
    }
    double result = REPORT(iterations, start);
    for (int c = 0; c < CHAINS; c++) __asm__ volatile("" : : "x"(acc[c]));
    return result;
}

__attribute__((target("avx2,fma"))) static double q4k_avx2(uint64_t iterations) {
    __m256i a = _mm256_set1_epi8(3), w = _mm256_set1_epi8(5), scales = _mm256_set1_epi16(7);
    __m256i acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_setzero_si256();
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+x"(a), "+x"(w));
        for (int c = 0; c < CHAINS; c++) {
            __m256i sum = _mm256_maddubs_epi16(w, a);
            for (int g = 1; g < 8; g++) sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(w, a));
            acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(sum, scales));
        }
    }
    double result = REPORT(iterations, start);
    for (int c = 0; c < CHAINS; c++) __asm__ volatile("" : : "x"(acc[c]));
    return result;
}

#define VNNI_TARGET __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

VNNI_TARGET static double q4p_vnni(uint64_t iterations) {
    __m512i a = _mm512_set1_epi8(3), w = _mm512_set1_epi8(5), index = _mm512_set1_epi32(1);
    __m256 acc[CHAINS], scale = _mm256_set1_ps(0.5f), minimum = _mm256_set1_ps(0.25f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_setzero_ps();
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+v"(a), "+v"(w), "+v"(index));
        for (int c = 0; c < CHAINS; c++) {
            __m512i sum = _mm512_setzero_si512();
            for (int run = 0; run < 4; run++) sum = _mm512_dpbusd_epi32(sum, w, _mm512_permutexvar_epi32(index, a));
            __m256i folded = _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
            acc[c] = _mm256_fmadd_ps(minimum, scale, _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded), scale, acc[c]));
        }
    }
    double result = REPORT(iterations, start);
    for (int c = 0; c < CHAINS; c++) __asm__ volatile("" : : "x"(acc[c]));
    return result;
}

VNNI_TARGET static double q4k_vnni(uint64_t iterations) {
    __m512i a = _mm512_set1_epi8(3), w = _mm512_set1_epi8(5), index = _mm512_set1_epi32(1), scales = _mm512_set1_epi32(7);
    __m512i acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_setzero_si512();
    double start = seconds();
    for (uint64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+v"(a), "+v"(w), "+v"(index));
        for (int c = 0; c < CHAINS; c++) {
            __m512i sum = _mm512_setzero_si512();
            for (int run = 0; run < 4; run++) sum = _mm512_dpbusd_epi32(sum, w, _mm512_permutexvar_epi32(index, a));
            acc[c] = _mm512_add_epi32(acc[c], _mm512_mullo_epi32(sum, scales));
        }
    }
    double result = REPORT(iterations, start);
    for (int c = 0; c < CHAINS; c++) __asm__ volatile("" : : "v"(acc[c]));
    return result;
}

int main(void) {
    if (!__builtin_cpu_supports("avx2")) {
        fprintf(stderr, "this CPU has no AVX2\n");
        return 1;
    }
    const int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    const uint64_t iterations = 20000000;
    printf("%-12s %-12s %-12s %-12s (GOP/s, one thread, 3 rounds)\n", "q4p AVX2", "q4k AVX2", "q4p VNNI", "q4k VNNI");
    for (int round = 0; round < 3; round++) {
        printf("%-12.1f %-12.1f", q4p_avx2(iterations), q4k_avx2(iterations));
        if (vnni) printf(" %-12.1f %-12.1f", q4p_vnni(iterations), q4k_vnni(iterations));
        printf("\n");
    }
    return 0;
}
