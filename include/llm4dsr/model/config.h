// ModelConfig: the hyper-parameters of a Llama-architecture causal language model, read from and
// written to HuggingFace's config.json (field names as in transformers.LlamaConfig).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llm4dsr {

// Rotary-embedding frequency scaling (HF "rope_scaling" / "rope_parameters").
struct RopeScaling {
  // "default" (none), "linear", "dynamic" (NTK-aware) or "llama3".
  std::string rope_type = "default";
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // grouped-query attention when < num_attention_heads
  int64_t head_dim = 128;            // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v/o projections
  bool mlp_bias = false;        // bias on gate/up/down projections
  double initializer_range = 0.02;
  std::string hidden_act = "silu";
  // The checkpoint's storage dtype ("float32", "bfloat16", "float16"); informational.
  std::string torch_dtype = "float32";
  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};  // HF allows an int or a list
  int64_t pad_token_id = -1;                 // -1: none

  // Throws Error when a value is out of range or inconsistent (e.g. heads not divisible by KV heads).
  void validate() const;

  // From the text of a HuggingFace config.json. Accepts the variants real checkpoints use:
  // rope_theta at top level or inside rope_parameters; rope_scaling or rope_parameters with "type"
  // or "rope_type"; torch_dtype or dtype; missing num_key_value_heads (= num_attention_heads) or
  // head_dim (= hidden_size / num_attention_heads); eos_token_id as an int or a list. `source` names
  // the file in error messages.
  static ModelConfig from_json(const std::string& json_text, const std::string& source = "config.json");
  static ModelConfig from_file(const std::string& path);
  // Small configurations for training from scratch: "tiny" (hidden 64, 2 layers), "small" (hidden
  // 256, 4 layers), "base" (hidden 576, 30 layers: SmolLM2-135M's shape). vocab_size is left to the caller's
  // tokenizer when > 0.
  static ModelConfig preset(const std::string& name, int64_t vocab_size = 0);

  // config.json text that transformers loads as LlamaForCausalLM (model_type "llama").
  std::string to_json() const;
  void save(const std::string& path) const;
};

}  // namespace llm4dsr
