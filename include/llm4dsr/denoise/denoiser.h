// Denoiser: LLM4DSR's whole correction step (paper sections 3.2-3.3) over many sequences:
//
//   score (UncertaintyScorer, P_noise per item) -> threshold (η, budget b; thresholds.h)
//   -> generate a replacement for each flagged item (Generator) -> ground it (Grounder)
//
// and the ablations of the paper's Table 7 (DenoisePolicy):
//   llm4dsr                 the full method above;
//   without-uncertainty     no scores: the model's own free "Noise Items:" answer is matched to an
//                           item of the sequence (its title, up to case and white space; else the
//                           title sharing the most words), which is then replaced as above;
//   without-completion      flagged items are deleted;
//   popularity-completion   flagged items are replaced by an item drawn in proportion to its
//                           popularity (Catalog::popularity), never one already in the sequence.
//
// Stages are callable on their own (score, then correct with an η chosen elsewhere, e.g. on the
// validation split), so long runs can stream and checkpoint between them; denoise() runs them all.
// A corrected sequence never gets an item that is already in it: grounding and the constrained
// decoder exclude the sequence's items and the item being replaced.
//
// Units of work (paper protocol vs CPU default) are built on top, in data terms: see
// user_chunks() / apply_user_corrections() below.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/denoise/embedder.h"
#include "llm4dsr/denoise/generator.h"
#include "llm4dsr/denoise/grounder.h"
#include "llm4dsr/denoise/thresholds.h"
#include "llm4dsr/denoise/uncertainty_scorer.h"

namespace llm4dsr {

enum class DenoisePolicy { kFull, kWithoutUncertainty, kWithoutCompletion, kPopularityCompletion };
std::string to_string(DenoisePolicy policy);
// "llm4dsr" | "without-uncertainty" | "without-completion" | "popularity-completion"
DenoisePolicy parse_denoise_policy(std::string_view name);

struct DenoiserOptions {
  DenoisePolicy policy = DenoisePolicy::kFull;
  int64_t budget = 1;  // b: most items modified per sequence (0 = no limit)
  NoiseScore score = NoiseScore::kRaw;
  uint64_t seed = 0;  // popularity completion: sequence i draws from stream (seed, first_index + i)

  void validate() const;
};

struct Correction {
  int64_t position = 0;
  int64_t original_item = 0;
  double p_noise = 0.0;          // exp(log_prob); NaN under without-uncertainty (no score)
  std::string generated_text;    // the model's suggestion ("" when deleted or drawn by popularity)
  int64_t replacement_item = 0;  // 0 = deleted
  float similarity = 0.0f;       // grounding cosine (1 for an exact title or constrained decoding)
  bool exact = false;            // found by title, not by embedding search
};

struct SequenceReport {
  std::vector<int64_t> items;  // the corrected sequence (deletions applied)
  std::vector<Correction> corrections;  // ascending position
  std::vector<int64_t> flagged;  // flagged positions (ascending), in the input's positions
};

class Denoiser {
 public:
  // Components a policy does not use may be null: the scorer is needed by every policy but
  // without-uncertainty, the generator by llm4dsr and without-uncertainty, the grounder by those two
  // unless the generator is constrained, the embedder when grounding has to search. The catalogue
  // (titles, popularity) is copied. Throws Error naming the missing component.
  Denoiser(std::shared_ptr<const UncertaintyScorer> scorer, std::shared_ptr<const Generator> generator,
           std::shared_ptr<const Grounder> grounder, std::shared_ptr<const Embedder> embedder, const Catalog& catalog,
           DenoiserOptions options = {});

  const DenoiserOptions& options() const { return options_; }

  std::vector<NoiseScores> score(const std::vector<std::vector<int64_t>>& sequences) const;

  // η from a quantile of the scores (NoiseScore of the options); see thresholds.h.
  double threshold(const std::vector<NoiseScores>& scores, double quantile) const;

