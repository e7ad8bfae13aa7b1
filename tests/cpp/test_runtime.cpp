#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "llm4dsr/error.h"
#include "llm4dsr/runtime.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace {

// Sets an environment variable for one scope and restores the previous value.
struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }
  const char* name_;
  std::string old_;
  bool had_ = false;
};

}  // namespace

TEST_CASE("freed-memory retention: default from the environment", "[runtime]") {
  {
    ScopedEnv env("LLM4DSR_RETAIN_FREED_MEMORY", "");
    CHECK(llm4dsr::default_freed_memory_retention() == (int64_t(256) << 20));
  }
  {
    ScopedEnv env("LLM4DSR_RETAIN_FREED_MEMORY", "1048576");
    CHECK(llm4dsr::default_freed_memory_retention() == 1048576);
  }
  {
    ScopedEnv env("LLM4DSR_RETAIN_FREED_MEMORY", "0");
    CHECK(llm4dsr::default_freed_memory_retention() == 0);
    CHECK_FALSE(llm4dsr::set_freed_memory_retention(0));  // off: the allocator is left alone
  }
  for (const char* bad : {"-1", "12MB", "lots", "99999999999999999999"}) {
    ScopedEnv env("LLM4DSR_RETAIN_FREED_MEMORY", bad);
    CHECK_THROWS_WITH(llm4dsr::default_freed_memory_retention(),
                      Catch::Contains("LLM4DSR_RETAIN_FREED_MEMORY") && Catch::Contains(std::string("'") + bad + "'"));
  }
}

#if defined(__x86_64__)
namespace {

// The CPU's bf16 matrix instructions read straight from cpuid, apart from the library's own detection:
// AVX512-BF16 is leaf 7 sub-leaf 1 EAX bit 5, AMX-BF16 leaf 7 sub-leaf 0 EDX bit 22.
bool cpuid_has_bf16_matmul() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool amx_bf16 = (edx >> 22) & 1u;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  const bool avx512_bf16 = (eax >> 5) & 1u;
  return amx_bf16 || avx512_bf16;
}

}  // namespace

TEST_CASE("native bf16 products and the dtype 'auto' stands for", "[runtime]") {
  const bool cpu = cpuid_has_bf16_matmul();
  CHECK(llm4dsr::native_bf16_matmul("cpu") == cpu);
  CHECK(llm4dsr::native_bf16_matmul() == cpu);
  CHECK(llm4dsr::auto_dtype("cpu") == (cpu ? "bfloat16" : "float32"));
  CHECK(llm4dsr::native_bf16_matmul("cuda"));
  CHECK(llm4dsr::native_bf16_matmul("cuda:1"));
  CHECK(llm4dsr::auto_dtype("cuda:0") == "bfloat16");
  CHECK_FALSE(llm4dsr::native_bf16_matmul("meta"));
  CHECK_FALSE(llm4dsr::native_bf16_matmul("cudaX"));
  CHECK(llm4dsr::auto_dtype("mps") == "float32");
}
#endif
