#include "torch_catch.h"

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "internal/swiglu.h"
#include "llm4dsr/error.h"

namespace {

struct Reference {
  torch::Tensor out, d_gate, d_up;  // float64
};

// silu(gate) * up and its gradients by float64 autograd, from the same (rounded) inputs.
Reference reference(const torch::Tensor& gate, const torch::Tensor& up, const torch::Tensor& grad) {
  torch::Tensor g = gate.to(torch::kFloat64).requires_grad_(true);
  torch::Tensor u = up.to(torch::kFloat64).requires_grad_(true);
  torch::Tensor out = torch::silu(g) * u;
  out.backward(grad.to(torch::kFloat64));
  return {out.detach(), g.grad(), u.grad()};
}

double max_abs(const torch::Tensor& a) { return a.abs().max().item<double>(); }

}  // namespace

TEST_CASE("swiglu forward and backward equal float64 autograd in fp32 and bf16", "[swiglu]") {
  using namespace llm4dsr::internal;
  torch::manual_seed(5);
  // Gate values as wide as trained MLPs reach (both sigmoid tails: exp of a large negative argument
  // and 1 / (1 + tiny)), an odd size so that the vector loops have remainders, and several parallel tasks.
  const int64_t rows = 37, width = 4099;
  const torch::Tensor gate = torch::randn({rows, width}) * 6.0;
  gate[0].uniform_(-100.0, 100.0);
  const torch::Tensor up = torch::randn({rows, width}) * 2.0;
  const torch::Tensor grad = torch::randn({rows, width});

  SECTION("fp32: within a few fp32 ulps of each output's own scale") {
    // Relative to each value, down to 1e-35 (the gate's far negative tail, where silu underflows
    // towards fp32's subnormals); below that, absolutely.
    REQUIRE(swiglu_kernel_applies(gate, up));
    const Reference want = reference(gate, up, grad);
    const torch::Tensor out = swiglu_forward(gate, up);
    REQUIRE(out.scalar_type() == torch::kFloat32);
    REQUIRE(out.sizes() == gate.sizes());
    CHECK(max_abs((out.to(torch::kFloat64) - want.out) / (want.out.abs() + 1e-35)) <= 1e-6);
    auto [d_gate, d_up] = swiglu_backward(grad, gate, up);
    CHECK(max_abs((d_up.to(torch::kFloat64) - want.d_up) / (want.d_up.abs() + 1e-35)) <= 1e-6);
    // d_gate = grad * up * s (1 + g (1 - s)) cancels near g = -1.28: the bound is relative to the
    // size of its factors, as any fp32 evaluation's is.
    const torch::Tensor g64 = gate.to(torch::kFloat64);
    const torch::Tensor factor_scale = (grad.to(torch::kFloat64) * up.to(torch::kFloat64)).abs() *
                                       (1.0 + g64.abs()) * torch::sigmoid(g64) + 1e-35;
    CHECK(max_abs((d_gate.to(torch::kFloat64) - want.d_gate) / factor_scale) <= 1e-6);
  }

  SECTION("bf16: each output rounded once from fp32 arithmetic, closer than ATen's bf16 chain") {
    const torch::Tensor g = gate.to(torch::kBFloat16), u = up.to(torch::kBFloat16), dy = grad.to(torch::kBFloat16);
    REQUIRE(swiglu_kernel_applies(g, u));
    const Reference want = reference(g, u, dy);
    const torch::Tensor out = swiglu_forward(g, u);
    REQUIRE(out.scalar_type() == torch::kBFloat16);
    auto [d_gate, d_up] = swiglu_backward(dy, g, u);
    REQUIRE(d_gate.scalar_type() == torch::kBFloat16);
    // One rounding to bf16 (8 significant bits): at most half a unit in the last place, 2^-8 relative,
    // with slack for the fp32 arithmetic before it landing on the other side of a rounding boundary.
    const double bf16_half_ulp = std::ldexp(1.0, -8);
    CHECK(max_abs((out.to(torch::kFloat64) - want.out) / (want.out.abs() + 1e-30)) <= bf16_half_ulp * 1.01);
    CHECK(max_abs((d_up.to(torch::kFloat64) - want.d_up) / (want.d_up.abs() + 1e-30)) <= bf16_half_ulp * 1.01);
    const torch::Tensor finite = want.d_gate.abs() > 1e-30;
    CHECK(max_abs(((d_gate.to(torch::kFloat64) - want.d_gate) / (want.d_gate.abs() + 1e-30)).masked_select(finite)) <=
          bf16_half_ulp * 1.01);
    // ATen's bf16 autograd (silu, then mul) rounds silu(g) first: its mean error is larger.
    torch::Tensor ga = g.clone().requires_grad_(true), ua = u.clone().requires_grad_(true);
    torch::Tensor aten = torch::silu(ga) * ua;
    aten.backward(dy);
    const auto mean_err = [](const torch::Tensor& x, const torch::Tensor& ref) {
      return (x.to(torch::kFloat64) - ref).abs().mean().item<double>();
    };
    CHECK(mean_err(out, want.out) < mean_err(aten.detach(), want.out));
    CHECK(mean_err(d_gate, want.d_gate) < mean_err(ga.grad(), want.d_gate));
  }

  SECTION("a gradient with other strides or dtype is read as its values") {
    auto [d_gate, d_up] = swiglu_backward(grad, gate, up);
    const torch::Tensor strided = grad.t().contiguous().t();
    REQUIRE(!strided.is_contiguous());
    auto [d_gate2, d_up2] = swiglu_backward(strided, gate, up);
    CHECK(torch::equal(d_gate, d_gate2));
    CHECK(torch::equal(d_up, d_up2));
  }
}

TEST_CASE("swiglu: NaN propagates; which inputs the kernels take", "[swiglu]") {
  using namespace llm4dsr::internal;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  torch::Tensor gate = torch::tensor({0.5f, nan, -3.0f, 2.0f}), up = torch::tensor({1.0f, 1.0f, nan, 0.0f});
  const torch::Tensor out = swiglu_forward(gate, up);
  CHECK(!std::isnan(out[0].item<float>()));
  CHECK(std::isnan(out[1].item<float>()));
  CHECK(std::isnan(out[2].item<float>()));
  CHECK(out[3].item<float>() == 0.0f);
  auto [d_gate, d_up] = swiglu_backward(torch::ones({4}), gate, up);
  CHECK(std::isnan(d_gate[1].item<float>()));
  CHECK(std::isnan(d_up[1].item<float>()));
  CHECK(std::isnan(d_gate[2].item<float>()));
  CHECK(!std::isnan(d_up[2].item<float>()));

  const torch::Tensor a = torch::randn({4, 6});
  CHECK(swiglu_kernel_applies(a, a.to(torch::kFloat32)));
  CHECK(!swiglu_kernel_applies(a.to(torch::kHalf), a.to(torch::kHalf)));        // no fp16 kernel
  CHECK(!swiglu_kernel_applies(a, a.to(torch::kBFloat16)));                     // mixed dtypes
  CHECK(!swiglu_kernel_applies(a.t(), a.t()));                                  // strided
  CHECK(!swiglu_kernel_applies(a, torch::randn({6, 4})));                       // other sizes
  CHECK_THROWS_AS(swiglu_forward(a.t(), a.t()), llm4dsr::Error);
  CHECK_THROWS_AS(swiglu_backward(torch::ones({3}), a, a), llm4dsr::Error);
}
