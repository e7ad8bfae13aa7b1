#include "torch_catch.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "internal/bf16_kernels.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/lora.h"
#include "llm4dsr/runtime.h"
#include "model/bf16x3_linear.h"

namespace {

// Sets torch's float32 matmul precision for one scope and puts the previous state back: the legacy
// setting to "highest" (the default; it cannot be read once the per-backend ones are set), then the
// per-backend matmul settings that setFloat32MatmulPrecision also changes, as they were.
class MatmulPrecision {
 public:
  explicit MatmulPrecision(const std::string& name)
      : mkldnn_(at::globalContext().float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL)),
        cuda_(at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL)) {
    at::globalContext().setFloat32MatmulPrecision(name);
  }
  ~MatmulPrecision() {
    at::globalContext().setFloat32MatmulPrecision("highest");
    at::globalContext().setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, mkldnn_);
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, cuda_);
  }

 private:
  at::Float32Precision mkldnn_;
  at::Float32Precision cuda_;
};

uint16_t bits_of(c10::BFloat16 v) {
  uint16_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

// x W^T in float64 from the bf16 halves torch itself rounds to: xh.wh + xl.wh + xh.wl, the sum the split
// product is defined to compute (its only other error is the fp32 accumulation).
torch::Tensor emulated_split_product(const torch::Tensor& x, const torch::Tensor& w) {
  auto halves = [](const torch::Tensor& t) {
    const torch::Tensor hi = t.to(torch::kBFloat16).to(torch::kFloat32);
    const torch::Tensor lo = (t - hi).to(torch::kBFloat16).to(torch::kFloat32);
    return std::make_pair(hi.to(torch::kFloat64), lo.to(torch::kFloat64));
  };
  const auto [xh, xl] = halves(x);
  const auto [wh, wl] = halves(w);
  return torch::matmul(xh, wh.t()) + torch::matmul(xl, wh.t()) + torch::matmul(xh, wl.t());
}

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

// Whether split products run here under the precision in force; says why not when they do not.
bool split_products_run() {
  if (llm4dsr::detail::bf16x3_requested()) return true;
  WARN("no AMX-BF16 or no gemm_bf16bf16f32 in this libtorch: split products not tested");
  return false;
}

}  // namespace

TEST_CASE("split_bf16: the halves are c10's bf16 roundings of x and of x - hi", "[bf16x3]") {
  torch::manual_seed(3);
  std::vector<float> x;
  const torch::Tensor normal = torch::randn({4000}) * torch::pow(10.0, torch::randint(-30, 30, {4000}).to(torch::kFloat32));
  for (int64_t i = 0; i < normal.numel(); ++i) x.push_back(normal[i].item<float>());
  for (float v : {0.0f, -0.0f, 1.0f, -3.0f, 1e-40f, -1e-42f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::quiet_NaN(), 1.00390625f,
                  1.01171875f /* ties at the bf16 grid: to even */})
    x.push_back(v);
  std::vector<c10::BFloat16> hi(x.size()), lo(x.size());
  llm4dsr::internal::split_bf16(x.data(), hi.data(), lo.data(), static_cast<int64_t>(x.size()));
  int64_t nonzero_lo = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    CAPTURE(i, x[i]);
    const c10::BFloat16 want_hi(x[i]);
    if (std::isnan(x[i])) {
      CHECK(std::isnan(static_cast<float>(hi[i])));
      continue;
    }
    CHECK(bits_of(hi[i]) == bits_of(want_hi));
    const c10::BFloat16 want_lo(x[i] - static_cast<float>(want_hi));
    CHECK(bits_of(lo[i]) == bits_of(want_lo));
    nonzero_lo += static_cast<float>(lo[i]) != 0.0f;
    // hi + lo carries about 16 significant bits (normal numbers, away from the overflow edge).
    if (std::fabs(x[i]) > 1e-30f && std::fabs(x[i]) < 1e30f) {
      const double rest = static_cast<double>(x[i]) - static_cast<float>(hi[i]) - static_cast<float>(lo[i]);
      CHECK(std::fabs(rest) <= std::ldexp(std::fabs(static_cast<double>(x[i])), -16));
    }
  }
  CHECK(nonzero_lo > 3000);  // the low halves carry information: the check above is not vacuous
}

