#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "internal/dropout_mask.h"
#include "test_support.h"

namespace {

float reference_scale(uint64_t seed, double keep, int64_t i) {
  return llm4dsr::testing::dropout_kept(seed, keep, i) ? static_cast<float>(1.0 / keep) : 0.0f;
}

}  // namespace

TEST_CASE("DropoutMask: any slice equals the element-wise definition", "[lora][dropout]") {
  const uint64_t seed = 0x1234abcd5678ef01ULL;
  const double keep = 0.7;
  const llm4dsr::internal::DropoutMask mask(seed, keep);
  const int64_t total = 67;
  std::vector<float> expected(total);
  for (int64_t i = 0; i < total; ++i) expected[i] = reference_scale(seed, keep, i);
  int64_t kept = 0;
  for (float v : expected) kept += v != 0.0f;
  CHECK(kept > 30);  // both values occur: the comparison below means something
  CHECK(kept < 65);
  // Every start (even and odd) and every length, including single elements and a lone half of a pair.
  for (int64_t first = 0; first < total; ++first) {
    for (int64_t n = 1; first + n <= total; ++n) {
      std::vector<float> got(n, -1.0f);
      mask.fill(first, n, got.data());
      bool same = true;
      for (int64_t k = 0; k < n; ++k) same = same && got[k] == expected[first + k];
      if (!same) FAIL("fill(" << first << ", " << n << ") differs from the definition");
    }
  }
  // Large offsets: the pair index is first / 2, not a block-local one.
  const int64_t far = (int64_t(1) << 33) + 1;
  std::vector<float> got(5);
  mask.fill(far, 5, got.data());
  for (int64_t k = 0; k < 5; ++k) CHECK(got[k] == reference_scale(seed, keep, far + k));
}
