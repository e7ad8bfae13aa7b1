// Artificial noise injection (the papers' setting) and dataset preparation.
#pragma once

#include <cstdint>
#include <vector>

#include "llm4dsr/data/dataset.h"
#include "llm4dsr/data/splits.h"

namespace llm4dsr {

struct NoiseOptions {
  double alpha = 0.1;  // probability that each interaction is replaced
  uint64_t seed = 0;
};

// Replaces each position, independently with probability alpha, by a uniformly random item other
// than the original (ids 1..num_items). Sets `labels` (kInjected / kClean) and `original_items` of
// every sequence; the current items are taken as the originals (earlier labels are replaced).
// Positions where protected_positions[u][p] is true are never replaced (the rows must match the
// users and their lengths). Same seed, same output, on every platform; each user draws from its
// own stream (seed, user index), so a user's noise does not depend on the other users. Throws
// Error if alpha is outside [0, 1], num_items < 2 or an item id is outside 1..num_items.
void inject_noise(SequenceSet& users, int64_t num_items, const NoiseOptions& options,
                  const std::vector<std::vector<bool>>* protected_positions = nullptr);

struct PrepareOptions {
  SplitProtocol protocol = SplitProtocol::kWindows;
  WindowOptions windows;
  double noise_alpha = 0.0;  // 0 = no artificial noise (labels are still attached, all clean)
  uint64_t seed = 0;
};

// Splits a dataset, injecting noise first when noise_alpha > 0 (into a copy of the users'
// sequences, before windowing, as in the papers, so overlapping windows agree). Test targets are
// never noised: under windows the targets of the test windows, under leave-one-out each user's
// last item. With noise_alpha == 0, sequences without labels get all-clean labels (originals ==
// items). Pre-split datasets are returned as they are (noise injection on them is an error).
Splits prepare(const Dataset& dataset, const PrepareOptions& options);

}  // namespace llm4dsr
