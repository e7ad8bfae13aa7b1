#include "llm4dsr/model/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <regex>

#include <torch/torch.h>

#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

const char* const kProjections[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A parameter holder registered as "lora_A" / "lora_B" so names read "...q_proj.lora_A.weight", as in PEFT files.
std::shared_ptr<torch::nn::Module> holder(torch::Tensor& weight) {
  auto m = std::make_shared<torch::nn::Module>();
  weight = m->register_parameter("weight", weight);
  return m;
}

// splitmix64 (Steele, Lea and Flood, 2014) as a counter-based generator: draw j depends only on
// (seed, j), so a dropout mask is the same however the elements are split across threads.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Inverted dropout of the adapter input on CPU: x / (1 - p) where kept, 0 elsewhere, kept with
// probability 1 - p (to 2^-32). torch::dropout draws a float Bernoulli tensor, divides it and multiplies (three
// passes and two full-size temporaries, several ms per call at [1024, 576]); here one pass draws the
// mask and writes the output, and the mask kept for backward is one byte per element. The seed is
// drawn from the default CPU generator, so seeding it (the Trainer does, and checkpoints its state)
// makes the masks reproducible.
struct LoraDropout : public torch::autograd::Function<LoraDropout> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double p) {
    const torch::Tensor input = x.contiguous();
    torch::Tensor out = torch::empty_like(input);
    torch::Tensor mask = torch::empty(input.sizes(), input.options().dtype(torch::kBool));
    const double keep = 1.0 - p;
    const uint64_t threshold = static_cast<uint64_t>(std::llround(keep * 4294967296.0));
    uint64_t seed;
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      seed = gen.get<at::CPUGeneratorImpl>()->random64();
    }
    const int64_t n = input.numel();
    bool* m = mask.data_ptr<bool>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "lora_dropout", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const scalar_t* in = input.const_data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      const opmath_t scale = static_cast<opmath_t>(1.0 / keep);
      // Each 64-bit draw decides two elements.
      at::parallel_for(0, (n + 1) / 2, 16384, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          const uint64_t r = splitmix64(seed + static_cast<uint64_t>(j) * 0x9e3779b97f4a7c15ULL);
          for (int64_t i = 2 * j; i < std::min<int64_t>(n, 2 * j + 2); ++i) {
            const bool kept = ((i & 1) ? (r >> 32) : (r & 0xffffffffULL)) < threshold;
            m[i] = kept;
            o[i] = kept ? static_cast<scalar_t>(static_cast<opmath_t>(in[i]) * scale) : scalar_t(0);
          }
        }
      });
    });
    ctx->save_for_backward({mask});
    ctx->saved_data["scale"] = 1.0 / keep;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor mask = ctx->get_saved_variables()[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    const torch::Tensor g = grads[0].contiguous();
    torch::Tensor dx = torch::empty_like(g);
    const bool* m = mask.const_data_ptr<bool>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "lora_dropout_backward", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const scalar_t* gi = g.const_data_ptr<scalar_t>();
      scalar_t* o = dx.data_ptr<scalar_t>();
      const opmath_t s = static_cast<opmath_t>(scale);
      at::parallel_for(0, g.numel(), 32768, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          o[i] = m[i] ? static_cast<scalar_t>(static_cast<opmath_t>(gi[i]) * s) : scalar_t(0);
      });
    });
    return {dx, torch::Tensor()};
  }
};

}  // namespace

double LoraConfig::scaling() const { return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

void LoraConfig::validate() const {
  LLM4DSR_CHECK(r > 0, "LoraConfig: r must be > 0, got " << r);
  LLM4DSR_CHECK(dropout >= 0.0 && dropout < 1.0, "LoraConfig: dropout must be in [0, 1), got " << dropout);
  if (!target_regex.empty()) {
    try {
      std::regex re(target_regex);
    } catch (const std::regex_error& e) {
      LLM4DSR_THROW("LoraConfig: target_regex '" << target_regex << "' is not a valid regular expression: " << e.what());
    }
    return;
  }
  LLM4DSR_CHECK(!target_modules.empty(), "LoraConfig: target_modules is empty");
  for (const auto& t : target_modules) {
    if (t == "all-linear") {
      LLM4DSR_CHECK(target_modules.size() == 1, "LoraConfig: 'all-linear' must be the only target module");
      continue;
    }
    bool known = false;
    for (const char* p : kProjections) known = known || ends_with(t, p);
    LLM4DSR_CHECK(known, "LoraConfig: target module '"
                             << t << "' names no projection of a Llama model (expected q_proj, k_proj, v_proj, o_proj, "
                                     "gate_proj, up_proj, down_proj or all-linear)");
  }
}

bool LoraConfig::matches(const std::string& module_name, int64_t layer_index) const {
  if (!layers_to_transform.empty() &&
      std::find(layers_to_transform.begin(), layers_to_transform.end(), layer_index) == layers_to_transform.end())
    return false;
  if (!target_regex.empty()) return std::regex_match(module_name, std::regex(target_regex));
  for (const auto& t : target_modules) {
    if (t == "all-linear") {
      for (const char* p : kProjections)
        if (ends_with(module_name, std::string(".") + p)) return true;
      continue;
    }
    if (module_name == t || ends_with(module_name, "." + t)) return true;
  }
  return false;
}

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, bool with_bias, torch::TensorOptions options)
    : in_features_(in_features), out_features_(out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}, options));
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) { return add_lora(torch::linear(x, weight, bias), x); }

