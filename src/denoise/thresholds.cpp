#include "llm4dsr/denoise/thresholds.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "llm4dsr/error.h"

namespace llm4dsr {

std::string to_string(NoiseScore score) { return score == NoiseScore::kNormalised ? "normalised" : "raw"; }

NoiseScore parse_noise_score(std::string_view name) {
  if (name == "raw") return NoiseScore::kRaw;
  if (name == "normalised" || name == "normalized") return NoiseScore::kNormalised;
  LLM4DSR_THROW("unknown noise score '" << name << "' (expected 'raw' or 'normalised')");
}

namespace {

std::vector<double> sequence_scores(const NoiseScores& s, NoiseScore score) {
  std::vector<double> out(s.log_prob.size());
  for (size_t k = 0; k < out.size(); ++k) {
    if (score == NoiseScore::kRaw) out[k] = std::exp(static_cast<double>(s.log_prob[k]));
    else out[k] = k < s.prob.size() ? static_cast<double>(s.prob[k]) : 0.0;
  }
  return out;
}

}  // namespace

std::vector<double> all_scores(const std::vector<NoiseScores>& scores, NoiseScore score) {
  std::vector<double> out;
  for (const auto& s : scores) {
    const auto v = sequence_scores(s, score);
    const auto start = static_cast<size_t>(std::clamp<int64_t>(s.dropped_items, 0, static_cast<int64_t>(v.size())));
    out.insert(out.end(), v.begin() + static_cast<std::ptrdiff_t>(start), v.end());
  }
  return out;
}

double quantile_threshold(std::vector<double> values, double quantile) {
  LLM4DSR_CHECK(quantile >= 0.0 && quantile <= 1.0, "quantile must be in [0, 1], got " << quantile);
  LLM4DSR_CHECK(!values.empty(), "quantile of no scores");
  for (size_t i = 0; i < values.size(); ++i)
    LLM4DSR_CHECK(!std::isnan(values[i]), "score " << i << " is NaN");
  if (quantile == 0.0) return -std::numeric_limits<double>::infinity();
  const auto n = static_cast<double>(values.size());
  // Smallest index i with (i + 1) / n >= q; the epsilon keeps 0.7 * 20 from rounding up to 15.
  auto index = static_cast<size_t>(std::ceil(quantile * n - 1e-9 * n));
  index = std::clamp<size_t>(index, 1, values.size()) - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(index), values.end());
  return values[index];
}

double noise_threshold(const std::vector<NoiseScores>& scores, double quantile, NoiseScore score) {
  return quantile_threshold(all_scores(scores, score), quantile);
}

std::vector<std::vector<int64_t>> flag_noise(const std::vector<std::vector<double>>& scores, double eta,
                                             int64_t budget) {
  LLM4DSR_CHECK(budget >= 0, "budget must be >= 0 (0 = no limit), got " << budget);
  LLM4DSR_CHECK(!std::isnan(eta), "eta is NaN");
  std::vector<std::vector<int64_t>> out(scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    const auto& v = scores[i];
    std::vector<int64_t> above;
    for (size_t k = 0; k < v.size(); ++k)
      if (v[k] > eta) above.push_back(static_cast<int64_t>(k));
    if (budget > 0 && static_cast<int64_t>(above.size()) > budget) {
      std::stable_sort(above.begin(), above.end(), [&](int64_t a, int64_t b) {
        return v[static_cast<size_t>(a)] > v[static_cast<size_t>(b)];
      });
      above.resize(static_cast<size_t>(budget));
      std::sort(above.begin(), above.end());
    }
    out[i] = std::move(above);
  }
  return out;
}

std::vector<std::vector<int64_t>> flag_noise(const std::vector<NoiseScores>& scores, double eta, int64_t budget,
                                             NoiseScore score) {
  std::vector<std::vector<double>> values;
  values.reserve(scores.size());
  for (const auto& s : scores) {
    auto v = sequence_scores(s, score);
    // Dropped positions were never shown to the model: never flagged.
    for (int64_t k = 0; k < s.dropped_items && k < static_cast<int64_t>(v.size()); ++k)
      v[static_cast<size_t>(k)] = -std::numeric_limits<double>::infinity();
    values.push_back(std::move(v));
  }
  return flag_noise(values, eta, budget);
}

std::vector<double> default_quantile_grid() {
  std::vector<double> grid;
  for (int i = 0; i <= 20; ++i) grid.push_back(i / 20.0);
  return grid;
}

EtaSearch search_eta(const std::vector<NoiseScores>& validation,
                     const std::function<double(double, const std::vector<std::vector<int64_t>>&)>& objective,
                     int64_t budget, NoiseScore score, const std::vector<double>& grid) {
  LLM4DSR_CHECK(!grid.empty(), "search_eta: empty quantile grid");
  LLM4DSR_CHECK(objective, "search_eta: no objective");
  const std::vector<double> values = all_scores(validation, score);
  EtaSearch out;
  bool have_best = false;
  for (double q : grid) {
    EtaCandidate c;
    c.quantile = q;
    c.eta = quantile_threshold(values, q);
    c.objective = objective(c.eta, flag_noise(validation, c.eta, budget, score));
    out.candidates.push_back(c);
    if (!have_best || c.objective > out.best.objective ||
        (c.objective == out.best.objective && c.quantile > out.best.quantile)) {
      out.best = c;
      have_best = true;
    }
  }
  return out;
}

}  // namespace llm4dsr
