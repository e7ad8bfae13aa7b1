#include "llm4dsr/runtime.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "llm4dsr/error.h"

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

}  // namespace llm4dsr
