#include "llm4dsr/io/hf_checkpoint.h"

#include <filesystem>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "llm4dsr/io/safetensors.h"

namespace llm4dsr::io {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    case torch::kFloat64: return "float64";
    default: LLM4DSR_THROW("no HF dtype name for " << dtype);
  }
}

std::string join_first(const std::vector<std::string>& names, size_t limit) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < limit; ++i) os << (i ? ", " : "") << "'" << names[i] << "'";
  if (names.size() > limit) os << " and " << (names.size() - limit) << " more";
  return os.str();
}

}  // namespace

void load_hf_weights(LlamaModel& model, const std::map<std::string, torch::Tensor>& weights, const std::string& source) {
  torch::NoGradGuard no_grad;
  auto expected = model->hf_state();
  std::set<std::string> used;
  std::vector<std::string> missing;
  for (auto& [name, param] : expected) {
    auto it = weights.find(name);
    if (it == weights.end()) {
      missing.push_back(name);
      continue;
    }
    LLM4DSR_CHECK(it->second.sizes() == param.sizes(), source << ": tensor '" << name << "' has shape "
                                                               << it->second.sizes() << ", expected " << param.sizes());
    LLM4DSR_CHECK(it->second.is_floating_point(), source << ": tensor '" << name << "' has dtype "
                                                         << it->second.scalar_type() << ", expected a floating type");
    param.copy_(it->second);
    used.insert(name);
  }
  LLM4DSR_CHECK(missing.empty(), source << ": missing " << missing.size() << " weight(s): " << join_first(missing, 5));
  std::vector<std::string> unexpected;
  for (const auto& [name, t] : weights) {
    if (used.count(name) || ends_with(name, "rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && model->config().tie_word_embeddings) {
      LLM4DSR_CHECK(t.sizes() == model->lm_head_weight.sizes(), source << ": tensor 'lm_head.weight' has shape "
                                                                       << t.sizes() << ", expected "
                                                                       << model->lm_head_weight.sizes());
      continue;  // tied: the embedding is the head
    }
    unexpected.push_back(name);
  }
  LLM4DSR_CHECK(unexpected.empty(), source << ": unexpected weight(s) for a Llama model: " << join_first(unexpected, 5));
}

LlamaModel load_hf_checkpoint(const std::string& folder, torch::Device device, torch::Dtype dtype) {
  const std::string config_path = (std::filesystem::path(folder) / "config.json").string();
  LLM4DSR_CHECK(std::filesystem::exists(config_path), "HF checkpoint folder " << folder << " has no config.json");
  ModelConfig config = ModelConfig::from_file(config_path);
  LlamaModel model(config, device, dtype, /*seed=*/0, /*initialize=*/false);
  auto weights = load_safetensors_checkpoint(folder);
  load_hf_weights(model, weights, folder);
  model->eval();
  return model;
}

void save_hf_checkpoint(LlamaModel& model, const std::string& folder) {
  std::filesystem::create_directories(folder);
  ModelConfig config = model->config();
  config.torch_dtype = dtype_name(model->dtype());
  config.save((std::filesystem::path(folder) / "config.json").string());
  save_safetensors((std::filesystem::path(folder) / "model.safetensors").string(), model->hf_state());
}

}  // namespace llm4dsr::io
