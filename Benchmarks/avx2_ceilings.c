// Register-only loops that bound what an AVX2 int8 product can reach on this core (docs/KERNELS.md,
// "What bounds the AVX2 products"). Each loop runs 6 independent chains of one instruction sequence on
// operands kept opaque to the compiler, so nothing is folded or hoisted; one thread.
//
//   cc -O2 Benchmarks/avx2_ceilings.c -o /tmp/avx2_ceilings && /tmp/avx2_ceilings
//
// pair            vpmaddubsw + vpmaddwd + vpaddd: the sequence of q8p (and blip2-kernel-bench's int8 peak)
// pair + vpsignb  the same with q8p's sign trick in front of each pair
// int16 sums      vpmaddubsw + vpaddw: q4p's sequence, whose 16-bit sums need no vpmaddwd per pair
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

// Three opaque left operands against two right operands give 6 distinct products per iteration; only the
// 1-cycle add depends on the previous iteration, so 6 chains keep every multiplier busy, and the 12
// registers they need leave room for temporaries (spilled accumulators would measure the store forwarding).
#define OPERANDS                                                                                            \
    __m256i a0 = _mm256_set1_epi8(1), a1 = _mm256_set1_epi8(2), a2 = _mm256_set1_epi8(3);                 \
    const __m256i b0 = _mm256_set1_epi8(5), b1 = _mm256_set1_epi8(6), ones = _mm256_set1_epi16(1);       \
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
#define OPAQUE __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2));
#define SIX(step) step(c0, a0, b0) step(c1, a1, b0) step(c2, a2, b0) step(c3, a0, b1) step(c4, a1, b1) step(c5, a2, b1)
#define SINK                                                                                                 \
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),    \
                                 _mm256_add_epi32(c4, c5));                                               \
    __asm__ volatile("" : : "x"(s), "x"(ones));

#define LOOP(name, step)                                                              \
    __attribute__((target("avx2"))) static double name(uint64_t iterations) {         \
        OPERANDS                                                                      \
        double start = seconds();                                                     \
        for (uint64_t i = 0; i < iterations; i++) { OPAQUE SIX(step) }                 \
        double elapsed = seconds() - start;                                           \
        SINK                                                                          \
        return (double)iterations * 6 * 32 * 2 / elapsed / 1e9;                       \
    }

#define PAIR(c, a, b) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
#define SIGNED_PAIR(c, a, b) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(b, a)), ones));
#define INT16_SUM(c, a, b) c = _mm256_add_epi16(c, _mm256_maddubs_epi16(a, b));

LOOP(pair, PAIR)
LOOP(signed_pair, SIGNED_PAIR)
LOOP(int16_sum, INT16_SUM)

int main(void) {
    if (!__builtin_cpu_supports("avx2")) {
        fprintf(stderr, "this CPU has no AVX2\n");
        return 1;
    }
    const uint64_t iterations = 200000000;
    printf("%-16s %-16s %-16s (GOP/s, one thread, 3 rounds)\n", "pair", "pair + vpsignb", "int16 sums");
    for (int round = 0; round < 3; round++)
        printf("%-16.1f %-16.1f %-16.1f\n", pair(iterations), signed_pair(iterations), int16_sum(iterations));
    return 0;
}
