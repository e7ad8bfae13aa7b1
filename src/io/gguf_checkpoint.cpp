#include "llm4dsr/io/gguf_checkpoint.h"

#include <vector>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf_tensor.h"
#include "llm4dsr/io/hf_checkpoint.h"

namespace llm4dsr::io {

namespace {

const char* kArch = "llama";

std::string key(const char* suffix) { return std::string(kArch) + "." + suffix; }

// llama.cpp's converter stores each Q/K head with its two rotary halves interleaved; this restores
// HF's [first half; second half] order: view rows as [heads, D/2, 2], swap the last two, flatten.
torch::Tensor unpermute_rows(const torch::Tensor& w, int64_t n_heads) {
  const int64_t rows = w.size(0);
  std::vector<int64_t> shape = {n_heads, rows / n_heads / 2, 2};
  for (int64_t d = 1; d < w.dim(); ++d) shape.push_back(w.size(d));
  return w.reshape(shape).transpose(1, 2).reshape(w.sizes()).contiguous();
}

}  // namespace

ModelConfig model_config_from_gguf(const GGUFFile& f) {
  const std::string where = "GGUF file " + f.path();
  const std::string arch = f.get_string("general.architecture");
  LLM4DSR_CHECK(arch == kArch, where << ": general.architecture is '" << arch << "'; only 'llama' models are supported");
  ModelConfig c;
  c.hidden_size = f.get_int(key("embedding_length"));
  c.num_hidden_layers = f.get_int(key("block_count"));
  c.intermediate_size = f.get_int(key("feed_forward_length"));
  c.num_attention_heads = f.get_int(key("attention.head_count"));
  LLM4DSR_CHECK(c.num_attention_heads > 0, where << ": " << key("attention.head_count") << " must be > 0, got "
                                                 << c.num_attention_heads);
  c.num_key_value_heads = f.get_int(key("attention.head_count_kv"), c.num_attention_heads);
  const int64_t default_head_dim = c.hidden_size / c.num_attention_heads;
  const int64_t rope_dims = f.get_int(key("rope.dimension_count"), default_head_dim);
  c.head_dim = f.get_int(key("attention.key_length"), rope_dims);
  LLM4DSR_CHECK(rope_dims == c.head_dim, where << ": " << key("rope.dimension_count") << " = " << rope_dims
                                               << " differs from the head size " << c.head_dim
                                               << "; partial rotary embeddings are not supported");
  LLM4DSR_CHECK(f.get_int(key("attention.value_length"), c.head_dim) == c.head_dim,
                where << ": " << key("attention.value_length") << " differs from the key length " << c.head_dim);
  c.max_position_embeddings = f.get_int(key("context_length"), c.max_position_embeddings);
  c.rms_norm_eps = f.get_float(key("attention.layer_norm_rms_epsilon"));
  c.rope_theta = f.get_float(key("rope.freq_base"), 10000.0);

  // Older converters wrote only rope.scale_linear.
  std::string scaling = f.get_string(key("rope.scaling.type"), "");
  if (scaling.empty()) scaling = f.has(key("rope.scale_linear")) ? "linear" : "none";
  const double factor = f.get_float(key("rope.scaling.factor"), f.get_float(key("rope.scale_linear"), 1.0));
  LLM4DSR_CHECK(scaling == "none" || scaling == "linear", where << ": " << key("rope.scaling.type") << " '" << scaling
                                                                << "' is not supported (expected none or linear)");
  if (scaling == "linear" && factor != 1.0) {
    c.rope_scaling.rope_type = "linear";
    c.rope_scaling.factor = factor;
  }
  LLM4DSR_CHECK(!f.has_tensor("rope_freqs.weight"),
                where << ": tensor 'rope_freqs.weight' (llama3 rope frequency factors) is not supported");

  LLM4DSR_CHECK(f.has_tensor("token_embd.weight"), where << " has no tensor 'token_embd.weight'");
  const auto& embd = f.tensor("token_embd.weight");
  LLM4DSR_CHECK(embd.shape.size() == 2, where << ": token_embd.weight must be 2-D, found " << embd.shape.size() << "-D");
  c.vocab_size = embd.shape[0];
  if (f.has(key("vocab_size")))
    LLM4DSR_CHECK(f.get_int(key("vocab_size")) == c.vocab_size,
                  where << ": " << key("vocab_size") << " = " << f.get_int(key("vocab_size"))
                        << " but token_embd.weight has " << c.vocab_size << " rows");
  c.tie_word_embeddings = !f.has_tensor("output.weight");
  c.attention_bias = f.has_tensor("blk.0.attn_q.bias");
  c.mlp_bias = f.has_tensor("blk.0.ffn_up.bias");
  c.hidden_act = "silu";
  c.torch_dtype = "float32";  // dequantised
  c.bos_token_id = f.get_int("tokenizer.ggml.bos_token_id", c.bos_token_id);
  if (f.has("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {f.get_int("tokenizer.ggml.eos_token_id")};
  c.pad_token_id = f.get_int("tokenizer.ggml.padding_token_id", -1);
  try {
    c.validate();
  } catch (const Error& e) {
    LLM4DSR_THROW(where << ": invalid model configuration: " << e.what());
  }
  return c;
}

std::map<std::string, torch::Tensor> hf_state_dict_from_gguf(const GGUFFile& f, torch::Dtype dtype) {
  const ModelConfig c = model_config_from_gguf(f);
  const std::string where = "GGUF file " + f.path();
  const int64_t q_rows = c.num_attention_heads * c.head_dim, kv_rows = c.num_key_value_heads * c.head_dim;

  struct Expected {
    std::string hf_name;
    std::vector<int64_t> shape;
    int64_t unpermute_heads = 0;  // > 0: Q or K rows to un-interleave
  };
  std::map<std::string, Expected> expected;
  auto add = [&](const std::string& gguf_name, const std::string& hf_name, std::vector<int64_t> shape,
                 int64_t heads = 0) { expected[gguf_name] = {hf_name, std::move(shape), heads}; };
  add("token_embd.weight", "model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  add("output_norm.weight", "model.norm.weight", {c.hidden_size});
  if (!c.tie_word_embeddings) add("output.weight", "lm_head.weight", {c.vocab_size, c.hidden_size});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string g = "blk." + std::to_string(i) + ".";
    const std::string h = "model.layers." + std::to_string(i) + ".";
    add(g + "attn_q.weight", h + "self_attn.q_proj.weight", {q_rows, c.hidden_size}, c.num_attention_heads);
    add(g + "attn_k.weight", h + "self_attn.k_proj.weight", {kv_rows, c.hidden_size}, c.num_key_value_heads);
    add(g + "attn_v.weight", h + "self_attn.v_proj.weight", {kv_rows, c.hidden_size});
    add(g + "attn_output.weight", h + "self_attn.o_proj.weight", {c.hidden_size, q_rows});
    if (c.attention_bias) {
      add(g + "attn_q.bias", h + "self_attn.q_proj.bias", {q_rows}, c.num_attention_heads);
      add(g + "attn_k.bias", h + "self_attn.k_proj.bias", {kv_rows}, c.num_key_value_heads);
      add(g + "attn_v.bias", h + "self_attn.v_proj.bias", {kv_rows});
      add(g + "attn_output.bias", h + "self_attn.o_proj.bias", {c.hidden_size});
    }
    add(g + "ffn_gate.weight", h + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
    add(g + "ffn_up.weight", h + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
    add(g + "ffn_down.weight", h + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
    if (c.mlp_bias) {
      add(g + "ffn_gate.bias", h + "mlp.gate_proj.bias", {c.intermediate_size});
      add(g + "ffn_up.bias", h + "mlp.up_proj.bias", {c.intermediate_size});
      add(g + "ffn_down.bias", h + "mlp.down_proj.bias", {c.hidden_size});
    }
    add(g + "attn_norm.weight", h + "input_layernorm.weight", {c.hidden_size});
    add(g + "ffn_norm.weight", h + "post_attention_layernorm.weight", {c.hidden_size});
  }

  for (const auto& t : f.tensors())
    LLM4DSR_CHECK(expected.count(t.name), where << ": unexpected tensor '" << t.name
                                                << "' for a llama model with " << c.num_hidden_layers << " layers");
  std::map<std::string, torch::Tensor> out;
  for (const auto& [gguf_name, e] : expected) {
    LLM4DSR_CHECK(f.has_tensor(gguf_name), where << ": missing tensor '" << gguf_name << "' (for " << e.hf_name << ")");
    const auto& info = f.tensor(gguf_name);
    LLM4DSR_CHECK(info.shape == e.shape, where << ": tensor '" << gguf_name << "' has shape " << torch::IntArrayRef(info.shape)
                                               << ", expected " << torch::IntArrayRef(e.shape) << " for " << e.hf_name);
    torch::Tensor w = gguf_tensor(f, gguf_name, torch::kFloat32);
    if (e.unpermute_heads > 0) w = unpermute_rows(w, e.unpermute_heads);
    out.emplace(e.hf_name, dtype == torch::kFloat32 ? w : w.to(dtype));
  }
  return out;
}

LlamaModel load_gguf_checkpoint(const std::string& path, torch::Device device, torch::Dtype dtype) {
  GGUFFile f(path);
  LlamaModel model(model_config_from_gguf(f), device, dtype, /*seed=*/0, /*initialize=*/false);
  load_hf_weights(model, hf_state_dict_from_gguf(f, dtype), path);
  model->eval();
  return model;
}

}  // namespace llm4dsr::io