  // Flags (per sequence, ascending) under η and the budget; positions where protect[i][k] is true
  // are never flagged (protect may be empty, or hold one row per sequence).
  std::vector<std::vector<int64_t>> flag(const std::vector<NoiseScores>& scores, double eta,
                                         const std::vector<std::vector<bool>>& protect = {}) const;

  // Applies the policy to sequences with the given scores (ignored, and may be empty, under
  // without-uncertainty). first_index numbers the sequences for the popularity draws, so results
  // do not depend on how a split is cut into chunks.
  std::vector<SequenceReport> correct(const std::vector<std::vector<int64_t>>& sequences,
                                      const std::vector<NoiseScores>& scores, double eta,
                                      const std::vector<std::vector<bool>>& protect = {}, uint64_t first_index = 0) const;

  // score + correct with η given.
  std::vector<SequenceReport> denoise(const std::vector<std::vector<int64_t>>& sequences, double eta,
                                      const std::vector<std::vector<bool>>& protect = {}) const;

 private:
  std::vector<SequenceReport> apply(const std::vector<std::vector<int64_t>>& sequences,
                                    const std::vector<std::vector<int64_t>>& flags, const std::vector<NoiseScores>* scores,
                                    uint64_t first_index) const;

  std::shared_ptr<const UncertaintyScorer> scorer_;
  std::shared_ptr<const Generator> generator_;
  std::shared_ptr<const Grounder> grounder_;
  std::shared_ptr<const Embedder> embedder_;
  Catalog catalog_;
  DenoiserOptions options_;
  std::vector<double> popularity_cdf_;  // cumulative popularity over ids 1..N
};

// The matching of without-uncertainty: the position in `titles` whose title equals `answer` up to
// ASCII case and white space (the first not protected), else the one sharing the largest fraction
// of words (Jaccard over lower-case words, at least min_overlap); -1 when none.
int64_t match_answer(const std::string& answer, const std::vector<std::string>& titles,
                     const std::vector<bool>& protect = {}, double min_overlap = 0.5);

// ---- Units of work over the windows of one split ----
//
// Per window (the paper's protocol): every window's history (all items but the target) is one
// sequence; apply_window_corrections writes each report back into its window (the target is never
// changed). Per user: the windows are grouped by user; the user's positions that are history in at
// least one window are cut, in order, into non-overlapping chunks of chunk_length items; each chunk
// is denoised once and its corrections are applied to every window holding the position, so every
// interaction is scored once and all windows agree. A deleted position disappears from every
// window's history (a target is never deleted). With protect_targets (for valid and test splits,
// whose targets are the evaluation labels), positions that are the target of some window of the
// split are scored as context but never flagged.
struct UserChunks {
  std::vector<std::vector<int64_t>> sequences;  // the chunks' items
  std::vector<std::vector<bool>> protect;       // per chunk position
  std::vector<std::vector<uint8_t>> labels;     // per chunk position (empty rows when unlabelled)
  std::vector<int64_t> user;                    // per chunk: index into the split's users (first-seen order)
  std::vector<int64_t> start;                   // per chunk: user position of its first item
  std::vector<std::string> user_ids;            // per user
};

// Throws Error when windows of one user disagree on the item at a position, or a window is empty.
UserChunks user_chunks(const SequenceSet& windows, int64_t chunk_length, bool protect_targets);

// The windows with the chunks' corrections applied (labels / original_items / timestamps follow
// deletions). reports[i] belongs to chunks.sequences[i].
SequenceSet apply_user_corrections(const SequenceSet& windows, const UserChunks& chunks,
                                   const std::vector<SequenceReport>& reports);

// Histories of the windows (every item but the target).
std::vector<std::vector<int64_t>> window_histories(const SequenceSet& windows);
// The windows with reports[i] (from window_histories) written into window i's history.
SequenceSet apply_window_corrections(const SequenceSet& windows, const std::vector<SequenceReport>& reports);

}  // namespace llm4dsr
