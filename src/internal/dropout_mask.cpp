#include "internal/dropout_mask.h"

#include <cmath>

#include "internal/random.h"
#include "internal/vector_clones.h"

namespace llm4dsr::internal {

namespace {

// The scales of elements 2 * first_pair .. 2 * last_pair - 1 (whole pairs: one 64-bit draw each).
LLM4DSR_VECTOR_CLONES void fill_pairs(uint64_t seed, uint64_t threshold, float kept_scale, int64_t first_pair,
                                      int64_t last_pair, float* scale) {
  for (int64_t j = first_pair; j < last_pair; ++j) {
    uint64_t state = seed + static_cast<uint64_t>(j) * 0x9e3779b97f4a7c15ULL;
    const uint64_t r = splitmix64(state);
    float* s = scale + 2 * (j - first_pair);
    s[0] = (r & 0xffffffffULL) < threshold ? kept_scale : 0.0f;
    s[1] = (r >> 32) < threshold ? kept_scale : 0.0f;
  }
}

}  // namespace

DropoutMask::DropoutMask(uint64_t seed, double keep)
    : seed_(seed),
      threshold_(static_cast<uint64_t>(std::llround(keep * 4294967296.0))),
      kept_scale_(static_cast<float>(1.0 / keep)) {}

void DropoutMask::fill(int64_t first, int64_t n, float* scale) const {
  if (n <= 0) return;
  const int64_t end = first + n;
  const int64_t first_pair = (first + 1) / 2, last_pair = end / 2;  // the pairs wholly inside
  float edge[2];
  if (first & 1) {  // element `first` is the high half of pair first / 2
    fill_pairs(seed_, threshold_, kept_scale_, first / 2, first / 2 + 1, edge);
    scale[0] = edge[1];
  }
  if (last_pair > first_pair)
    fill_pairs(seed_, threshold_, kept_scale_, first_pair, last_pair, scale + (2 * first_pair - first));
  if ((end & 1) && end - 1 >= 2 * first_pair) {  // element end - 1 is the low half of pair end / 2
    fill_pairs(seed_, threshold_, kept_scale_, end / 2, end / 2 + 1, edge);
    scale[end - 1 - first] = edge[0];
  }
}

}  // namespace llm4dsr::internal
