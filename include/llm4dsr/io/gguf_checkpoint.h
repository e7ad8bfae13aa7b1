// Llama models from GGUF files (llama.cpp's naming and layout), mapped to HuggingFace's.
//
// Config: `llama.*` metadata (embedding_length, block_count, feed_forward_length, attention.head_count
// [_kv], attention.layer_norm_rms_epsilon, context_length, rope.freq_base, rope.dimension_count /
// attention.key_length, rope.scaling.*), vocab size from token_embd.weight, bos/eos/pad from
// tokenizer.ggml.*, tied embeddings when there is no output.weight, as transformers' GGUF loader reads
// them.
//
// Weights: token_embd -> model.embed_tokens, blk.N.attn_{q,k,v,output} -> self_attn.{q,k,v,o}_proj,
// blk.N.ffn_{gate,up,down} -> mlp.*_proj, blk.N.attn_norm / ffn_norm -> input_layernorm /
// post_attention_layernorm, output_norm -> model.norm, output -> lm_head. llama.cpp's converter
// interleaves the two rotary halves of every Q and K head (row h*D + 2i + j holds HF row
// h*D + j*D/2 + i); that permutation is undone, exactly as transformers does.
#pragma once

#include <map>
#include <string>

#include <torch/types.h>

#include "llm4dsr/io/gguf.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"

namespace llm4dsr::io {

// Throws Error naming the file and key when the architecture is not "llama", a required key is
// missing or has the wrong type, or a feature cannot be represented (YaRN / LongRoPE scaling, llama3
// rope frequency factors in rope_freqs.weight, partial rotary dimensions).
ModelConfig model_config_from_gguf(const GGUFFile& file);

// Every tensor under its HF name, dequantised and converted to `dtype`, Q/K un-permuted; lm_head.weight
// only when the file has output.weight (untied). Shapes are checked against model_config_from_gguf;
// unknown tensor names are errors.
std::map<std::string, torch::Tensor> hf_state_dict_from_gguf(const GGUFFile& file,
                                                             torch::Dtype dtype = torch::kFloat32);

// A ready model (eval mode) built from the file's config and weights.
LlamaModel load_gguf_checkpoint(const std::string& path, torch::Device device = torch::kCPU,
                                torch::Dtype dtype = torch::kFloat32);

}  // namespace llm4dsr::io
