#include "internal/prompt_fit.h"

#include "llm4dsr/error.h"

namespace llm4dsr::internal {

int64_t items_to_drop(int64_t n, size_t limit, const std::function<size_t(int64_t dropped)>& token_count) {
  if (limit == 0 || n <= 0) return 0;
  if (token_count(0) <= limit) return 0;
  const size_t alone = token_count(n - 1);
  LLM4DSR_CHECK(alone <= limit, "the prompt takes " << alone << " tokens with only the newest item left, over "
                                                    << "max_prompt_tokens = " << limit << "; raise max_prompt_tokens");
  int64_t too_few = 0, enough = n - 1;
  while (enough - too_few > 1) {
    const int64_t mid = too_few + (enough - too_few) / 2;
    (token_count(mid) <= limit ? enough : too_few) = mid;
  }
  return enough;
}

}  // namespace llm4dsr::internal
