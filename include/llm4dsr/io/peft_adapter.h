// PEFT LoRA adapter folders: adapter_config.json + adapter_model.safetensors, with PEFT's key names
// (base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight: lora_A [r, in], lora_B [out, r]).
#pragma once

#include <string>

#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/model/lora.h"

namespace llm4dsr::io {

// The LoRA settings of an adapter_config.json. Reads r, lora_alpha, lora_dropout, target_modules (a
// list, "all-linear", or a regular expression string), layers_to_transform, use_rslora; rejects what
// this library cannot reproduce (peft_type other than LORA, bias other than "none", use_dora,
// fan_in_fan_out, modules_to_save, non-empty rank_pattern / alpha_pattern); ignores unknown keys.
LoraConfig read_adapter_config(const std::string& path);

// Adds adapters as the folder's config says and loads their weights: every adapter tensor the config
// implies must be in the file with shape [r, in] / [out, r], and the file may hold nothing else.
// Throws when the model already has adapters.
void load_peft_adapter(LlamaModel& model, const std::string& folder);

// Writes adapter_config.json (task_type CAUSAL_LM, peft_type LORA) and adapter_model.safetensors.
void save_peft_adapter(LlamaModel& model, const std::string& folder,
                       const std::string& base_model_name_or_path = "");

}  // namespace llm4dsr::io
