// CPU feature probe, run once. Kernels are compiled per function with target attributes, so one
// binary runs on any x86-64 or aarch64 machine and picks its path here.
#include "blip2_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static uint32_t probe(void) {
    uint32_t features = 0;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    bool sse42 = ecx & bit_SSE4_2, fma = ecx & bit_FMA, f16c = ecx & bit_F16C, osxsave = ecx & bit_OSXSAVE;
    if (sse42) features |= BLIP2_CPU_SSE42;
    if (!osxsave) return features;
    uint64_t xcr0 = read_xcr0();
    bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return features;
    if (ymm && fma && f16c && (ebx & bit_AVX2)) features |= BLIP2_CPU_AVX2;
    bool avx512 = (ebx & bit_AVX512F) && (ebx & bit_AVX512BW) && (ebx & bit_AVX512VL);
    if (zmm && avx512 && (features & BLIP2_CPU_AVX2)) {
        features |= BLIP2_CPU_AVX512;
        if (ecx & bit_AVX512VNNI) features |= BLIP2_CPU_AVX512VNNI;
    }
    return features;
}
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
static uint32_t probe(void) {
    unsigned long hw = getauxval(AT_HWCAP);
    uint32_t features = BLIP2_CPU_NEON;   // Advanced SIMD is mandatory on AArch64
    if (hw & HWCAP_ASIMDDP) features |= BLIP2_CPU_DOTPROD;
    if (hw & HWCAP_CRC32) features |= BLIP2_CPU_ARMCRC;
    return features;
}
#else
static uint32_t probe(void) { return 0; }
#endif

uint32_t blip2_cpu_features(void) {
    static uint32_t cached = 0xffffffffu;
    uint32_t value = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (value == 0xffffffffu) {
        value = probe();
        __atomic_store_n(&cached, value, __ATOMIC_RELAXED);
    }
    return value;
}
