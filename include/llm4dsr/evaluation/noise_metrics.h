// Noise-detection metrics against ground-truth labels (artificial noise): how well flagged positions
// match the injected ones (precision / recall / F1 at the chosen η and budget), how well P_noise
// ranks them over all thresholds (PR-AUC as average precision), and the P_noise distributions of
// noise and clean items (paper Fig. 5) as data.
#pragma once

#include <cstdint>
#include <vector>

namespace llm4dsr {

struct DetectionMetrics {
  int64_t true_positives = 0;
  int64_t false_positives = 0;
  int64_t false_negatives = 0;
  int64_t positions = 0;  // positions evaluated
  double precision = 0.0;  // tp / (tp + fp); 0 when nothing is flagged
  double recall = 0.0;     // tp / (tp + fn); 0 when there is no noise
  double f1 = 0.0;         // harmonic mean; 0 when precision + recall == 0
};

// flagged[i] and is_noise[i]: per position. Throws Error when the lengths differ.
DetectionMetrics detection_metrics(const std::vector<bool>& flagged, const std::vector<bool>& is_noise);

// Average precision of `scores` (higher = more likely noise) for the positives is_noise: the mean,
// over the noise positions, of the precision at the score of each (equal scores form one step, as
// scikit-learn's average_precision_score). 0 when there is no noise. NaN scores throw Error.
double average_precision(const std::vector<double>& scores, const std::vector<bool>& is_noise);

struct ScoreHistogram {
  std::vector<double> edges;          // bins + 1 ascending edges
  std::vector<int64_t> noise_counts;  // per bin
  std::vector<int64_t> clean_counts;  // per bin
};

// Histogram of log10(P_noise) (scores are probabilities; 0 goes to the first bin) of noise and
// clean positions over `bins` equal bins spanning [floor(min), 0]. Throws Error for bins < 1.
ScoreHistogram score_histogram(const std::vector<double>& probabilities, const std::vector<bool>& is_noise,
                               int64_t bins = 20);

}  // namespace llm4dsr
