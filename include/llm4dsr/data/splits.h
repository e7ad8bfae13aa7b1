// Train/valid/test splits, in the two protocols of the literature.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "llm4dsr/data/sequence.h"

namespace llm4dsr {

enum class SplitProtocol {
  kWindows,      // LLM4DSR / BIGRec: sliding windows, cut 8:1:1 by target time
  kLeaveOneOut,  // SASRec / RecBole / IADSR: last item test, second to last valid
};
std::string to_string(SplitProtocol protocol);
SplitProtocol parse_split_protocol(std::string_view name);  // "windows" | "loo"

// Every sequence in a split ends with its target item.
struct Splits {
  SplitProtocol protocol = SplitProtocol::kWindows;
  SequenceSet train, valid, test;
};

struct WindowOptions {
  int64_t max_length = 11;  // history + target
  double train_ratio = 0.8;
  double valid_ratio = 0.1;  // test gets the rest
};

// Windows protocol. For each user, windows of at most max_length items ending at every position
// t >= min(max_length - 1, len - 1) (so a user shorter than max_length gives one window: the whole
// sequence); users with fewer than 2 items give none. Windows keep labels, originals and
// timestamps, and `offset` is the window's start in the user's sequence. All windows are sorted by
// target timestamp (ties: user index, then position; without timestamps the target's position
// offset + t stands in for time) and cut in that order: the first floor(n * train_ratio) go to
// train, the next floor(n * valid_ratio) to valid, the rest to test. Throws Error when
// max_length < 2, the ratios are negative or sum above 1, or some users have timestamps and others
// none.
Splits split_windows(const SequenceSet& users, const WindowOptions& options = {});

// Which (user index, position) pairs become test targets under the windows protocol, as a
// per-user mask; used to keep test targets free of artificial noise.
std::vector<std::vector<bool>> window_test_targets(const SequenceSet& users, const WindowOptions& options = {});

// Leave-one-out. For a user with n >= 3 items: train = items[0, n-2) (only when that holds at
// least 2 items: a lone target has no history), valid = items[0, n-1), test = items[0, n); each
// ends with its target. Users with exactly 2 items go to train only; users with fewer give nothing.
Splits split_leave_one_out(const SequenceSet& users);

}  // namespace llm4dsr
