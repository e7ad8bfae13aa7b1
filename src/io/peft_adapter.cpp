#include "llm4dsr/io/peft_adapter.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "internal/atomic_output.h"
#include "llm4dsr/error.h"
#include "llm4dsr/io/safetensors.h"

namespace llm4dsr::io {

namespace {

using json = nlohmann::json;

bool present(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

// Older PEFT files carry the adapter name inside keys ("...q_proj.lora_A.default.weight").
std::string strip_adapter_name(std::string key) {
  for (const char* part : {".lora_A.default.", ".lora_B.default."}) {
    auto pos = key.find(part);
    if (pos != std::string::npos) key.erase(pos + 7, 8);  // drop "default."
  }
  return key;
}

}  // namespace

LoraConfig read_adapter_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LLM4DSR_CHECK(in, "cannot open adapter config " << path);
  json j = json::parse(in, nullptr, false);
  LLM4DSR_CHECK(!j.is_discarded() && j.is_object(), path << ": not a JSON object");
  auto str = [&](const char* key, const std::string& fallback) {
    if (!present(j, key)) return fallback;
    LLM4DSR_CHECK(j[key].is_string(), path << ": key '" << key << "' must be a string, found " << j[key].dump());
    return j[key].get<std::string>();
  };
  auto flag = [&](const char* key) {
    if (!present(j, key)) return false;
    LLM4DSR_CHECK(j[key].is_boolean(), path << ": key '" << key << "' must be true or false, found " << j[key].dump());
    return j[key].get<bool>();
  };
  auto number = [&](const char* key, double fallback) {
    // null is not "absent" here: PEFT would compute with None and fail, and a default would quietly
    // change the adapter's scale.
    LLM4DSR_CHECK(!j.contains(key) || !j.at(key).is_null(), path << ": key '" << key << "' is null");
    if (!present(j, key)) return fallback;
    LLM4DSR_CHECK(j[key].is_number(), path << ": key '" << key << "' must be a number, found " << j[key].dump());
    return j[key].get<double>();
  };

  const std::string peft_type = str("peft_type", "LORA");
  LLM4DSR_CHECK(peft_type == "LORA", path << ": peft_type '" << peft_type << "' is not supported (expected LORA)");
  const std::string bias = str("bias", "none");
  LLM4DSR_CHECK(bias == "none", path << ": bias '" << bias << "' is not supported (expected \"none\")");
  LLM4DSR_CHECK(!flag("use_dora"), path << ": use_dora adapters are not supported");
  LLM4DSR_CHECK(!flag("fan_in_fan_out"), path << ": fan_in_fan_out adapters are not supported (Llama uses nn.Linear)");
  if (present(j, "modules_to_save"))
    LLM4DSR_CHECK(j["modules_to_save"].is_array() && j["modules_to_save"].empty(),
                  path << ": modules_to_save " << j["modules_to_save"].dump() << " is not supported");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (present(j, key))
      LLM4DSR_CHECK(j[key].is_object() && j[key].empty(),
                    path << ": per-module '" << key << "' " << j[key].dump() << " is not supported");

