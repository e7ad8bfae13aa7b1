// llm4dsr::Error and the check macros every module uses.
//
// One exception type for every library error (bad input, bad arguments, corrupt files). Messages
// say what was expected, what was found and where (file:line, key, item id). The Python bindings
// map it to `llm4dsr.Error` in one place.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace llm4dsr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const char* expression, const std::string& message);
}  // namespace detail

}  // namespace llm4dsr

// LLM4DSR_CHECK(k > 0, "top_k must be > 0, got " << k);
// The message is a stream expression, evaluated only when the check fails.
#define LLM4DSR_CHECK(cond, msg)                                                       \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::ostringstream llm4dsr_check_os_;                                            \
      llm4dsr_check_os_ << msg;                                                        \
      ::llm4dsr::detail::throw_error(__FILE__, __LINE__, #cond, llm4dsr_check_os_.str()); \
    }                                                                                  \
  } while (0)

// Throws unconditionally; for errors whose condition is the control flow around it.
#define LLM4DSR_THROW(msg)                                                  \
  do {                                                                      \
    std::ostringstream llm4dsr_check_os_;                                   \
    llm4dsr_check_os_ << msg;                                               \
    throw ::llm4dsr::Error(llm4dsr_check_os_.str());                        \
  } while (0)
