#include "internal/bf16_kernels.h"

#include "internal/fast_math.h"
#include "internal/vector_clones.h"

namespace llm4dsr::internal {

LLM4DSR_VECTOR_CLONES void widen_bf16(const c10::BFloat16* from, float* to, int64_t n) {
  for (int64_t i = 0; i < n; ++i) to[i] = static_cast<float>(from[i]);
}

LLM4DSR_VECTOR_CLONES void add_into_bf16(const c10::BFloat16* y, const float* add, c10::BFloat16* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(static_cast<float>(y[i]) + add[i]);
}

LLM4DSR_VECTOR_CLONES void scale_into_bf16(const float* h, const float* scale, c10::BFloat16* out, int64_t n) {
  if (scale) {
    for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(h[i] * scale[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(h[i]);
  }
}

LLM4DSR_VECTOR_CLONES void scale_in_place(float* h, const float* scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] *= scale[i];
}

LLM4DSR_VECTOR_CLONES void split_bf16(const float* x, c10::BFloat16* hi, c10::BFloat16* lo, int64_t n) {
  static_assert(sizeof(c10::BFloat16) == sizeof(uint16_t));
  auto* hi_bits = reinterpret_cast<uint16_t*>(hi);
  auto* lo_bits = reinterpret_cast<uint16_t*>(lo);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = round_to_bf16_bits(x[i]);
    hi_bits[i] = h;
    lo_bits[i] = round_to_bf16_bits(x[i] - bf16_bits_to_float(h));
  }
}

}  // namespace llm4dsr::internal
