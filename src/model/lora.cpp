#include "llm4dsr/model/lora.h"

#include <cmath>
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

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::linear(x, weight, bias);
  if (!lora_A.defined() || merged_) return y;
  torch::Tensor h = x.to(lora_A.scalar_type());
  if (dropout_ > 0.0 && is_training()) h = torch::dropout(h, dropout_, /*train=*/true);
  torch::Tensor delta = torch::linear(torch::linear(h, lora_A), lora_B) * scaling_;
  return y + delta.to(y.scalar_type());
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