  LoraConfig c;
  LLM4DSR_CHECK(present(j, "r") && j["r"].is_number_integer(), path << ": missing integer 'r'");
  c.r = j["r"].get<int64_t>();
  c.alpha = number("lora_alpha", 8.0);
  c.dropout = number("lora_dropout", 0.0);
  c.use_rslora = flag("use_rslora");
  LLM4DSR_CHECK(present(j, "target_modules"), path << ": missing 'target_modules'");
  const json& t = j["target_modules"];
  if (t.is_string()) {
    if (t.get<std::string>() == "all-linear") c.target_modules = {"all-linear"};
    else c.target_regex = t.get<std::string>();
  } else {
    LLM4DSR_CHECK(t.is_array(), path << ": target_modules must be a list or a string, found " << t.dump());
    c.target_modules.clear();
    for (const auto& x : t) {
      LLM4DSR_CHECK(x.is_string(), path << ": target_modules entries must be strings, found " << x.dump());
      c.target_modules.push_back(x.get<std::string>());
    }
  }
  if (present(j, "layers_to_transform")) {
    const json& l = j["layers_to_transform"];
    if (l.is_number_integer()) c.layers_to_transform = {l.get<int64_t>()};
    else {
      LLM4DSR_CHECK(l.is_array(), path << ": layers_to_transform must be an integer or a list, found " << l.dump());
      for (const auto& x : l) {
        LLM4DSR_CHECK(x.is_number_integer(), path << ": layers_to_transform entries must be integers, found " << x.dump());
        c.layers_to_transform.push_back(x.get<int64_t>());
      }
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    LLM4DSR_THROW(path << ": " << e.what());
  }
  return c;
}

void load_peft_adapter(LlamaModel& model, const std::string& folder) {
  namespace fs = std::filesystem;
  const std::string config_path = (fs::path(folder) / "adapter_config.json").string();
  const std::string weights_path = (fs::path(folder) / "adapter_model.safetensors").string();
  LLM4DSR_CHECK(fs::exists(config_path), "PEFT adapter folder " << folder << " has no adapter_config.json");
  LLM4DSR_CHECK(fs::exists(weights_path), "PEFT adapter folder " << folder
                                                                 << " has no adapter_model.safetensors (only safetensors adapters are supported)");
  LoraConfig lora = read_adapter_config(config_path);
  std::map<std::string, torch::Tensor> file;
  for (auto& [name, t] : load_safetensors(weights_path)) file.emplace(strip_adapter_name(name), t);

  try {
    model->add_lora(lora);
  } catch (const Error& e) {  // e.g. target modules that match no projection: the config is to blame
    LLM4DSR_THROW(config_path << ": " << e.what());
  }
  try {
    torch::NoGradGuard no_grad;
    std::set<std::string> used;
    for (auto& [name, param] : model->lora_state()) {
      auto it = file.find(name);
      LLM4DSR_CHECK(it != file.end(), weights_path << ": missing adapter tensor '" << name << "'");
      LLM4DSR_CHECK(it->second.sizes() == param.sizes(), weights_path << ": tensor '" << name << "' has shape "
                                                                      << it->second.sizes() << ", expected " << param.sizes());
      param.copy_(it->second);
      used.insert(name);
    }
    for (const auto& [name, t] : file)
      LLM4DSR_CHECK(used.count(name), weights_path << ": unexpected tensor '" << name
                                                   << "' (not an adapter of the modules adapter_config.json targets)");
  } catch (...) {
    model->remove_lora();
    throw;
  }
}

void save_peft_adapter(LlamaModel& model, const std::string& folder, const std::string& base_model_name_or_path) {
  namespace fs = std::filesystem;
  LLM4DSR_CHECK(model->has_lora(), "save_peft_adapter: the model has no LoRA adapters");
  const LoraConfig& c = model->lora_config();
  nlohmann::ordered_json j;
  j["alpha_pattern"] = json::object();
  j["base_model_name_or_path"] = base_model_name_or_path.empty() ? nlohmann::ordered_json(nullptr)
                                                                 : nlohmann::ordered_json(base_model_name_or_path);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = c.layers_to_transform.empty() ? nlohmann::ordered_json(nullptr)
                                                           : nlohmann::ordered_json(c.layers_to_transform);
  j["lora_alpha"] = c.alpha;
  j["lora_dropout"] = c.dropout;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = c.r;
  j["rank_pattern"] = json::object();
  j["revision"] = nullptr;
  if (!c.target_regex.empty()) j["target_modules"] = c.target_regex;
  else if (c.target_modules.size() == 1 && c.target_modules[0] == "all-linear") j["target_modules"] = "all-linear";
  else j["target_modules"] = c.target_modules;
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = c.use_rslora;
  fs::create_directories(folder);
  {
    internal::AtomicOutput out((fs::path(folder) / "adapter_config.json").string());
    out.stream() << j.dump(2) << "\n";
    out.commit();
  }
  save_safetensors((fs::path(folder) / "adapter_model.safetensors").string(), model->lora_state());
}

}  // namespace llm4dsr::io