TEST_CASE("bf16x3_linear: equals the three bf16 products summed, far closer to fp32 than one bf16 pass",
          "[bf16x3]") {
  MatmulPrecision high("high");
  if (!split_products_run()) return;
  torch::manual_seed(11);
  const torch::Tensor x = torch::randn({200, 96});
  const torch::Tensor w = torch::randn({80, 96}) * 0.1;
  const torch::Tensor bias = torch::randn({80});
  const torch::Tensor split = llm4dsr::detail::bf16x3_weight(w);
  REQUIRE(llm4dsr::detail::is_bf16x3_weight(split, w));
  CHECK_FALSE(llm4dsr::detail::is_bf16x3_weight(split, w.to(torch::kBFloat16)));

  const torch::Tensor y = llm4dsr::detail::bf16x3_linear(x, split, torch::Tensor());
  REQUIRE(y.sizes() == torch::IntArrayRef({200, 80}));
  const torch::Tensor emulated = emulated_split_product(x, w);
  const torch::Tensor exact = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
  const double scale = exact.abs().mean().item<double>();
  // The definition, to fp32 accumulation; a wrong pairing of halves (xl.wl for xh.wl, say) is off by ~1e-3.
  CHECK(max_abs(y.to(torch::kFloat64) - emulated) <= 2e-6 * scale);
  const double split_error = max_abs(y.to(torch::kFloat64) - exact) / scale;
  const double bf16_error =
      max_abs(torch::matmul(x.to(torch::kBFloat16).to(torch::kFloat64), w.to(torch::kBFloat16).to(torch::kFloat64).t()) -
              exact) /
      scale;
  CHECK(split_error <= 1e-4);
  CHECK(split_error * 50 < bf16_error);

  // Bias; batch dimensions; a residual summed by the GEMM, copied or in place.
  const torch::Tensor x3 = x.view({4, 50, 96});
  const torch::Tensor with_bias = llm4dsr::detail::bf16x3_linear(x3, split, bias);
  REQUIRE(with_bias.sizes() == torch::IntArrayRef({4, 50, 80}));
  CHECK(max_abs(with_bias - (y + bias).view({4, 50, 80})) <= 1e-5);
  torch::Tensor residual = torch::randn({4, 50, 80});
  const torch::Tensor kept = residual.clone();
  const torch::Tensor summed = llm4dsr::detail::bf16x3_linear(x3, split, torch::Tensor(), residual, false);
  CHECK(torch::equal(residual, kept));
  CHECK(max_abs(summed - (kept + y.view({4, 50, 80}))) <= 1e-5);
  const auto version = residual._version();
  const torch::Tensor in_place = llm4dsr::detail::bf16x3_linear(x3, split, torch::Tensor(), residual, true);
  CHECK(in_place.data_ptr() == residual.data_ptr());
  CHECK(residual._version() > version);  // an in-place write, as autograd must see it
  CHECK(max_abs(in_place - summed) <= 1e-6);

  CHECK_THROWS_AS(llm4dsr::detail::bf16x3_linear(torch::randn({70, 95}), split, torch::Tensor()), llm4dsr::Error);
  CHECK_THROWS_AS(llm4dsr::detail::bf16x3_linear(x, split, bias, residual.view({200, 80})), llm4dsr::Error);
}

