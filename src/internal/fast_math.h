// Scalar fp32 helpers written so that GCC vectorises the loops that call them (internal): std::exp and
// c10's bf16 conversion stay scalar calls or branch per element, which keeps a loop one element wide.
#pragma once

#include <cstdint>
#include <cstring>

namespace llm4dsr::internal {

// exp(x) for x <= 0 (not NaN): x = n ln 2 + r with |r| <= ln 2 / 2 (Cody-Waite, ln 2 in two parts),
// exp(r) by its Taylor polynomial to degree 7 (truncation below 1e-8 relative), times 2^n built in the
// exponent bits. Inputs below -87, -inf and NaN included, are taken as -87 (exp(-87) = 1.6e-38, still
// a normal float), which keeps 2^n normal.
inline float exp_nonpositive(float x) {
  x = x >= -87.0f ? x : -87.0f;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// c10::BFloat16's rounding (to nearest even, NaN kept as a quiet NaN) on the bits.
inline uint16_t round_to_bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return v != v ? uint16_t{0x7fc0} : static_cast<uint16_t>(rounded);
}

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// Element i of an fp32 row or of a bf16 row held as its bits, as fp32; and the store back (bf16
// rounded to nearest even).
inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) { return bf16_bits_to_float(p[i]); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(uint16_t* p, int64_t i, float v) { p[i] = round_to_bf16_bits(v); }

}  // namespace llm4dsr::internal
