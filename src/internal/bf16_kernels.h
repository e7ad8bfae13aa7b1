// Elementwise loops between bf16 and fp32 rows for the CPU kernels that fuse work on blocks of rows
// held in the cache (the bf16 LoRA branch), each with an AVX-512 variant (internal/vector_clones.h).
// bf16 rounding is c10::BFloat16's: round to nearest even, NaN kept.
#pragma once

#include <cstdint>

#include <c10/util/BFloat16.h>

namespace llm4dsr::internal {

// to[i] = float(from[i])
void widen_bf16(const c10::BFloat16* from, float* to, int64_t n);
// out[i] = bf16(float(y[i]) + add[i])
void add_into_bf16(const c10::BFloat16* y, const float* add, c10::BFloat16* out, int64_t n);
// out[i] = bf16(h[i] * scale[i]); scale may be null (then bf16(h[i])).
void scale_into_bf16(const float* h, const float* scale, c10::BFloat16* out, int64_t n);
// h[i] *= scale[i]
void scale_in_place(float* h, const float* scale, int64_t n);
// hi[i] = bf16(x[i]), lo[i] = bf16(x[i] - float(hi[i])): x[i] to about 16 significant bits as hi + lo
// (exactly when x[i] has at most 16; inf gives a NaN lo).
void split_bf16(const float* x, c10::BFloat16* hi, c10::BFloat16* lo, int64_t n);

}  // namespace llm4dsr::internal
