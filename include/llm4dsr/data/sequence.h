// Sequence: one user's chronological interactions, or one window of them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llm4dsr {

// Per-position ground truth, with the values of the LLM4DSR authors' CSV `mask` column.
enum class NoiseLabel : uint8_t {
  kClean = 0,     // the user's own interaction
  kInjected = 1,  // artificial noise: a uniformly random item replaced the original
  kReplaced = 2,  // the position replaced for self-supervised instruction tuning
};

struct Sequence {
  std::string user_id;              // external user id
  std::vector<int64_t> items;       // internal item ids 1..N; in a window the last one is the target
  std::vector<double> timestamps;   // same length as items, or empty when the source has none
  std::vector<uint8_t> labels;      // NoiseLabel per position, or empty when labels are unknown
  std::vector<int64_t> original_items;  // the item before noise per position (== items where clean);
                                        // empty when labels are empty
  int64_t offset = 0;               // position of items[0] within the user's whole sequence

  int64_t size() const { return static_cast<int64_t>(items.size()); }
  bool empty() const { return items.empty(); }
  bool has_timestamps() const { return !timestamps.empty(); }
  bool has_labels() const { return !labels.empty(); }
  int64_t target() const { return items.back(); }

  // Throws Error (naming the user) when the parallel arrays disagree in length or an item id is
  // outside 1..num_items.
  void validate(int64_t num_items) const;
  // A copy of positions [begin, end); labels, originals and timestamps follow; offset is adjusted.
  Sequence slice(int64_t begin, int64_t end) const;
};

using SequenceSet = std::vector<Sequence>;

}  // namespace llm4dsr