TEST_CASE("bf16x3: only under precision \"high\", without gradients or autocast, from 256 rows", "[bf16x3]") {
  const torch::Tensor w = torch::randn({32, 48});
  const torch::Tensor rows = torch::randn({256, 48});
  torch::NoGradGuard no_grad;  // so that only the precision decides in the first two checks
  {
    MatmulPrecision highest("highest");
    CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(rows, w));
  }
  {
    MatmulPrecision medium("medium");  // a single bf16 pass: torch's own path, not ours
    CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(rows, w));
  }
  MatmulPrecision high("high");
  CHECK(llm4dsr::bf16x3_matmul_available() == llm4dsr::detail::bf16x3_requested());
  if (!split_products_run()) return;
  CHECK(llm4dsr::detail::bf16x3_product_applies(rows, w));
  CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(rows.narrow(0, 0, 255), w));
  CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(torch::randn({256, 0}), torch::randn({32, 0})));
  {
    // Autocast's own bf16 pass (and result dtype) wins.
    const bool was = at::autocast::is_autocast_enabled(at::kCPU);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(rows, w));
    at::autocast::set_autocast_enabled(at::kCPU, was);
  }
  CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(rows.to(torch::kBFloat16), w));
  {
    torch::AutoGradMode grad(true);
    CHECK_FALSE(llm4dsr::detail::bf16x3_product_applies(rows, w));
  }
}

TEST_CASE("LoraLinear under precision \"high\": split copy made once, follows the weight, adapter on top",
          "[bf16x3][lora]") {
  MatmulPrecision high("high");
  if (!split_products_run()) return;
  torch::manual_seed(5);
  llm4dsr::LoraLinear layer(64, 40, false, torch::TensorOptions().dtype(torch::kFloat32));
  {
    torch::NoGradGuard no_grad;
    layer->weight.normal_(0.0, 0.1);
  }
  const torch::Tensor x = torch::randn({3, 100, 64});
  auto exact = [&](const torch::Tensor& weight) {
    return torch::matmul(x.to(torch::kFloat64), weight.to(torch::kFloat64).t());
  };
  torch::NoGradGuard no_grad;
  const torch::Tensor y = layer(x);
  REQUIRE(layer->has_packed_weight());
  const double scale = exact(layer->weight).abs().mean().item<double>();
  CHECK(max_abs(y.to(torch::kFloat64) - emulated_split_product(x, layer->weight)) <= 2e-6 * scale);

  // An in-place change of the weight (version counter) makes a new split copy.
  layer->weight.mul_(-2.0);
  const torch::Tensor doubled = layer(x);
  CHECK(max_abs(doubled.to(torch::kFloat64) - emulated_split_product(x, layer->weight)) <= 4e-6 * scale);

  // residual + product (forward_add) and an adapter's low-rank term on top of the split product.
  const torch::Tensor residual = torch::randn({3, 100, 40});
  CHECK(max_abs(layer->forward_add(x, residual) - (residual + doubled)) <= 1e-5);
  at::Generator gen = at::detail::createCPUGenerator(7);
  layer->add_adapter(4, 8.0, 0.0, false, gen);
  layer->lora_B.normal_(0.0, 0.1);
  layer->eval();
  const torch::Tensor adapted = layer(x);
  const torch::Tensor low_rank = torch::matmul(torch::matmul(x, layer->lora_A.t()), layer->lora_B.t()) * 2.0;
  CHECK(max_abs(adapted - (doubled + low_rank)) <= 1e-4);

  // Under bf16 autocast the product stays autocast's, and the adapter's bf16 branch adds onto it.
  {
    const bool was = at::autocast::is_autocast_enabled(at::kCPU);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    torch::Tensor autocast_out;
    CHECK_NOTHROW(autocast_out = layer(x));
    at::autocast::set_autocast_enabled(at::kCPU, was);
    CHECK(autocast_out.scalar_type() == torch::kBFloat16);
    CHECK(max_abs(autocast_out.to(torch::kFloat32) - adapted) <= 0.02 * max_abs(adapted));
  }

  // Precision back to "highest": fp32 products again, bit for bit torch's.
  MatmulPrecision highest("highest");
  layer->remove_adapter();
  CHECK(torch::equal(layer(x), torch::linear(x, layer->weight)));
}
