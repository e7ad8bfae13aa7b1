#include "llm4dsr/runtime.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>

#include "llm4dsr/error.h"
#include "model/bf16x3_linear.h"
#include "model/onednn_linear.h"
#include "model/packed_linear.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace llm4dsr {

int default_num_threads() {
  if (const char* env = std::getenv("LLM4DSR_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    LLM4DSR_CHECK(end && *end == '\0' && n > 0,
                  "LLM4DSR_NUM_THREADS must be a positive integer, got '" << env << "'");
    return static_cast<int>(n);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

void set_num_threads(int n) { at::set_num_threads(n > 0 ? n : default_num_threads()); }

int num_threads() { return at::get_num_threads(); }

int64_t default_freed_memory_retention() {
  if (const char* env = std::getenv("LLM4DSR_RETAIN_FREED_MEMORY"); env && *env) {
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(env, &end, 10);
    LLM4DSR_CHECK(end && *end == '\0' && errno != ERANGE && n >= 0,
                  "LLM4DSR_RETAIN_FREED_MEMORY must be a number of bytes >= 0 (0: off), got '" << env << "'");
    return static_cast<int64_t>(n);
  }
  return int64_t(256) << 20;
}

bool set_freed_memory_retention(int64_t bytes) {
  if (bytes <= 0) return false;
#if defined(__GLIBC__)
  // mallopt takes an int: larger requests are capped rather than wrapped.
  const int trim = static_cast<int>(std::min<int64_t>(bytes, INT_MAX));
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, trim) == 1;
#else
  return false;
#endif
}

bool bf16x3_matmul_available() { return detail::bf16x3_supported(); }

bool native_bf16_matmul(std::string_view device) {
  if (device == "cpu") return detail::native_bf16_gemm();
  return device == "cuda" || device.rfind("cuda:", 0) == 0;
}

std::string auto_dtype(std::string_view device) { return native_bf16_matmul(device) ? "bfloat16" : "float32"; }

namespace {

// -1: not resolved yet (the environment is read on first use).
std::atomic<int> fp32_gemm_choice{-1};

Fp32Gemm resolve(Fp32Gemm gemm) {
  if (gemm != Fp32Gemm::kAuto) return gemm;
  return detail::onednn_fp32_preferred() ? Fp32Gemm::kOneDnn : Fp32Gemm::kATen;
}

}  // namespace

std::string to_string(Fp32Gemm gemm) {
  switch (gemm) {
    case Fp32Gemm::kAuto: return "auto";
    case Fp32Gemm::kOneDnn: return "onednn";
    case Fp32Gemm::kATen: return "aten";
  }
  return "auto";
}

Fp32Gemm parse_fp32_gemm(std::string_view name) {
  if (name == "auto") return Fp32Gemm::kAuto;
  if (name == "onednn") return Fp32Gemm::kOneDnn;
  if (name == "aten") return Fp32Gemm::kATen;
  LLM4DSR_THROW("unknown fp32 GEMM library '" << name << "' (expected 'auto', 'onednn' or 'aten')");
}

void set_fp32_gemm(Fp32Gemm gemm) {
  LLM4DSR_CHECK(gemm != Fp32Gemm::kOneDnn || detail::onednn_ops().present(),
                "set_fp32_gemm: this libtorch has no oneDNN linear ops (mkldnn::_linear_pointwise)");
  fp32_gemm_choice = static_cast<int>(resolve(gemm));
}

Fp32Gemm fp32_gemm() {
  int choice = fp32_gemm_choice.load();
  if (choice < 0) {
    Fp32Gemm wanted = Fp32Gemm::kAuto;
    if (const char* env = std::getenv("LLM4DSR_FP32_GEMM"); env && *env) {
      try {
        wanted = parse_fp32_gemm(env);
      } catch (const Error& e) {
        LLM4DSR_THROW("LLM4DSR_FP32_GEMM: " << e.what());
      }
    }
    set_fp32_gemm(wanted);
    choice = fp32_gemm_choice.load();
  }
  return static_cast<Fp32Gemm>(choice);
}

}  // namespace llm4dsr
