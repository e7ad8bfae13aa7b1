#include "torch_catch.h"

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "internal/target_log_prob.h"
#include "llm4dsr/error.h"

namespace {

// The reference: log_softmax in float64, read at the targets.
torch::Tensor reference(const torch::Tensor& logits, const torch::Tensor& target) {
  return logits.to(torch::kFloat64).log_softmax(-1).gather(1, target.unsqueeze(1)).squeeze(1);
}

}  // namespace

TEST_CASE("target_log_prob equals log_softmax at the targets for fp32, bf16 and fp16 rows", "[target_log_prob]") {
  using llm4dsr::internal::target_log_prob;
  using llm4dsr::internal::target_log_prob_kernel_applies;
  torch::manual_seed(3);
  const int64_t rows = 37, vocab = 49152;
  // Logit scales like a language model's (tens), and one row spread wide enough that most of its
  // exponentials underflow, where the kernel's clamp of exp's argument is exercised.
  torch::Tensor logits = torch::randn({rows, vocab}) * 6.0;
  logits[5].mul_(40.0);
  torch::Tensor target = torch::randint(0, vocab, {rows}, torch::kInt64);
  target[0] = 0;
  target[1] = vocab - 1;
  target[2] = logits[2].argmax().item<int64_t>();
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    CAPTURE(dtype);
    const torch::Tensor l = logits.to(dtype);
    REQUIRE(target_log_prob_kernel_applies(l, target));
    const torch::Tensor got = target_log_prob(l, target);
    REQUIRE(got.scalar_type() == torch::kFloat32);
    REQUIRE(got.sizes() == torch::IntArrayRef({rows}));
    const torch::Tensor want = reference(l, target);
    // fp32 arithmetic over 49k terms: within a few fp32 ulps of magnitudes up to ~1e3.
    const double err = (got.to(torch::kFloat64) - want).abs().max().item<double>();
    const double scale = want.abs().max().item<double>();
    CHECK(err <= 2e-6 * std::max(1.0, scale));
    // And no worse than ATen's own fp32 expression.
    const torch::Tensor f = l.to(torch::kFloat32);
    const torch::Tensor aten = f.gather(1, target.unsqueeze(1)).squeeze(1) - f.logsumexp(-1);
    CHECK(err <= 4.0 * (aten.to(torch::kFloat64) - want).abs().max().item<double>() + 1e-6);
  }
}

TEST_CASE("target_log_prob: strided rows, masked and non-finite logits, bad targets", "[target_log_prob]") {
  using llm4dsr::internal::target_log_prob;
  using llm4dsr::internal::target_log_prob_kernel_applies;
  torch::manual_seed(4);
  const float inf = std::numeric_limits<float>::infinity();
  // Rows of a wider buffer (row stride > V): read in place.
  torch::Tensor wide = torch::randn({6, 300});
  torch::Tensor logits = wide.narrow(1, 10, 257);
  REQUIRE(!logits.is_contiguous());
  torch::Tensor target = torch::tensor({0, 5, 256, 7, 100, 3}, torch::kInt64);
  // Row 1: everything but the target masked to -inf (constrained decoding): log p = 0.
  logits[1].fill_(-inf);
  logits[1][5] = 2.0f;
  // Row 2: all -inf -> logsumexp -inf, log p = -inf - -inf = NaN (as ATen computes it).
  logits[2].fill_(-inf);
  // Row 3: a NaN -> NaN. Row 4: a +inf elsewhere -> log p = -inf.
  logits[3][9] = std::numeric_limits<float>::quiet_NaN();
  logits[4][0] = inf;
  REQUIRE(target_log_prob_kernel_applies(logits, target));
  const torch::Tensor got = target_log_prob(logits, target);
  const torch::Tensor aten = logits.gather(1, target.unsqueeze(1)).squeeze(1) - logits.logsumexp(-1);
  CHECK(got[1].item<float>() == Approx(0.0f).margin(1e-6));
  CHECK(std::isnan(got[2].item<float>()));
  CHECK(std::isnan(aten[2].item<float>()));
  CHECK(std::isnan(got[3].item<float>()));
  CHECK(got[4].item<float>() == -inf);
  CHECK(aten[4].item<float>() == -inf);
  for (int64_t r : {0, 5})
    CHECK(got[r].item<double>() == Approx(reference(logits, target)[r].item<double>()).epsilon(1e-6));

  // Outside the kernel (int32 targets, a 3-d tensor is refused): the ATen expression, same values.
  const torch::Tensor t32 = target.to(torch::kInt32);
  CHECK_FALSE(target_log_prob_kernel_applies(logits, t32));
  CHECK(torch::allclose(target_log_prob(logits.narrow(0, 0, 1), t32.narrow(0, 0, 1)), got.narrow(0, 0, 1), 1e-6, 1e-6));

  CHECK_THROWS_AS(target_log_prob(logits, torch::tensor({0, 5, 257, 7, 100, 3}, torch::kInt64)), llm4dsr::Error);
  CHECK_THROWS_AS(target_log_prob(logits, torch::tensor({-1, 5, 2, 7, 100, 3}, torch::kInt64)), llm4dsr::Error);
  CHECK_THROWS_AS(target_log_prob(logits, torch::tensor({0, 1}, torch::kInt64)), llm4dsr::Error);
}
