// LlamaModel: a Llama-architecture causal language model that reproduces HuggingFace's
// LlamaForCausalLM numerically (rotate-half RoPE, RMSNorm in fp32, grouped-query attention through
// scaled_dot_product_attention, SwiGLU MLP, tied or untied lm_head).
//
// Batches are left-padded for scoring and generation: attention_mask marks tokens (1) and pads (0),
// and position ids follow HF (cumsum(mask) - 1, 0 at pads), so a padded row gives the same values at
// its tokens as the row alone. Without recorded gradients the pads are not computed at all (the
// projections and the MLP run on the real tokens only; see LlamaModelImpl::run_layers) and their
// positions in the hidden states and logits hold zeros, unless logits are asked for at a pad. A
// KVCache makes decoding incremental with results equal to a full forward. Module and parameter
// names equal HF's without the leading "model." (lm_head keeps its name), so checkpoints map one to
// one (see io/hf_checkpoint.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "llm4dsr/model/config.h"
#include "llm4dsr/model/kv_cache.h"
#include "llm4dsr/model/lora.h"

namespace llm4dsr {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, torch::TensorOptions options);
  // x / sqrt(mean(x^2) + eps) computed in fp32, cast back to x's dtype, then scaled by weight.
  // On CPU (fp32/bf16/fp16) one row-wise pass computes it, and its gradient has its own row-wise
  // backward; HF's step-by-step form streams and allocates several full-size tensors each way.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Per-layer inputs shared by every attention layer of one forward.
