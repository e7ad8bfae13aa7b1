#include "torch_catch.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <string>
#include <vector>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/model/lora.h"
#include "llm4dsr/runtime.h"
#include "model/onednn_linear.h"
#include "model/packed_linear.h"
#include "test_support.h"

using namespace llm4dsr;
using llm4dsr::testing::Fp32GemmScope;

namespace {

// Whether oneDNN's linear ops are here to test; says why not when they are not.
bool onednn_here() {
  if (llm4dsr::detail::onednn_ops().present() && at::globalContext().userEnabledMkldnn()) return true;
  WARN("this libtorch has no oneDNN linear ops: fp32 products through oneDNN not tested");
  return false;
}

// Largest error relative to the mean magnitude of the float64 reference.
double relative_error(const torch::Tensor& got, const torch::Tensor& reference) {
  return (got.to(torch::kFloat64) - reference).abs().max().item<double>() / reference.abs().mean().item<double>();
}

// fp32 with K in the hundreds: a few 1e-6 of the mean output (measured 6.6e-6 for oneDNN, 2.7e-6 for
// MKL at K = 576); one bf16 pass would be near 1e-2.
constexpr double kFp32Tolerance = 2e-5;

}  // namespace

TEST_CASE("fp32 GEMM setting: names, resolution of auto, and the environment's errors", "[onednn_linear]") {
  CHECK(parse_fp32_gemm("auto") == Fp32Gemm::kAuto);
  CHECK(parse_fp32_gemm("onednn") == Fp32Gemm::kOneDnn);
  CHECK(parse_fp32_gemm("aten") == Fp32Gemm::kATen);
  for (Fp32Gemm g : {Fp32Gemm::kAuto, Fp32Gemm::kOneDnn, Fp32Gemm::kATen}) CHECK(parse_fp32_gemm(to_string(g)) == g);
  CHECK_THROWS_WITH(parse_fp32_gemm("mkl"), Catch::Contains("unknown fp32 GEMM library 'mkl'") &&
                                                Catch::Contains("'auto', 'onednn' or 'aten'"));
  const Fp32Gemm before = fp32_gemm();
  CHECK(before != Fp32Gemm::kAuto);  // always reported resolved
  {
    Fp32GemmScope aten(Fp32Gemm::kATen);
    CHECK(fp32_gemm() == Fp32Gemm::kATen);
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_gemm());
    {
      Fp32GemmScope automatic(Fp32Gemm::kAuto);
      // auto: oneDNN exactly on x86 CPUs with AVX-512 whose vendor is not Intel.
      const bool expect_onednn = !llm4dsr::detail::intel_cpu() && llm4dsr::detail::cpu_has("avx512_f") &&
                                 llm4dsr::detail::onednn_ops().present() && at::globalContext().userEnabledMkldnn();
#if !(defined(__x86_64__) || defined(__i386__))
      CHECK(fp32_gemm() == Fp32Gemm::kATen);
#else
      CHECK(fp32_gemm() == (expect_onednn ? Fp32Gemm::kOneDnn : Fp32Gemm::kATen));
#endif
    }
    CHECK(fp32_gemm() == Fp32Gemm::kATen);
  }
  CHECK(fp32_gemm() == before);
}

