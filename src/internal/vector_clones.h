// LLM4DSR_VECTOR_CLONES on a hot elementwise loop: the library is built for baseline x86-64 (SSE2, 4
// floats per instruction); this compiles the function again for AVX-512 (x86-64-v4: F, BW, DQ, VL, CD)
// and for AVX2 with FMA (x86-64-v3: the AVX2-only CPUs, such as AMD's Zen 2 and 3, that would otherwise
// run the SSE2 build) and lets the loader pick the best variant the machine supports (GCC's
// target_clones, an ifunc resolved once). Sums reduced under `omp simd` may round differently between
// the variants, and the v3 and v4 variants may fuse multiply-adds.
#pragma once

// GCC names the x86-64-v4 level from version 11 on; other compilers get the baseline build only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER) && __GNUC__ >= 11
#define LLM4DSR_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LLM4DSR_VECTOR_CLONES
#endif
