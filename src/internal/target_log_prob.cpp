#include "internal/target_log_prob.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "internal/fast_math.h"
#include "internal/vector_clones.h"

namespace llm4dsr::internal {

namespace {

// The row's largest value (NaNs skipped) and how many NaNs it holds.
template <typename scalar_t>
LLM4DSR_VECTOR_CLONES float row_max(const scalar_t* row, int64_t n, int64_t& nans) {
  float m = -std::numeric_limits<float>::infinity();
  int32_t count = 0;  // 32-bit lanes, like the floats', so the loop stays one vector wide
#pragma omp simd reduction(max : m) reduction(+ : count)
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(row[i]);
    m = v > m ? v : m;
    count += v != v;
  }
  nans = count;
  return m;
}

// Summed in blocks whose fp32 lane sums are added in double: a lane's rounding error then grows with
// kSumBlock / lanes additions instead of n / lanes. Over a 49k vocabulary the SSE2 build (AVX2-only CPUs
// before the x86-64-v3 clone) had 4 lanes each add 12k terms in a row: log-probabilities 3.9e-5 off
// float64's, where ATen's cascade sum is 8.6e-6 off.
constexpr int64_t kSumBlock = 512;

template <typename scalar_t>
LLM4DSR_VECTOR_CLONES float row_sum_exp(const scalar_t* row, int64_t n, float m) {
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kSumBlock) {
    const int64_t end = std::min(n, start + kSumBlock);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = start; i < end; ++i) sum += exp_nonpositive(static_cast<float>(row[i]) - m);
    total += sum;
  }
  return static_cast<float>(total);
}

// logsumexp of one row as ATen's logsumexp gives it: NaN when the row holds a NaN, +inf when it holds
// +inf, -inf when every entry is -inf; otherwise its max plus the log of the sum of exp(v - max).
template <typename scalar_t>
float row_logsumexp(const scalar_t* row, int64_t n) {
  int64_t nans = 0;
  const float m = row_max(row, n, nans);
  if (nans > 0) return std::numeric_limits<float>::quiet_NaN();
  if (std::isinf(m)) return m;
  return m + std::log(row_sum_exp(row, n, m));
}

template <typename scalar_t>
void target_log_prob_rows(const scalar_t* logits, int64_t row_stride, const int64_t* target, float* out, int64_t rows,
                          int64_t vocab) {
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* row = logits + r * row_stride;
      out[r] = static_cast<float>(row[target[r]]) - row_logsumexp(row, vocab);
    }
  });
}

}  // namespace

bool target_log_prob_kernel_applies(const torch::Tensor& logits, const torch::Tensor& target) {
  const auto t = logits.scalar_type();
  return logits.device().is_cpu() && target.device().is_cpu() && logits.dim() == 2 && logits.size(1) > 0 &&
         logits.stride(1) == 1 && (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16) &&
         target.scalar_type() == torch::kInt64 && target.dim() == 1 && target.size(0) == logits.size(0);
}

torch::Tensor target_log_prob(const torch::Tensor& logits, const torch::Tensor& target) {
  LLM4DSR_CHECK(logits.dim() == 2 && target.dim() == 1 && target.size(0) == logits.size(0),
                "target_log_prob needs logits [N, V] and targets [N], got " << logits.sizes() << " and " << target.sizes());
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  if (!target_log_prob_kernel_applies(logits, target)) {
    // ATen's gather checks the targets' range itself (on the device, without a synchronisation here).
    const torch::Tensor l = logits.to(torch::kFloat32);
    return l.gather(1, target.unsqueeze(1).to(l.device(), torch::kInt64)).squeeze(1) - l.logsumexp(-1);
  }
  const torch::Tensor t = target.contiguous();
  const int64_t* ids = t.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    LLM4DSR_CHECK(ids[r] >= 0 && ids[r] < vocab,
                  "target_log_prob: target " << ids[r] << " of row " << r << " outside 0.." << vocab - 1);
  torch::Tensor out = torch::empty({rows}, torch::kFloat32);
  switch (logits.scalar_type()) {
    case torch::kFloat32:
      target_log_prob_rows(logits.data_ptr<float>(), logits.stride(0), ids, out.data_ptr<float>(), rows, vocab);
      break;
    case torch::kBFloat16:
      target_log_prob_rows(logits.data_ptr<c10::BFloat16>(), logits.stride(0), ids, out.data_ptr<float>(),
                           rows, vocab);
      break;
    default:
      target_log_prob_rows(logits.data_ptr<c10::Half>(), logits.stride(0), ids, out.data_ptr<float>(),
                           rows, vocab);
  }
  return out;
}

}  // namespace llm4dsr::internal
