// Helpers shared by the C++ tests.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "llm4dsr/runtime.h"

namespace llm4dsr::testing {

// Whether element i of the LoRA dropout mask with this seed is kept, by the documented definition
// (internal/dropout_mask.h), written out independently of the library: its 32-bit half (low for even
// i, high for odd i) of splitmix64(seed + (i / 2) * 0x9e3779b97f4a7c15) is below keep * 2^32.
inline bool dropout_kept(uint64_t seed, double keep, int64_t i) {
  uint64_t z = seed + static_cast<uint64_t>(i / 2) * 0x9e3779b97f4a7c15ULL + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  const uint64_t half = (i & 1) ? (z >> 32) : (z & 0xffffffffULL);
  return half < static_cast<uint64_t>(std::llround(keep * 4294967296.0));
}

// ../shared/data beside the source tree, or $LLM4DSR_SHARED_DATA; empty when absent, and tests that
// need it return early with a WARN (Catch2 v2 has no skip).
inline std::string shared_data_dir() {
  if (const char* env = std::getenv("LLM4DSR_SHARED_DATA"); env && *env) return env;
  std::filesystem::path p = std::filesystem::path(LLM4DSR_SOURCE_DIR) / ".." / "shared" / "data";
  return std::filesystem::exists(p) ? std::filesystem::canonical(p).string() : std::string();
}

// Sets the library running fp32 products (runtime.h) for one scope, then puts the previous one back.
class Fp32GemmScope {
 public:
  explicit Fp32GemmScope(Fp32Gemm gemm) : previous_(fp32_gemm()) { set_fp32_gemm(gemm); }
  ~Fp32GemmScope() { set_fp32_gemm(previous_); }
  Fp32GemmScope(const Fp32GemmScope&) = delete;
  Fp32GemmScope& operator=(const Fp32GemmScope&) = delete;

 private:
  Fp32Gemm previous_;
};

// A fresh empty folder under the system temp dir, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("llm4dsr_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::error_code ec; std::filesystem::remove_all(path_, ec); }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Writes a file inside the folder and returns its path.
  std::string write(const std::string& name, const std::string& contents) const {
    std::filesystem::create_directories((path_ / name).parent_path());
    std::ofstream(path_ / name, std::ios::binary) << contents;
    return file(name);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace llm4dsr::testing