torch::Tensor LoraLinearImpl::forward_add(const torch::Tensor& x, const torch::Tensor& residual, bool in_place) {
  // One GEMM with beta = 1 instead of a product followed by an elementwise sum: the output is written
  // once and, in place, no [tokens, out] tensor is allocated at all.
  // Not under autocast: it would run the folded GEMM, residual included, in bf16, where HF keeps the
  // residual stream in fp32 (its fp32 + bf16 sum promotes).
  const bool gemm = !bias.defined() && residual.scalar_type() == weight.scalar_type() && residual.is_contiguous() &&
                    residual.size(-1) == out_features_ && x.size(-1) == in_features_ &&
                    !at::autocast::is_autocast_enabled(x.device().type());
  if (!gemm) {
    torch::Tensor y = forward(x);
    return in_place ? residual.add_(y) : residual + y;
  }
  const torch::Tensor x2 = x.reshape({-1, in_features_});
  const torch::Tensor r2 = residual.view({-1, out_features_});
  torch::Tensor out;
  if (in_place) {
    r2.addmm_(x2, weight.t());
    out = residual;
  } else {
    out = at::addmm(r2, x2, weight.t()).view(residual.sizes());
  }
  return add_lora(out, x);
}

torch::Tensor LoraLinearImpl::add_lora(const torch::Tensor& y, const torch::Tensor& x) {
  if (!lora_A.defined() || merged_) return y;
  torch::Tensor h = x.to(lora_A.scalar_type());
  if (dropout_ > 0.0 && is_training())
    h = h.device().is_cpu() ? LoraDropout::apply(h, dropout_) : torch::dropout(h, dropout_, /*train=*/true);
  // The scale goes on the rank-r intermediate ([tokens, r]) rather than on the [tokens, out] product.
  const torch::Tensor down = torch::linear(h, lora_A).reshape({-1, rank_}) * scaling_;
  const bool same_dtype = y.scalar_type() == lora_B.scalar_type();
  if (!at::GradMode::is_enabled()) {
    if (same_dtype && y.is_contiguous()) {
      y.view({-1, out_features_}).addmm_(down, lora_B.t());
      return y;
    }
    // A bf16/fp16 base with fp32 adapters: the in-place sum is computed in fp32 and rounded once.
    return y.add_(torch::mm(down, lora_B.t()).view(y.sizes()));
  }
  if (same_dtype) return at::addmm(y.reshape({-1, out_features_}), down, lora_B.t()).view(y.sizes());
  return (y + torch::mm(down, lora_B.t()).view(y.sizes())).to(y.scalar_type());
}

void LoraLinearImpl::add_adapter(int64_t r, double alpha, double dropout, bool use_rslora, at::Generator& generator) {
  LLM4DSR_CHECK(!lora_A.defined(), "LoraLinear: an adapter is already present; remove it first");
  LLM4DSR_CHECK(r > 0, "LoraLinear: r must be > 0, got " << r);
  rank_ = r;
  scaling_ = use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
  dropout_ = dropout;
  merged_ = false;
  const auto base = weight.scalar_type();
  const auto dtype = (base == torch::kBFloat16 || base == torch::kFloat16) ? torch::kFloat32 : base;
  // kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
  const double a = std::sqrt(5.0);
  const double bound = std::sqrt(2.0 / (1.0 + a * a)) * std::sqrt(3.0 / double(in_features_));
  torch::Tensor A = torch::empty({r, in_features_}, torch::kFloat32);
  A.uniform_(-bound, bound, generator);
  lora_A = A.to(weight.device(), dtype);
  lora_B = torch::zeros({out_features_, r}, torch::TensorOptions().dtype(dtype).device(weight.device()));
  register_module("lora_A", holder(lora_A));
  register_module("lora_B", holder(lora_B));
  weight.set_requires_grad(false);
  if (bias.defined()) bias.set_requires_grad(false);
}

void LoraLinearImpl::remove_adapter() {
  if (!lora_A.defined()) return;
  unmerge();
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = torch::Tensor();
  lora_B = torch::Tensor();
  rank_ = 0;
  scaling_ = 0.0;
  dropout_ = 0.0;
}

void LoraLinearImpl::merge() {
  LLM4DSR_CHECK(lora_A.defined(), "LoraLinear: merge() without an adapter");
  if (merged_) return;
  torch::NoGradGuard no_grad;
  auto delta = torch::matmul(lora_B.to(torch::kFloat32), lora_A.to(torch::kFloat32)) * scaling_;
  weight.copy_((weight.to(torch::kFloat32) + delta).to(weight.scalar_type()));
  merged_ = true;
}

void LoraLinearImpl::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  auto delta = torch::matmul(lora_B.to(torch::kFloat32), lora_A.to(torch::kFloat32)) * scaling_;
  weight.copy_((weight.to(torch::kFloat32) - delta).to(weight.scalar_type()));
  merged_ = false;
}

}  // namespace llm4dsr
