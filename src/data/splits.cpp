#include "llm4dsr/data/splits.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "llm4dsr/error.h"

namespace llm4dsr {

std::string to_string(SplitProtocol protocol) {
  switch (protocol) {
    case SplitProtocol::kWindows: return "windows";
    case SplitProtocol::kLeaveOneOut: return "loo";
  }
  LLM4DSR_THROW("unknown SplitProtocol value " << static_cast<int>(protocol));
}

SplitProtocol parse_split_protocol(std::string_view name) {
  if (name == "windows") return SplitProtocol::kWindows;
  if (name == "loo" || name == "leave-one-out") return SplitProtocol::kLeaveOneOut;
  LLM4DSR_THROW("unknown split protocol '" << name << "': expected 'windows' or 'loo' (or 'leave-one-out')");
}

namespace {

struct WindowRef {
  double time;     // target timestamp, or the target's position when there are no timestamps
  size_t user;     // index into the user set
  int64_t end;     // the target's position in the user's sequence
};

void check_window_options(const WindowOptions& o) {
  LLM4DSR_CHECK(o.max_length >= 2, "WindowOptions.max_length must be >= 2 (history + target), got " << o.max_length);
  LLM4DSR_CHECK(std::isfinite(o.train_ratio) && std::isfinite(o.valid_ratio) && o.train_ratio >= 0 &&
                    o.valid_ratio >= 0 && o.train_ratio + o.valid_ratio <= 1.0 + 1e-12,
                "WindowOptions ratios must be >= 0 with train_ratio + valid_ratio <= 1, got train_ratio="
                    << o.train_ratio << " valid_ratio=" << o.valid_ratio);
}

// floor(n * ratio), tolerant of the representation error of ratios like 0.29 (0.29 * 100 is
// 28.999999999999996 in doubles, and the caller meant 29).
size_t cut_count(size_t n, double ratio) {
  const double x = static_cast<double>(n) * ratio;
  const double f = std::floor(x + 1e-9 * (1.0 + x));
  return std::min(n, static_cast<size_t>(std::max(0.0, f)));
}

// Every window's target, in split order (target time, then user index, then position).
std::vector<WindowRef> ordered_windows(const SequenceSet& users, const WindowOptions& o) {
  check_window_options(o);
  // Mixing timestamped users with position-ordered ones would compare seconds with positions.
  const Sequence* timed = nullptr;
  const Sequence* untimed = nullptr;
  for (const auto& u : users) {
    if (u.size() < 2) continue;
    (u.has_timestamps() ? timed : untimed) = &u;
  }
  LLM4DSR_CHECK(!(timed && untimed), "windows split: user '" << timed->user_id << "' has timestamps but user '"
                                                             << untimed->user_id
                                                             << "' has none; either all users need them or none");

  std::vector<WindowRef> refs;
  for (size_t u = 0; u < users.size(); ++u) {
    const Sequence& s = users[u];
    const int64_t n = s.size();
    if (n < 2) continue;
    LLM4DSR_CHECK(!s.has_timestamps() || static_cast<int64_t>(s.timestamps.size()) == n,
                  "windows split: user '" << s.user_id << "' has " << s.timestamps.size() << " timestamps for " << n
                                          << " items");
    for (int64_t t = std::min(o.max_length - 1, n - 1); t < n; ++t) {
      const double time = s.has_timestamps() ? s.timestamps[t] : static_cast<double>(s.offset + t);
      LLM4DSR_CHECK(!std::isnan(time), "windows split: user '" << s.user_id << "', position " << t
                                                               << ": timestamp is NaN");
      refs.push_back({time, u, t});
    }
  }
  // The key is unique per window, so the order is total and needs no stable sort.
  std::sort(refs.begin(), refs.end(), [](const WindowRef& a, const WindowRef& b) {
    return std::tie(a.time, a.user, a.end) < std::tie(b.time, b.user, b.end);
  });
  return refs;
}

struct Cut {
  size_t train, valid;  // windows [0, train) train, [train, train + valid) valid, the rest test
};

Cut cut(size_t n, const WindowOptions& o) {
  const size_t train = cut_count(n, o.train_ratio);
  const size_t valid = std::min(n - train, cut_count(n, o.valid_ratio));
  return {train, valid};
}

}  // namespace

Splits split_windows(const SequenceSet& users, const WindowOptions& options) {
  const auto refs = ordered_windows(users, options);
  const Cut c = cut(refs.size(), options);
  Splits out;
  out.protocol = SplitProtocol::kWindows;
  out.train.reserve(c.train);
  out.valid.reserve(c.valid);
  out.test.reserve(refs.size() - c.train - c.valid);
  for (size_t i = 0; i < refs.size(); ++i) {
    const WindowRef& r = refs[i];
    const int64_t begin = std::max<int64_t>(0, r.end + 1 - options.max_length);
    SequenceSet& dst = i < c.train ? out.train : (i < c.train + c.valid ? out.valid : out.test);
    dst.push_back(users[r.user].slice(begin, r.end + 1));
  }
  return out;
}

std::vector<std::vector<bool>> window_test_targets(const SequenceSet& users, const WindowOptions& options) {
  const auto refs = ordered_windows(users, options);
  const Cut c = cut(refs.size(), options);
  std::vector<std::vector<bool>> mask(users.size());
  for (size_t u = 0; u < users.size(); ++u) mask[u].assign(users[u].items.size(), false);
  for (size_t i = c.train + c.valid; i < refs.size(); ++i) mask[refs[i].user][refs[i].end] = true;
  return mask;
}

Splits split_leave_one_out(const SequenceSet& users) {
  Splits out;
  out.protocol = SplitProtocol::kLeaveOneOut;
  for (const auto& s : users) {
    const int64_t n = s.size();
    if (n == 2) {
      out.train.push_back(s);
    } else if (n >= 3) {
      // A one-item train sequence is a target without history: nothing to learn from it.
      if (n - 2 >= 2) out.train.push_back(s.slice(0, n - 2));
      out.valid.push_back(s.slice(0, n - 1));
      out.test.push_back(s);
    }
  }
  return out;
}

}  // namespace llm4dsr
