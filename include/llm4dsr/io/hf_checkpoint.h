// HuggingFace checkpoint folders for Llama models: config.json + model.safetensors (or shards listed
// in model.safetensors.index.json), with HF's parameter names (model.embed_tokens.weight,
// model.layers.{i}.self_attn.{q,k,v,o}_proj.weight, model.layers.{i}.mlp.{gate,up,down}_proj.weight,
// model.layers.{i}.{input,post_attention}_layernorm.weight, model.norm.weight, lm_head.weight).
#pragma once

#include <map>
#include <string>

#include <torch/types.h>

#include "llm4dsr/model/llama_model.h"

namespace llm4dsr::io {

// Builds the model from `folder`/config.json and loads its weights, converted to `dtype` on `device`.
LlamaModel load_hf_checkpoint(const std::string& folder, torch::Device device = torch::kCPU,
                              torch::Dtype dtype = torch::kFloat32);

// Copies HF-named tensors into the model's base weights. Every expected key must be present with the
// expected shape; `*.rotary_emb.inv_freq` buffers are ignored, as is lm_head.weight when the model ties
// it to the embedding; any other key is an error. Errors name `source`, the key and both shapes.
void load_hf_weights(LlamaModel& model, const std::map<std::string, torch::Tensor>& weights,
                     const std::string& source);

// Writes config.json and model.safetensors (base weights in the model's dtype, lm_head omitted when
// tied, as transformers does) into `folder`, creating it. Merged LoRA deltas are part of the weights;
// unmerged adapters are not saved here (see peft_adapter.h).
void save_hf_checkpoint(LlamaModel& model, const std::string& folder);

}  // namespace llm4dsr::io