struct AttentionContext {
  torch::Tensor cos, sin;  // [B, T, head_dim], in the activations' dtype
  torch::Tensor mask;      // [B, 1, T, S] bool (true = attend) or undefined
  bool is_causal = false;  // no mask needed beyond causality (no pads, no cache)
  KVCache* cache = nullptr;
  // Packed inference: when defined, the layers' activations are [1, N, ...], only the batch's N real
  // tokens in row-major order, and token_index (int64 [N]) holds each one's flat index b * T + t in
  // the [batch_size, width] batch, and query_rows (int64 [batch_size, width]) the inverse: each
  // position's packed row, -1 at pads. Attention alone sees the padded layout (cos/sin are then
  // [1, N, head_dim]; mask and cache as above).
  torch::Tensor token_index, query_rows;
  int64_t batch_size = 0, width = 0;
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const ModelConfig& config, int64_t layer_index, torch::TensorOptions options);
  // o_proj(attend(x)).
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx);
  // The attention output before o_proj, [B, T, heads * head_dim].
  torch::Tensor attend(const torch::Tensor& x, const AttentionContext& ctx);
  LoraLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t layer_index_, num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  LlamaMLPImpl(const ModelConfig& config, torch::TensorOptions options);
  // down(silu(gate(x)) * up(x))
  torch::Tensor forward(const torch::Tensor& x);
  // silu(gate(x)) * up(x), the input of down_proj (in place in gate's output when no gradient is recorded).
  torch::Tensor activation(const torch::Tensor& x);
  LoraLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const ModelConfig& config, int64_t layer_index, torch::TensorOptions options);
  // h = x + attn(norm(x)); h + mlp(norm(h)). The residual sums are folded into the o_proj and
  // down_proj GEMMs (C += A B); x itself is never modified.
  // keep_positions (int64, in [0, T): [K] for every row or [B, K] per row): only those positions go
  // on after attention (o_proj, MLP), returning [B, K, H]; for the last layer of a forward whose
  // logits are read at a few positions (its keys/values still cover every position).
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, const torch::Tensor& keep_positions = {});
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  // Weights drawn as HF initialises them (normal(0, initializer_range) for embeddings and
  // projections, ones for norms) from a CPU generator seeded with `seed`, so the same seed gives the
  // same model on every device.
  // initialize = false leaves the weights uninitialised (for loaders that overwrite every one).
  explicit LlamaModelImpl(const ModelConfig& config, torch::Device device = torch::kCPU,
                          torch::Dtype dtype = torch::kFloat32, uint64_t seed = 0, bool initialize = true);

  // Final hidden states (after the last RMSNorm) [B, T, hidden].
  // input_ids: int64 [B, T] on the model's device.
  // attention_mask: [B, T] (new tokens only) or [B, past + T] (HF style, when a cache holds `past`
  //   positions); 1 = token, 0 = pad; undefined = all tokens.
  // cache: when given, keys/values of the new positions are appended and attention covers the cached
  //   ones; the cache's length advances by T.
  torch::Tensor forward_hidden(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                               KVCache* cache = nullptr);
  // forward_hidden with the positions and the attention pattern given explicitly, for layouts a 2D
  // mask cannot express: several continuations packed into one row after a cached prefix (exact
  // scoring teacher-forces all of a sequence's titles in one row, each title seeing the prefix up to
  // its own context and its own earlier tokens, at the positions that follow that context). HF takes
  // the same as position_ids with a 4D attention mask.
  // position_ids: int64 [B, T], the RoPE positions of the new tokens.
  // allowed: bool [B, 1, T, past + T], true = the query may attend to the key; each query must allow
  //   at least one key (a pad query may simply allow itself).
  // token_mask: [B, T], 1 = token, 0 = pad, recorded in the cache for later steps (undefined = all 1).
  torch::Tensor forward_hidden_packed(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                                      const torch::Tensor& allowed, KVCache* cache = nullptr,
                                      const torch::Tensor& token_mask = {});
  // lm_head on hidden states [B, T, H]. positions (int64, optional): [K] for the same positions in every row
  // or [B, K] per row; negative values count from the end. Returns [B, T, V] or [B, K, V].
  torch::Tensor logits_from_hidden(const torch::Tensor& hidden, const torch::Tensor& positions = {});
  // Logits [B, T, vocab] (or [B, K, vocab] at `positions`), in the model's dtype. Without recorded
  // gradients, only the positions read pass the last layer's o_proj and MLP, the norm and the lm_head.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        KVCache* cache = nullptr, const torch::Tensor& positions = {});

  // HF position ids for the new T tokens given the mask of all S = past + T positions: cumsum - 1, 0 at pads.
  static torch::Tensor position_ids_from_mask(const torch::Tensor& full_mask, int64_t new_tokens);

  // A cache sized for this model on its device and dtype.
  KVCache make_cache(int64_t batch_size, int64_t max_length) const;

  const ModelConfig& config() const { return config_; }
  // Error unless every id of `ids` (int64, on the CPU) is in [0, vocab_size). Forward runs it on CPU ids;
  // on a GPU it would cost a device sync per call, so ids bound for one are checked on the host first.
  void check_token_ids(const torch::Tensor& ids) const;
  torch::Device device() const { return device_; }
  torch::Dtype dtype() const { return dtype_; }
  // Moves every parameter (LoRA adapters keep fp32 on a bf16/fp16 base).
  void to_device_dtype(torch::Device device, torch::Dtype dtype);

  // Every projection by HF module name ("model.layers.3.self_attn.q_proj"), in layer order.
  std::vector<std::pair<std::string, LoraLinear>> projections() const;
  // Adds adapters to the projections `config` selects and freezes every other parameter.
  // Throws when adapters are present or when no module matches.
  void add_lora(const LoraConfig& config);
  // Removes adapters (unmerging first) and unfreezes the base weights.
  void remove_lora();
  bool has_lora() const { return has_lora_; }
  const LoraConfig& lora_config() const { return lora_config_; }
  void merge_lora();
  void unmerge_lora();
  // Adapter tensors by PEFT name ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").
  std::vector<std::pair<std::string, torch::Tensor>> lora_state() const;
  std::vector<torch::Tensor> lora_parameters() const;

  // bf16 inference on the CPU reads each projection's weight and the lm_head through a copy reordered
  // once for oneDNN (LoraLinearImpl::inference_weight): faster products for as much memory again as
  // those weights. Off: the copies are dropped and products read the weights themselves. On by default.
  void set_weight_packing(bool enabled);
  bool weight_packing() const;

  // Base weights by HF name (model.embed_tokens.weight, ..., lm_head.weight when untied), excluding adapters.
  std::vector<std::pair<std::string, torch::Tensor>> hf_state() const;

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  // Registered as "lm_head.weight" when untied; the embedding's weight itself when tied.
  torch::Tensor lm_head_weight;

 private:
  torch::Tensor inv_freq(int64_t seq_len) const;
  // Embedding, layers (RoPE at position_ids, ctx's mask and cache), final norm; advances the cache.
  // keep_positions: as LlamaDecoderLayerImpl::forward's, applied at the last layer.
  // Without recorded gradients, a batch with pads among its new tokens (token_mask: [B, T], 0 = pad) runs
  // packed (AttentionContext::token_index): the projections, norms and MLP see its real tokens only,
  // and pad positions of the result hold zeros.
  torch::Tensor run_layers(const torch::Tensor& input_ids, const torch::Tensor& position_ids, AttentionContext ctx,
                           const torch::Tensor& keep_positions = {}, const torch::Tensor& token_mask = {});
  torch::Tensor forward_hidden_impl(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache,
                                    const torch::Tensor& keep_positions);
  // Error unless input_ids is int64 [B > 0, T > 0] (its ids in the vocabulary, when on the CPU) and the
  // cache (if any) was made for B rows and this model.
  void check_forward_inputs(const torch::Tensor& input_ids, const KVCache* cache) const;
  // positions ([K] or [B, K], negative from the end) as int64 in [0, T) on `device`; Error otherwise.
  static torch::Tensor checked_positions(const torch::Tensor& positions, int64_t B, int64_t T, torch::Device device);
  // hidden [..., H] times lm_head_weight: [..., vocab].
  torch::Tensor lm_head(const torch::Tensor& hidden);

  ModelConfig config_;
  torch::Device device_;
  torch::Dtype dtype_;
  torch::Tensor inv_freq_;  // fp32, on device; "dynamic" rope recomputes per forward
  LoraConfig lora_config_;
  bool has_lora_ = false;
  std::vector<LlamaDecoderLayer> layer_list_;
  // lm_head_weight reordered for bf16 CPU inference (see LoraLinearImpl::inference_weight).
  std::shared_ptr<detail::PackedWeight> lm_head_packed_;
};
TORCH_MODULE(LlamaModel);

}  // namespace llm4dsr
