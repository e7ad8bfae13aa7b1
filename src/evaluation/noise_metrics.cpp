#include "llm4dsr/evaluation/noise_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "llm4dsr/error.h"

namespace llm4dsr {

DetectionMetrics detection_metrics(const std::vector<bool>& flagged, const std::vector<bool>& is_noise) {
  LLM4DSR_CHECK(flagged.size() == is_noise.size(), "detection_metrics: " << flagged.size() << " flags for "
                                                                         << is_noise.size() << " labels");
  DetectionMetrics m;
  m.positions = static_cast<int64_t>(flagged.size());
  for (size_t i = 0; i < flagged.size(); ++i) {
    if (flagged[i] && is_noise[i]) ++m.true_positives;
    else if (flagged[i]) ++m.false_positives;
    else if (is_noise[i]) ++m.false_negatives;
  }
  const auto tp = static_cast<double>(m.true_positives);
  if (m.true_positives + m.false_positives > 0) m.precision = tp / static_cast<double>(m.true_positives + m.false_positives);
  if (m.true_positives + m.false_negatives > 0) m.recall = tp / static_cast<double>(m.true_positives + m.false_negatives);
  if (m.precision + m.recall > 0) m.f1 = 2 * m.precision * m.recall / (m.precision + m.recall);
  return m;
}

double average_precision(const std::vector<double>& scores, const std::vector<bool>& is_noise) {
  LLM4DSR_CHECK(scores.size() == is_noise.size(), "average_precision: " << scores.size() << " scores for "
                                                                        << is_noise.size() << " labels");
  for (size_t i = 0; i < scores.size(); ++i)
    LLM4DSR_CHECK(!std::isnan(scores[i]), "average_precision: score " << i << " is NaN");
  const auto positives = static_cast<int64_t>(std::count(is_noise.begin(), is_noise.end(), true));
  if (positives == 0) return 0.0;
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  double ap = 0.0;
  int64_t tp = 0, seen = 0;
  for (size_t i = 0; i < order.size();) {
    // One threshold per distinct score: every position with that score is flagged at once.
    size_t j = i;
    int64_t step_tp = 0;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) step_tp += is_noise[order[j++]] ? 1 : 0;
    seen += static_cast<int64_t>(j - i);
    tp += step_tp;
    ap += static_cast<double>(step_tp) / static_cast<double>(positives) * (static_cast<double>(tp) / static_cast<double>(seen));
    i = j;
  }
  return ap;
}

ScoreHistogram score_histogram(const std::vector<double>& probabilities, const std::vector<bool>& is_noise, int64_t bins) {
  LLM4DSR_CHECK(bins >= 1, "score_histogram: bins must be >= 1, got " << bins);
  LLM4DSR_CHECK(probabilities.size() == is_noise.size(), "score_histogram: " << probabilities.size()
                                                                             << " scores for " << is_noise.size() << " labels");
  std::vector<double> logs;
  logs.reserve(probabilities.size());
  double low = 0.0;
  for (size_t i = 0; i < probabilities.size(); ++i) {
    const double p = probabilities[i];
    LLM4DSR_CHECK(p >= 0.0 && p <= 1.0, "score_histogram: score " << i << " = " << p << " is not a probability");
    logs.push_back(p > 0 ? std::log10(p) : -std::numeric_limits<double>::infinity());
    if (p > 0) low = std::min(low, std::floor(logs.back()));
  }
  if (low == 0.0) low = -1.0;
  ScoreHistogram h;
  for (int64_t b = 0; b <= bins; ++b) h.edges.push_back(low + (0.0 - low) * static_cast<double>(b) / static_cast<double>(bins));
  h.noise_counts.assign(static_cast<size_t>(bins), 0);
  h.clean_counts.assign(static_cast<size_t>(bins), 0);
  for (size_t i = 0; i < logs.size(); ++i) {
    const double x = std::max(logs[i], low);
    auto bin = static_cast<int64_t>((x - low) / (0.0 - low) * static_cast<double>(bins));
    bin = std::clamp<int64_t>(bin, 0, bins - 1);
    (is_noise[i] ? h.noise_counts : h.clean_counts)[static_cast<size_t>(bin)]++;
  }
  return h;
}

}  // namespace llm4dsr
