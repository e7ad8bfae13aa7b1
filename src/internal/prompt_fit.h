// The fewest oldest items to leave out of a prompt so that it fits a token limit; shared by every
// stage that renders a sequence into a prompt (instructions, scorer, generator), so they all drop
// the same items.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace llm4dsr::internal {

// token_count(dropped) = the prompt's token count with the `dropped` oldest of `n` items left out;
// counts fall as items go. Returns 0 when limit == 0 (no limit) or nothing needs dropping; throws
// Error when even the newest item alone (dropped = n - 1) does not fit. Binary search: O(log n)
// renders.
int64_t items_to_drop(int64_t n, size_t limit, const std::function<size_t(int64_t dropped)>& token_count);

}  // namespace llm4dsr::internal
