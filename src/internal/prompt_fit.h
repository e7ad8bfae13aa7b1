// Prompt token helpers shared by the stages that render a sequence into a prompt (scorer, generator):
// the fewest oldest items to leave out so that it fits a token limit (so they all drop the same
// items), and where a title's tokens start after a prompt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace llm4dsr::internal {

// token_count(dropped) = the prompt's token count with the `dropped` oldest of `n` items left out;
// counts fall as items go. Returns 0 when limit == 0 (no limit) or nothing needs dropping; throws
// Error when even the newest item alone (dropped = n - 1) does not fit. Binary search: O(log n)
// renders.
int64_t items_to_drop(int64_t n, size_t limit, const std::function<size_t(int64_t dropped)>& token_count);

// How many leading tokens two encodings share: where a title's tokens start in encode(prefix + title)
// compared with encode(prefix) (the scorer's context length, the generator's trie root).
template <typename T>
size_t common_prefix(const std::vector<T>& a, const std::vector<T>& b) {
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace llm4dsr::internal
