#include "llm4dsr/error.h"

#include <cstring>

namespace llm4dsr::detail {

void throw_error(const char* file, int line, const char* expression, const std::string& message) {
  // The user-facing message comes first; the failed expression and source location follow for bug
  // reports.
  const char* base = std::strrchr(file, '/');
  std::ostringstream os;
  os << message << " [check failed: " << expression << " at " << (base ? base + 1 : file) << ":" << line << "]";
  throw Error(os.str());
}

}  // namespace llm4dsr::detail
