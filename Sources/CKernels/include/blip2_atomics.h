// Atomic operations on plain 64-bit integers for Swift code that shares counters between threads
// (the worker pool); sequentially consistent, which is all the pool needs.
#pragma once
#include <stdint.h>

static inline int64_t blip2_atomic_load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void blip2_atomic_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
/// Returns the value before the addition.
static inline int64_t blip2_atomic_fetch_add(int64_t *p, int64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

/// A hint to the core that this is a spin-wait loop.
static inline void blip2_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
