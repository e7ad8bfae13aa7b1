#include "llm4dsr/data/noise.h"

#include <algorithm>

#include <cmath>

#include "internal/random.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

void check_alpha(double alpha) {
  LLM4DSR_CHECK(alpha >= 0.0 && alpha <= 1.0, "noise alpha must be in [0, 1], got " << alpha);
}

// All positions clean, the items their own originals; sequences that already carry labels (e.g.
// read from a labelled source) keep them.
void attach_clean_labels(SequenceSet& users) {
  for (auto& s : users) {
    if (s.has_labels()) continue;
    s.labels.assign(s.items.size(), static_cast<uint8_t>(NoiseLabel::kClean));
    s.original_items = s.items;
  }
}

}  // namespace

void inject_noise(SequenceSet& users, int64_t num_items, const NoiseOptions& options,
                  const std::vector<std::vector<bool>>* protected_positions) {
  check_alpha(options.alpha);
  LLM4DSR_CHECK(num_items >= 2, "noise injection needs at least 2 items to replace one by another, the catalogue has "
                                    << num_items);
  if (protected_positions) {
    LLM4DSR_CHECK(protected_positions->size() == users.size(),
                  "protected_positions has " << protected_positions->size() << " rows for " << users.size() << " users");
  }
  for (size_t u = 0; u < users.size(); ++u) {
    Sequence& s = users[u];
    const std::vector<bool>* guard = protected_positions ? &(*protected_positions)[u] : nullptr;
    LLM4DSR_CHECK(!guard || guard->size() == s.items.size(),
                  "protected_positions row " << u << " (user '" << s.user_id << "') has " << guard->size()
                                             << " entries for " << s.items.size() << " items");
    // One stream per user: a user's noise does not depend on the other users' lengths or order.
    internal::Rng rng(options.seed, static_cast<uint64_t>(u));
    // The current items are the originals: labels from an earlier injection are replaced.
    s.original_items = s.items;
    s.labels.assign(s.items.size(), static_cast<uint8_t>(NoiseLabel::kClean));
    for (size_t p = 0; p < s.items.size(); ++p) {
      const int64_t original = s.items[p];
      LLM4DSR_CHECK(original >= 1 && original <= num_items, "user '" << s.user_id << "', position " << p << ": item id "
                                                                      << original << " outside 1.." << num_items);
      // Protected positions draw like the others and discard the result, so protecting a position
      // does not shift the draws of the positions after it.
      if (!rng.bernoulli(options.alpha)) continue;
      // Uniform over the num_items - 1 other items.
      int64_t replacement = 1 + static_cast<int64_t>(rng.uniform_int(static_cast<uint64_t>(num_items - 1)));
      if (replacement >= original) ++replacement;
      if (guard && (*guard)[p]) continue;
      s.items[p] = replacement;
      s.labels[p] = static_cast<uint8_t>(NoiseLabel::kInjected);
    }
  }
}

Splits prepare(const Dataset& dataset, const PrepareOptions& options) {
  check_alpha(options.noise_alpha);
  if (dataset.splits) {
    LLM4DSR_CHECK(options.noise_alpha == 0.0,
                  "dataset '" << dataset.name << "' (" << dataset.format
                              << ") arrives already split; artificial noise can only be injected into per-user "
                                 "sequences, but noise_alpha = "
                              << options.noise_alpha);
    // The split is the dataset's own: options asking for another one are an error, not ignored.
    LLM4DSR_CHECK(options.protocol == dataset.splits->protocol,
                  "dataset '" << dataset.name << "' (" << dataset.format << ") arrives split by '"
                              << to_string(dataset.splits->protocol) << "'; it cannot be split by '"
                              << to_string(options.protocol) << "'");
    if (dataset.splits->protocol == SplitProtocol::kWindows) {
      int64_t longest = 0;
      for (const SequenceSet* split : {&dataset.splits->train, &dataset.splits->valid, &dataset.splits->test})
        for (const Sequence& w : *split) longest = std::max(longest, w.size());
      LLM4DSR_CHECK(options.windows.max_length >= longest,
                    "dataset '" << dataset.name << "' (" << dataset.format << ") arrives as windows of up to "
                                << longest << " items; they cannot be cut to max_length " << options.windows.max_length);
    }
    return *dataset.splits;
  }
  SequenceSet users = dataset.users;
  const int64_t num_items = dataset.catalog.size();
  for (const auto& s : users) s.validate(num_items);
  const NoiseOptions noise{options.noise_alpha, options.seed};

  switch (options.protocol) {
    case SplitProtocol::kWindows: {
      // Noise goes into the users' sequences before windowing, so overlapping windows agree on
      // every position; the positions that will be test targets stay clean.
      if (options.noise_alpha > 0) {
        const auto targets = window_test_targets(users, options.windows);
        inject_noise(users, num_items, noise, &targets);
      } else {
        attach_clean_labels(users);
      }
      return split_windows(users, options.windows);
    }
    case SplitProtocol::kLeaveOneOut: {
      if (options.noise_alpha > 0) {
        std::vector<std::vector<bool>> last(users.size());
        for (size_t u = 0; u < users.size(); ++u) {
          last[u].assign(users[u].items.size(), false);
          if (!last[u].empty()) last[u].back() = true;
        }
        inject_noise(users, num_items, noise, &last);
      } else {
        attach_clean_labels(users);
      }
      return split_leave_one_out(users);
    }
  }
  LLM4DSR_THROW("unknown SplitProtocol value " << static_cast<int>(options.protocol));
}

}  // namespace llm4dsr
