#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "llm4dsr/error.h"
#include "llm4dsr/runtime.h"

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
