// Dataset: what a reader returns. A catalogue plus either one chronological sequence per user or,
// for data that arrives already windowed and split (the LLM4DSR authors' CSV), the splits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/data/splits.h"

namespace llm4dsr {

struct Dataset {
  std::string name;    // e.g. "ml-100k"
  std::string format;  // the reader that produced it: "recbole", "movielens", "amazon-json",
                       // "llm4dsr-csv", "synthetic"
  Catalog catalog;
  SequenceSet users;   // one chronological sequence per user (ties in time keep file order)
  bool has_timestamps = false;
  std::optional<Splits> splits;  // set only for pre-split sources; `users` is then empty

  // Recounts catalog popularity from `users` (or from the split targets of pre-split data).
  void recount_popularity();
};

struct DatasetStats {
  int64_t users = 0;
  int64_t items = 0;          // catalogue size
  int64_t interactions = 0;   // for pre-split data: item slots over all windows of all splits
  double mean_length = 0.0;
  int64_t min_length = 0;
  int64_t max_length = 0;
  int64_t titled_items = 0;
  int64_t noisy_interactions = 0;  // positions labelled kInjected, when labels exist
  // Pre-split data only: number of windows per split.
  int64_t train = 0, valid = 0, test = 0;
};

DatasetStats compute_stats(const Dataset& dataset);

// Keeps only users with >= min_user_interactions and items with >= min_item_interactions,
// repeating until both hold (k-core); users left with no items are dropped too, and users keep
// their order. Items are re-numbered densely in their old order; titles, extra text and external
// ids are kept and popularity is recounted. Throws Error for pre-split datasets and for sequences
// that already carry noise labels (filter first, then inject noise).
void kcore_filter(Dataset& dataset, int64_t min_user_interactions, int64_t min_item_interactions);

}  // namespace llm4dsr
