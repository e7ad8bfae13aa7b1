#include "llm4dsr/runtime.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>

#include "llm4dsr/error.h"
#include "model/bf16x3_linear.h"

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

}  // namespace llm4dsr
