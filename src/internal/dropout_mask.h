// The inverted-dropout mask of the LoRA branches, drawn from a counter-based generator.
//
// Element i of a mask with seed s is kept when its 32-bit half (the low half for even i, the high half
// for odd i) of splitmix64(s + (i / 2) * 0x9e3779b97f4a7c15) is below keep * 2^32. The mask depends only
// on (s, i): it is the same however the elements are split across threads or row blocks, and a
// backward pass can draw it again from the seed instead of keeping it.
#pragma once

#include <cstdint>

namespace llm4dsr::internal {

class DropoutMask {
 public:
  DropoutMask(uint64_t seed, double keep);
  // scale[k] = 1 / keep where element first + k is kept, 0 elsewhere, for k < n.
  void fill(int64_t first, int64_t n, float* scale) const;

 private:
  uint64_t seed_;
  uint64_t threshold_;
  float kept_scale_;
};

}  // namespace llm4dsr::internal
