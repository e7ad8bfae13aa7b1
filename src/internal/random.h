// A small seeded random number generator whose outputs are identical on every platform, compiler
// and standard library.
//
// The <random> engines are portable but the distributions (uniform_int_distribution,
// uniform_real_distribution, shuffle) are implementation-defined, so "same seed, same output"
// would not survive a change of standard library. Everything here is spelled out: xoshiro256**
// seeded through splitmix64, unbiased integers by rejection, doubles from the top 53 bits.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace llm4dsr::internal {

// One step of splitmix64: advances `state` and returns a well-mixed 64-bit value.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  // `stream` selects an independent sequence for the same seed (e.g. one per user), so that the
  // draws for one unit of work do not depend on how many draws other units made.
  explicit Rng(uint64_t seed, uint64_t stream = 0) {
    uint64_t mix = stream;
    uint64_t sm = seed ^ splitmix64(mix);
    for (auto& word : s_) word = splitmix64(sm);
    // xoshiro's all-zero state is a fixed point; splitmix64 never yields four zeros in a row in
    // practice, but the guard costs nothing.
    if ((s_[0] | s_[1] | s_[2] | s_[3]) == 0) s_[0] = 1;
  }

  // A generator with an explicit xoshiro state (not all zero), for checking against the reference
  // implementation's published outputs.
  static Rng from_state(uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3) {
    Rng r(0);
    r.s_[0] = s0;
    r.s_[1] = s1;
    r.s_[2] = s2;
    r.s_[3] = s3;
    return r;
  }

  // xoshiro256** (Blackman & Vigna).
  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, n), unbiased (rejects the top partial block). n must be > 0.
  uint64_t uniform_int(uint64_t n) {
    // Values below `threshold` would make the low residues slightly more likely.
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next_u64();
      if (r >= threshold) return r % n;
    }
  }

  // Uniform in [lo, hi], both inclusive; lo <= hi.
  int64_t uniform_int(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
    if (span == UINT64_MAX) return static_cast<int64_t>(next_u64());
    return static_cast<int64_t>(static_cast<uint64_t>(lo) + uniform_int(span + 1));
  }

  // Uniform in [0, 1) with 53 random bits: exact multiples of 2^-53.
  double uniform01() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // True with probability p (p <= 0 never, p >= 1 always). Always consumes one draw, so the
  // stream position does not depend on p.
  bool bernoulli(double p) { return uniform01() < p; }

  // Fisher-Yates, from the back.
  template <typename T>
  void shuffle(std::vector<T>& values) {
    for (size_t i = values.size(); i > 1; --i) {
      const size_t j = static_cast<size_t>(uniform_int(static_cast<uint64_t>(i)));
      std::swap(values[i - 1], values[j]);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace llm4dsr::internal