TEST_CASE("onednn_fp32_linear: products and every gradient equal float64's within fp32 rounding",
          "[onednn_linear]") {
  if (!onednn_here()) return;
  Fp32GemmScope onednn(Fp32Gemm::kOneDnn);
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({3, 37, 96}), w = torch::randn({80, 96}) * 0.1, b = torch::randn({80});
  const torch::Tensor r = torch::randn({3, 37, 80}), g = torch::randn({3, 37, 80});
  struct Variant {
    bool bias, residual, frozen;
  };
  for (const Variant v : {Variant{false, false, false}, Variant{true, false, false}, Variant{false, true, false},
                          Variant{false, true, true}, Variant{true, false, true}}) {
    INFO("bias " << v.bias << ", residual " << v.residual << ", frozen weight " << v.frozen);
    // Without recorded gradients.
    const torch::Tensor x64 = x.to(torch::kFloat64), w64 = w.to(torch::kFloat64);
    torch::Tensor expected = torch::matmul(x64, w64.t());
    if (v.bias) expected = expected + b.to(torch::kFloat64);
    if (v.residual) expected = expected + r.to(torch::kFloat64);
    {
      torch::NoGradGuard no_grad;
      const torch::Tensor y =
          llm4dsr::detail::onednn_fp32_linear(x, w, v.bias ? b : torch::Tensor(), v.residual ? r : torch::Tensor());
      REQUIRE(y.sizes() == torch::IntArrayRef({3, 37, 80}));
      CHECK(relative_error(y, expected) <= kFp32Tolerance);
    }
    // With gradients: against float64 autograd of the same expression.
    auto leaf = [](const torch::Tensor& t, bool grad) { return t.clone().requires_grad_(grad); };
    torch::Tensor xs = leaf(x, true), ws = leaf(w, !v.frozen), bs = leaf(b, true), rs = leaf(r, true);
    torch::Tensor y = llm4dsr::detail::onednn_fp32_linear(xs, ws, v.bias ? bs : torch::Tensor(), v.residual ? rs : torch::Tensor());
    CHECK(y.grad_fn()->name().find("OneDnnLinearFunction") != std::string::npos);
    CHECK(relative_error(y.detach(), expected) <= kFp32Tolerance);
    (y * g).sum().backward();
    torch::Tensor xd = leaf(x64, true), wd = leaf(w64, !v.frozen), bd = leaf(b.to(torch::kFloat64), true),
                  rd = leaf(r.to(torch::kFloat64), true);
    torch::Tensor yd = torch::matmul(xd, wd.t());
    if (v.bias) yd = yd + bd;
    if (v.residual) yd = yd + rd;
    (yd * g.to(torch::kFloat64)).sum().backward();
    CHECK(relative_error(xs.grad(), xd.grad()) <= kFp32Tolerance);
    if (v.frozen) {
      CHECK_FALSE(ws.grad().defined());
    } else {
      REQUIRE(ws.grad().defined());
      CHECK(ws.grad().sizes() == w.sizes());
      CHECK(relative_error(ws.grad(), wd.grad()) <= kFp32Tolerance);
    }
    CHECK(bs.grad().defined() == v.bias);
    if (v.bias) CHECK(relative_error(bs.grad(), bd.grad()) <= kFp32Tolerance);
    CHECK(rs.grad().defined() == v.residual);
    if (v.residual) CHECK(torch::equal(rs.grad(), g));
  }
  CHECK_FALSE(llm4dsr::detail::onednn_failed());  // nothing above fell back to ATen's product
}

TEST_CASE("onednn_fp32_product_applies: fp32 CPU products of 4 rows or more, or with a large weight",
          "[onednn_linear]") {
  if (!onednn_here()) return;
  const torch::Tensor w = torch::randn({64, 32});
  {
    Fp32GemmScope onednn(Fp32Gemm::kOneDnn);
    CHECK(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({4, 32}), w));
    CHECK(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({2, 2, 32}), w));  // rows counted over leading dims
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({3, 32}), w));
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({1, 1, 32}), w));
    // The large-weight rule: one row with a 4M-element weight (an lm_head's size).
    const torch::Tensor large = torch::zeros({llm4dsr::detail::kOneDnnFp32LargeWeight / 64, 64});
    CHECK(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({1, 64}), large));
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({1, 64}), large.narrow(0, 0, large.size(0) - 1)));
    // Other dtypes, shapes that do not fit, empty inputs.
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({8, 32}).to(torch::kBFloat16), w.to(torch::kBFloat16)));
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({8, 32}, torch::kFloat64), w.to(torch::kFloat64)));
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({8, 31}), w));
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({8, 32}), torch::randn({32})));
    CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({0, 32}), w));
    // Autocast runs its own (bf16) product.
    {
      at::autocast::set_autocast_enabled(at::kCPU, true);
      const bool under_autocast = llm4dsr::detail::onednn_fp32_product_applies(torch::randn({8, 32}), w);
      at::autocast::set_autocast_enabled(at::kCPU, false);
      CHECK_FALSE(under_autocast);
    }
  }
  Fp32GemmScope aten(Fp32Gemm::kATen);
  CHECK_FALSE(llm4dsr::detail::onednn_fp32_product_applies(torch::randn({8, 32}), w));
}

