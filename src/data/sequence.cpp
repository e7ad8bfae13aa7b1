#include "llm4dsr/data/sequence.h"

#include "llm4dsr/error.h"

namespace llm4dsr {

void Sequence::validate(int64_t num_items) const {
  const size_t n = items.size();
  LLM4DSR_CHECK(timestamps.empty() || timestamps.size() == n,
                "user '" << user_id << "': " << timestamps.size() << " timestamps for " << n << " items");
  LLM4DSR_CHECK(labels.empty() || labels.size() == n,
                "user '" << user_id << "': " << labels.size() << " noise labels for " << n << " items");
  LLM4DSR_CHECK(original_items.size() == labels.size(),
                "user '" << user_id << "': " << original_items.size() << " original items for " << labels.size()
                         << " noise labels");
  for (size_t p = 0; p < n; ++p) {
    LLM4DSR_CHECK(items[p] >= 1 && items[p] <= num_items,
                  "user '" << user_id << "', position " << p << ": item id " << items[p] << " outside 1.." << num_items);
    if (!labels.empty()) {
      LLM4DSR_CHECK(labels[p] <= 2, "user '" << user_id << "', position " << p << ": noise label "
                                              << int(labels[p]) << " is not 0, 1 or 2");
      LLM4DSR_CHECK(original_items[p] >= 1 && original_items[p] <= num_items,
                    "user '" << user_id << "', position " << p << ": original item id " << original_items[p]
                             << " outside 1.." << num_items);
    }
  }
}

Sequence Sequence::slice(int64_t begin, int64_t end) const {
  LLM4DSR_CHECK(0 <= begin && begin <= end && end <= size(),
                "slice [" << begin << ", " << end << ") of a sequence of length " << size());
  Sequence out;
  out.user_id = user_id;
  out.offset = offset + begin;
  out.items.assign(items.begin() + begin, items.begin() + end);
  if (has_timestamps()) out.timestamps.assign(timestamps.begin() + begin, timestamps.begin() + end);
  if (has_labels()) {
    out.labels.assign(labels.begin() + begin, labels.begin() + end);
    out.original_items.assign(original_items.begin() + begin, original_items.begin() + end);
  }
  return out;
}

}  // namespace llm4dsr
