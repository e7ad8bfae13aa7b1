#include "torch_catch.h"

#include <cmath>

#include <torch/torch.h>

#include "internal/causal_attention.h"
#include "llm4dsr/error.h"

namespace {

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got.to(torch::kFloat64) - want).norm() / want.norm()).item<double>();
}

// Forward and gradients of causal grouped-query attention in float64 (HF's repeat_kv, then the
// textbook softmax), for the same bf16 inputs, and the bf16 kernel's.
void check_against_float64(int64_t B, int64_t H, int64_t KV, int64_t T, int64_t D, double out_bound,
                           double grad_bound) {
  torch::manual_seed(B * 1000 + T);
  // Queries and keys laid out as the model's projections leave them, [B, T, heads, D] seen as
  // [B, heads, T, D]; logits of a few units, as trained models have.
  const torch::Tensor q = (torch::randn({B, T, H, D}) * 1.2).to(torch::kBFloat16).transpose(1, 2);
  const torch::Tensor k = (torch::randn({B, T, KV, D}) * 1.2).to(torch::kBFloat16).transpose(1, 2);
  const torch::Tensor v = torch::randn({B, T, KV, D}).to(torch::kBFloat16).transpose(1, 2);
  const torch::Tensor d_out = torch::randn({B, H, T, D});
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  REQUIRE(llm4dsr::internal::bf16_causal_attention_applies(q, k, v));

  torch::Tensor q64 = q.to(torch::kFloat64).requires_grad_(true);
  torch::Tensor k64 = k.to(torch::kFloat64).requires_grad_(true);
  torch::Tensor v64 = v.to(torch::kFloat64).requires_grad_(true);
  const torch::Tensor kr = k64.repeat_interleave(H / KV, 1), vr = v64.repeat_interleave(H / KV, 1);
  const torch::Tensor future = torch::ones({T, T}, torch::kBool).triu(1);
  const torch::Tensor want = torch::matmul(q64, kr.transpose(-1, -2)).mul(scale).masked_fill(future, -INFINITY)
                                 .softmax(-1).matmul(vr);
  want.backward(d_out.to(torch::kFloat64));

  torch::Tensor qb = q.detach().requires_grad_(true), kb = k.detach().requires_grad_(true),
                vb = v.detach().requires_grad_(true);
  const torch::Tensor got = llm4dsr::internal::bf16_causal_attention(qb, kb, vb, scale);
  REQUIRE(got.scalar_type() == torch::kBFloat16);
  REQUIRE(got.sizes() == torch::IntArrayRef({B, H, T, D}));
  got.backward(d_out.to(torch::kBFloat16));
  REQUIRE(qb.grad().sizes() == q.sizes());
  REQUIRE(kb.grad().sizes() == k.sizes());
  REQUIRE(vb.grad().sizes() == v.sizes());
  CHECK(relative_error(got, want.detach()) <= out_bound);
  CHECK(relative_error(qb.grad(), q64.grad()) <= grad_bound);
  CHECK(relative_error(kb.grad(), k64.grad()) <= grad_bound);
  CHECK(relative_error(vb.grad(), v64.grad()) <= grad_bound);
  // Causality of the gradient: the last position's query sees every key, the first key is seen by
  // every query, and the last key only by the last query; its value gradient is P[T-1, T-1] * dO[T-1].
  const torch::Tensor last_v = v64.grad().select(2, T - 1);
  CHECK(relative_error(vb.grad().select(2, T - 1), last_v) <= grad_bound * 2);
}

}  // namespace

TEST_CASE("bf16 causal attention: output and gradients equal float64 attention within bf16 accuracy",
          "[causal_attention]") {
  // One output rounding to bf16: relative norm about 2^-9. Gradients: P, dS and dO V^T are rounded
  // to bf16 (measured 0.5%; an unrounded-P error or a wrong softmax derivative is far above 1%).
  SECTION("grouped-query heads (3 query heads per KV head), odd T") { check_against_float64(3, 6, 2, 37, 32, 4e-3, 1e-2); }
  SECTION("one KV head per query head") { check_against_float64(2, 4, 4, 19, 64, 4e-3, 1e-2); }
  SECTION("long sequences: the backward works through (sequence, KV head) pairs in slices") {
    // 4 query heads per KV head x 1,100^2 x 4 bytes = 19 MB of scores per pair: slices of 3 pairs and 1.
    check_against_float64(2, 8, 2, 1100, 16, 4e-3, 1e-2);
  }
}

TEST_CASE("bf16 causal attention: which inputs it takes", "[causal_attention]") {
  using llm4dsr::internal::bf16_causal_attention_applies;
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16);
  const torch::Tensor q = torch::randn({2, 6, 5, 8}, bf16), k = torch::randn({2, 3, 5, 8}, bf16);
  CHECK(bf16_causal_attention_applies(q, k, k));
  CHECK(!bf16_causal_attention_applies(q.to(torch::kFloat32), k, k));                  // fp32 queries
  CHECK(!bf16_causal_attention_applies(q, torch::randn({2, 4, 5, 8}, bf16), torch::randn({2, 4, 5, 8}, bf16)));  // 6 % 4
  CHECK(!bf16_causal_attention_applies(q, torch::randn({2, 3, 7, 8}, bf16), torch::randn({2, 3, 7, 8}, bf16)));  // cached keys
  CHECK(!bf16_causal_attention_applies(q.narrow(2, 0, 1), k.narrow(2, 0, 1), k.narrow(2, 0, 1)));  // one token
  CHECK_THROWS_AS(llm4dsr::internal::bf16_causal_attention(q.to(torch::kFloat32), k, k, 0.35), llm4dsr::Error);
}