TEST_CASE("LlamaModel fp32: logits and LoRA / full training gradients agree between oneDNN and ATen products",
          "[onednn_linear][model]") {
  if (!onednn_here()) return;
  ModelConfig c = ModelConfig::preset("tiny", 3000);
  c.num_hidden_layers = 2;
  const torch::Tensor ids = torch::randint(0, c.vocab_size, {3, 11}, torch::TensorOptions().dtype(torch::kInt64));
  for (const bool lora : {false, true}) {
    INFO((lora ? "LoRA on every projection (frozen base)" : "every parameter trained (tied lm_head gets dW)"));
    LlamaModel model(c, torch::kCPU, torch::kFloat32, /*seed=*/7);
    model->eval();
    if (lora) {
      LoraConfig lc;
      lc.target_modules = {"all-linear"};
      lc.dropout = 0.0;
      model->add_lora(lc);
      torch::NoGradGuard no_grad;
      for (auto& t : model->lora_parameters()) t.normal_(0, 0.1);
    }
    struct Run {
      torch::Tensor logits, inference_logits;
      std::string lm_head_node;
      std::vector<torch::Tensor> grads;
    };
    auto run = [&](Fp32Gemm gemm) {
      Fp32GemmScope scope(gemm);
      Run out;
      {
        torch::NoGradGuard no_grad;
        out.inference_logits = model->forward(ids);
      }
      out.logits = model->forward(ids);
      out.lm_head_node = out.logits.grad_fn()->name();
      torch::log_softmax(out.logits, -1).select(-1, 5).sum().backward();
      for (auto& p : model->parameters())
        if (p.requires_grad()) {
          out.grads.push_back(p.grad().clone());
          p.mutable_grad() = torch::Tensor();
        }
      return out;
    };
    const Run aten = run(Fp32Gemm::kATen), onednn = run(Fp32Gemm::kOneDnn);
    CHECK_FALSE(llm4dsr::detail::onednn_failed());
    CHECK(onednn.lm_head_node.find("OneDnnLinearFunction") != std::string::npos);
    CHECK(aten.lm_head_node.find("OneDnnLinearFunction") == std::string::npos);
    const double scale = aten.logits.abs().max().item<double>();
    CHECK((onednn.logits - aten.logits).abs().max().item<double>() <= 1e-5 * scale);
    CHECK((onednn.inference_logits - aten.inference_logits).abs().max().item<double>() <= 1e-5 * scale);
    REQUIRE(onednn.grads.size() == aten.grads.size());
    REQUIRE_FALSE(aten.grads.empty());
    for (size_t i = 0; i < aten.grads.size(); ++i) {
      CAPTURE(i);
      const double g = aten.grads[i].abs().max().item<double>();
      CHECK(g > 0);
      CHECK((onednn.grads[i] - aten.grads[i]).abs().max().item<double>() <= 1e-4 * g);
    }
  }
}

TEST_CASE("LoraLinear: fp32 base products go through oneDNN in forward and forward_add, the adapter on top",
          "[onednn_linear][lora]") {
  if (!onednn_here()) return;
  Fp32GemmScope onednn(Fp32Gemm::kOneDnn);
  torch::manual_seed(9);
  LoraLinear linear(48, 40, /*with_bias=*/false, torch::TensorOptions().dtype(torch::kFloat32));
  torch::nn::init::normal_(linear->weight, 0, 0.1);
  const torch::Tensor x = torch::randn({2, 9, 48}), residual = torch::randn({2, 9, 40});
  const torch::Tensor x64 = x.to(torch::kFloat64), w64 = linear->weight.detach().to(torch::kFloat64);
  // A trainable base weight: the product is oneDNN's autograd node.
  torch::Tensor y = linear->forward(x);
  CHECK(y.grad_fn()->name().find("OneDnnLinearFunction") != std::string::npos);
  CHECK(relative_error(y.detach(), torch::matmul(x64, w64.t())) <= kFp32Tolerance);
  torch::Tensor z = linear->forward_add(x, residual);
  CHECK(z.grad_fn()->name().find("OneDnnLinearFunction") != std::string::npos);
  CHECK(relative_error(z.detach(), residual.to(torch::kFloat64) + torch::matmul(x64, w64.t())) <= kFp32Tolerance);
  // With an adapter (frozen base): base product through oneDNN, the adapter's product added on top.
  at::Generator gen = at::detail::createCPUGenerator(3);
  linear->add_adapter(4, 8.0, 0.0, false, gen);
  {
    torch::NoGradGuard no_grad;
    linear->lora_B.normal_(0, 0.5);
  }
  const torch::Tensor a64 = linear->lora_A.detach().to(torch::kFloat64), b64 = linear->lora_B.detach().to(torch::kFloat64);
  const torch::Tensor expected = residual.to(torch::kFloat64) + torch::matmul(x64, w64.t()) +
                                 2.0 * torch::matmul(torch::matmul(x64, a64.t()), b64.t());
  const torch::Tensor xs = x.clone().requires_grad_(true);
  z = linear->forward_add(xs, residual);
  CHECK(relative_error(z.detach(), expected) <= kFp32Tolerance);
  z.sum().backward();
  const torch::Tensor expected_grad_x =
      (w64 + 2.0 * torch::matmul(b64, a64)).sum(0).expand({2, 9, 48});  // d sum(z) / dx, per row
  CHECK(relative_error(xs.grad(), expected_grad_x) <= kFp32Tolerance);
  {
    torch::NoGradGuard no_grad;
    CHECK(relative_error(linear->forward_add(x, residual.clone(), /*in_place=*/true), expected) <= kFp32Tolerance);
  }
  CHECK_FALSE(llm4dsr::detail::onednn_failed());
}
