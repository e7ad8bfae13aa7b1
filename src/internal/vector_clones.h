// LLM4DSR_VECTOR_CLONES on a hot elementwise loop: the library is built for baseline x86-64 (SSE2, 4
// floats per instruction); this compiles the function a second time for AVX-512 (x86-64-v4: F, BW,
// DQ, VL, CD) and lets the loader pick the variant the machine supports (GCC's target_clones,
// an ifunc resolved once). Sums reduced under `omp simd` may round differently between the variants.
#pragma once

// GCC names the x86-64-v4 level from version 11 on; other compilers get the baseline build only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER) && __GNUC__ >= 11
#define LLM4DSR_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define LLM4DSR_VECTOR_CLONES
#endif
