#include "torch_catch.h"

#include <cmath>

#include <torch/torch.h>

#include "internal/rotary.h"
#include "llm4dsr/error.h"

namespace {

// x * cos + sign * rotate_half(x) * sin in float64, HF's formula with cos/sin [B or 1, T, 1, D].
torch::Tensor reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int sign) {
  const torch::Tensor x64 = x.to(torch::kFloat64);
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x64.narrow(-1, half, half), x64.narrow(-1, 0, half)}, -1);
  return x64 * cos.to(torch::kFloat64).unsqueeze(2) + sign * rotated * sin.to(torch::kFloat64).unsqueeze(2);
}

// HF's cos/sin: cat(freqs, freqs) of positions times inverse frequencies, [rows, T, D].
std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t rows, int64_t T, int64_t D) {
  const torch::Tensor inv = 1.0 / torch::pow(10000.0, torch::arange(0, D, 2, torch::kFloat32) / D);
  const torch::Tensor positions = torch::arange(T, torch::kFloat32).unsqueeze(0) + torch::arange(rows).unsqueeze(1) * 3;
  const torch::Tensor freqs = positions.unsqueeze(-1) * inv;
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

}  // namespace

TEST_CASE("rotate equals HF's rotate-half RoPE for every input, table and output dtype", "[rotary]") {
  using llm4dsr::internal::rotary_kernel_applies;
  using llm4dsr::internal::rotate;
  torch::manual_seed(6);
  const int64_t B = 3, T = 17, H = 5, D = 70;  // D / 2 = 35: the vector loop has a remainder
  // q as attention sees it: a [B, H, T, D] buffer viewed [B, T, H, D] (unit inner stride, others not).
  const torch::Tensor x = torch::randn({B, H, T, D}).mul_(3.0).transpose(1, 2);
  REQUIRE(!x.is_contiguous());
  for (int64_t table_rows : {int64_t{1}, B}) {
    auto [cos, sin] = rope_tables(table_rows, T, D);
    for (auto x_dtype : {torch::kFloat32, torch::kBFloat16}) {
      for (auto table_dtype : {torch::kFloat32, torch::kBFloat16}) {
        for (auto out_dtype : {torch::kFloat32, torch::kBFloat16}) {
          for (int sign : {1, -1}) {
            CAPTURE(table_rows, x_dtype, table_dtype, out_dtype, sign);
            const torch::Tensor xi = x.to(x_dtype), c = cos.to(table_dtype), s = sin.to(table_dtype);
            REQUIRE(rotary_kernel_applies(xi, c, s));
            const torch::Tensor got = rotate(xi, c, s, sign, out_dtype);
            REQUIRE(got.scalar_type() == out_dtype);
            REQUIRE(got.sizes() == x.sizes());
            REQUIRE(got.is_contiguous());
            const torch::Tensor want = reference(xi, c, s, sign);
            const double err = (got.to(torch::kFloat64) - want).abs().max().item<double>();
            // fp32 arithmetic (two products and a sum of values up to ~15): a few fp32 ulps; a bf16
            // output rounds once, half a bf16 ulp of the result (2^-8 relative, 15 * 2^-8 absolute).
            const double bound = out_dtype == torch::kFloat32 ? 1e-5 : 15.0 * std::ldexp(1.0, -8);
            CHECK(err <= bound);
          }
        }
      }
    }
  }
}

TEST_CASE("rotate with sign -1 is the transpose of rotate, hence RoPE's gradient", "[rotary]") {
  using llm4dsr::internal::rotate;
  torch::manual_seed(7);
  const int64_t B = 2, T = 9, H = 3, D = 64;
  auto [cos, sin] = rope_tables(B, T, D);
  const torch::Tensor x = torch::randn({B, T, H, D}), g = torch::randn({B, T, H, D});
  // <R x, g> = <x, R^T g> for the linear map R.
  const double lhs = (rotate(x, cos, sin, 1, torch::kFloat32).to(torch::kFloat64) * g.to(torch::kFloat64)).sum().item<double>();
  const double rhs = (x.to(torch::kFloat64) * rotate(g, cos, sin, -1, torch::kFloat32).to(torch::kFloat64)).sum().item<double>();
  CHECK(std::abs(lhs - rhs) <= 1e-4 * std::max(1.0, std::abs(lhs)));
  // And autograd through the reference agrees element by element.
  torch::Tensor xr = x.to(torch::kFloat64).requires_grad_(true);
  (reference(xr, cos, sin, 1) * g.to(torch::kFloat64)).sum().backward();
  CHECK((rotate(g, cos, sin, -1, torch::kFloat32).to(torch::kFloat64) - xr.grad()).abs().max().item<double>() <= 1e-5);
}

TEST_CASE("rotate: which inputs the kernel takes, and errors", "[rotary]") {
  using llm4dsr::internal::rotary_kernel_applies;
  using llm4dsr::internal::rotate;
  auto [cos, sin] = rope_tables(1, 4, 8);
  const torch::Tensor x = torch::randn({2, 4, 3, 8});
  CHECK(rotary_kernel_applies(x, cos, sin));
  CHECK(!rotary_kernel_applies(x.to(torch::kHalf), cos, sin));                           // no fp16 kernel
  CHECK(!rotary_kernel_applies(torch::randn({2, 4, 8, 3}).transpose(2, 3), cos, sin));   // inner stride 3
  CHECK(!rotary_kernel_applies(torch::randn({2, 4, 3, 7}), cos.narrow(2, 0, 7).contiguous(),
                               sin.narrow(2, 0, 7).contiguous()));                        // odd head dim
  CHECK(!rotary_kernel_applies(x, cos.narrow(1, 0, 3).contiguous(), sin.narrow(1, 0, 3).contiguous()));  // T
  CHECK(!rotary_kernel_applies(x, cos.expand({3, 4, 8}).contiguous(), sin.expand({3, 4, 8}).contiguous()));  // B
  CHECK(!rotary_kernel_applies(x, cos, sin.to(torch::kBFloat16)));                       // mixed tables
  CHECK_THROWS_AS(rotate(x, cos, sin, 2, torch::kFloat32), llm4dsr::Error);
  CHECK_THROWS_AS(rotate(x, cos, sin, 1, torch::kHalf), llm4dsr::Error);
  CHECK_THROWS_AS(rotate(x.to(torch::kHalf), cos, sin, 1, torch::kFloat32), llm4dsr::Error);
}
