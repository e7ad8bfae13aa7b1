// Thresholds on P_noise (paper Eq. 3, section 4.1.4 and 4.4): an item is flagged as noise when its
// score is above η, at most `budget` items per sequence (the paper's b), the highest scores first.
//
// η is either an absolute probability or a quantile of all scores of a split. The paper searches the
// quantiles 0, 0.05, ..., 1 of the noise probabilities of every item; quantile 1 flags nothing
// (training on the original data) and quantile 0 flags everything (up to the budget).
//
// η must be chosen on the VALIDATION split (search_eta); choosing it on the test split leaks the
// test labels into the model selection. Apply the chosen η (the probability, not the quantile) to
// the other splits.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "llm4dsr/denoise/uncertainty_scorer.h"

namespace llm4dsr {

// Which score η compares against.
enum class NoiseScore {
  kRaw,         // P_noise = exp(log_prob), Eq. 2 (the paper's)
  kNormalised,  // NoiseScores::prob, normalised over the sequence's distinct titles
};
std::string to_string(NoiseScore score);
NoiseScore parse_noise_score(std::string_view name);  // "raw" | "normalised"

// The score of every scored position of every sequence, in order (dropped positions, which have no
// score, are left out).
std::vector<double> all_scores(const std::vector<NoiseScores>& scores, NoiseScore score = NoiseScore::kRaw);

// η for a quantile q in [0, 1] of `values` (the inverted-CDF quantile, numpy's method="inverted_cdf"):
// the smallest value v with at least a fraction q of the values <= v, so that about a fraction
// 1 - q lie above it and get flagged. q = 0 gives -inf (every value is above it: all flagged).
// Throws Error for q outside [0, 1], NaN values, or no values.
double quantile_threshold(std::vector<double> values, double quantile);
// quantile_threshold(all_scores(scores, score), quantile).
double noise_threshold(const std::vector<NoiseScores>& scores, double quantile, NoiseScore score = NoiseScore::kRaw);

// Per sequence, the flagged positions (ascending): the positions whose score is > eta (strictly, as
// Eq. 3), the `budget` highest of them when there are more (budget 0 = no limit; the paper's b).
// Equal scores at the cut are taken earliest position first. Throws Error for a negative budget.
std::vector<std::vector<int64_t>> flag_noise(const std::vector<NoiseScores>& scores, double eta, int64_t budget = 0,
                                             NoiseScore score = NoiseScore::kRaw);
// The same on plain score vectors (one per sequence).
std::vector<std::vector<int64_t>> flag_noise(const std::vector<std::vector<double>>& scores, double eta,
                                             int64_t budget = 0);

// The paper's grid: 0, 0.05, ..., 1 (21 values, exact multiples of 1/20).
std::vector<double> default_quantile_grid();

struct EtaCandidate {
  double quantile = 0.0;
  double eta = 0.0;
  double objective = 0.0;
};

struct EtaSearch {
  std::vector<EtaCandidate> candidates;  // in grid order
  EtaCandidate best;                     // highest objective; the higher quantile on ties (fewer edits)
};

// Tries every quantile of `grid` on the VALIDATION scores: η = noise_threshold(validation, q), the
// flags of flag_noise(validation, η, budget), and objective(η, flags) (e.g. the validation NDCG@20
// of a recommender trained on the corrected data, or noise F1 against known labels); higher is
// better. Never pass the test split. Throws Error for an empty grid or a quantile outside [0, 1].
EtaSearch search_eta(const std::vector<NoiseScores>& validation,
                     const std::function<double(double eta, const std::vector<std::vector<int64_t>>& flags)>& objective,
                     int64_t budget = 0, NoiseScore score = NoiseScore::kRaw,
                     const std::vector<double>& grid = default_quantile_grid());

}  // namespace llm4dsr
