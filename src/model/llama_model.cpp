#include "llm4dsr/model/llama_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include "internal/causal_attention.h"
#include "internal/cpu_attention.h"
#include "internal/large_output.h"
#include "internal/rms_norm.h"
#include "internal/rotary.h"
#include "internal/swiglu.h"
#include "llm4dsr/error.h"
#include "model/bf16x3_linear.h"
#include "model/onednn_linear.h"
#include "model/packed_linear.h"

namespace llm4dsr {

namespace {

// Rows of x [B, T, F] at pos, int64 in [0, T): [K] (the same positions in every row) or [B, K].
torch::Tensor select_positions(const torch::Tensor& x, const torch::Tensor& pos) {
  if (pos.dim() == 1) return x.index_select(1, pos);
  return x.gather(1, pos.unsqueeze(-1).expand({x.size(0), pos.size(1), x.size(2)}));
}

// Packed inference (AttentionContext::token_index): the real tokens' rows of x [B, T, ...] as [1, N, ...].
torch::Tensor pack_tokens(const torch::Tensor& x, const torch::Tensor& token_index) {
  auto sizes = x.sizes().vec();
  sizes.erase(sizes.begin());
  sizes[0] = x.size(0) * x.size(1);
  return x.reshape(sizes).index_select(0, token_index).unsqueeze(0);
}

// The inverse: x [1, N, ...] at the real tokens of a zero [B, T, ...] tensor. Zeros, not uninitialised
// memory, at the pads: their keys and values pass through attention's masked products.
torch::Tensor unpack_tokens(const torch::Tensor& x, const torch::Tensor& token_index, int64_t B, int64_t T) {
  auto sizes = x.sizes().vec();
  sizes[0] = B * T;
  sizes.erase(sizes.begin() + 1);
  auto out = torch::zeros(sizes, x.options());
  out.index_copy_(0, token_index, x.squeeze(0));
  sizes[0] = T;
  sizes.insert(sizes.begin(), B);
  return out.view(sizes);
}

// x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1], for x [B, T, heads, D] (any strides
// with a unit inner one) and cos/sin [B, T, 1, D] whose two halves are equal (HF's cat(freqs, freqs)).
// One product and two half-width multiply-adds into a fresh contiguous [B, T, heads, D] tensor,
// instead of HF's negation, concatenation, two products and a sum, each allocating a full tensor.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor out = x * cos;
  out.narrow(-1, 0, half).addcmul_(x.narrow(-1, half, half), sin.narrow(-1, 0, half), -1);
  out.narrow(-1, half, half).addcmul_(x.narrow(-1, 0, half), sin.narrow(-1, half, half), 1);
  return out;
}

// RoPE with its own backward: the rotation is linear, so the gradient is the transposed rotation
// g * cos + [g2 * sin, -g1 * sin], and only cos/sin are kept for it (autograd through the elementwise
// ops would keep x and several intermediates). cos/sin are [B or 1, T, D]. The result is written in
// `out_dtype` (attention's: fp32 for bf16 training on the CPU) and the gradient in x's dtype, each by one
// pass of internal::rotate where it applies.
struct RotaryFunction : public torch::autograd::Function<RotaryFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin, torch::ScalarType out_dtype) {
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    if (internal::rotary_kernel_applies(x, cos, sin)) return internal::rotate(x, cos, sin, 1, out_dtype);
    return apply_rotary(x, cos.unsqueeze(2), sin.unsqueeze(2)).to(out_dtype);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& cos = saved[0];
    const torch::Tensor& sin = saved[1];
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    const torch::Tensor& g = grads[0];
    if (internal::rotary_kernel_applies(g, cos, sin)) return {internal::rotate(g, cos, sin, -1, dtype), {}, {}, {}};
    const torch::Tensor c = cos.unsqueeze(2), s = sin.unsqueeze(2);
    const int64_t half = g.size(-1) / 2;
    torch::Tensor dx = g * c;
    dx.narrow(-1, 0, half).addcmul_(g.narrow(-1, half, half), s.narrow(-1, half, half), 1);
    dx.narrow(-1, half, half).addcmul_(g.narrow(-1, 0, half), s.narrow(-1, 0, half), -1);
    return {dx.to(dtype), {}, {}, {}};
  }
};

// 1 / sqrt(mean(h^2) + eps) per row of the fp32 tensor h, [..., 1]: one read of h, no full-size temporary.
torch::Tensor rms_inverse(const torch::Tensor& h, double eps) {
  return at::linalg_vector_norm(h, 2, {-1}, /*keepdim=*/true).square_().div_(h.size(-1)).add_(eps).rsqrt_();
}

// weight * (x.float() * r).to(x.dtype) given r = rms_inverse(x.float()), with every full-size
// temporary reused in place (the path for devices and dtypes the CPU kernel does not take).
torch::Tensor rms_scale(const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& r, const torch::Tensor& weight) {
  torch::Tensor n = h.is_same(x) ? h * r : h.mul_(r).to(x.scalar_type());
  if (at::result_type(weight, n) != n.scalar_type()) return weight * n;
  return n.mul_(weight);
}

// RMSNorm with its own backward: dx = r * (gn - n * mean(gn * n)) with n = x * r and gn = g * weight,
// computed in fp32 from the saved input and r (autograd through HF's steps would keep and stream
// several full-size intermediates).
struct RMSNormFunction : public torch::autograd::Function<RMSNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps) {
    torch::Tensor r, out;
    if (internal::rms_norm_kernel_applies(x, weight)) {
      out = internal::rms_norm_forward(x, weight, eps, &r);
    } else {
      torch::Tensor h = x.to(torch::kFloat32);
      r = rms_inverse(h, eps);
      out = rms_scale(x, h, r, weight);
    }
    ctx->save_for_backward({x, weight, r});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& r = saved[2];
    if (internal::rms_norm_kernel_applies(x, weight)) {
      auto [dx, dweight] = internal::rms_norm_backward(grads[0], x, weight, r, ctx->needs_input_grad(1));
      return {ctx->needs_input_grad(0) ? dx : torch::Tensor(), dweight, torch::Tensor()};
    }
    const torch::Tensor g = grads[0].to(torch::kFloat32);
    const torch::Tensor rr = r.dim() == x.dim() ? r : r.unsqueeze(-1);
    torch::Tensor n = x.to(torch::kFloat32) * rr;
    torch::Tensor dweight;
    if (ctx->needs_input_grad(1)) {
      // HF rounds n to x's dtype before the product with the weight.
      const torch::Tensor nr = n.to(x.scalar_type()).to(torch::kFloat32);
      dweight = (g * nr).reshape({-1, weight.numel()}).sum(0).to(weight.scalar_type());
    }
    torch::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      torch::Tensor gn = g * weight.to(torch::kFloat32);
      torch::Tensor mean_gn = (gn * n).mean(-1, /*keepdim=*/true);
      dx = gn.sub_(n.mul_(mean_gn)).mul_(rr).to(x.scalar_type());
    }
    return {dx, dweight, torch::Tensor()};
  }
};

// silu(gate) * up with its own backward, both one pass (internal/swiglu.h); keeps gate and up only.
struct SwiGLUFunction : public torch::autograd::Function<SwiGLUFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate,
                               const torch::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return internal::swiglu_forward(gate, up);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [d_gate, d_up] = internal::swiglu_backward(grads[0], saved[0], saved[1]);
    return {d_gate, d_up};
  }
};

// HF's default inverse frequencies, computed exactly as transformers does (int64 arange cast to fp32).
torch::Tensor base_inv_freq(double base, int64_t dim) {
  auto exponent = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  return 1.0 / torch::pow(torch::tensor(base, torch::kFloat32), exponent);
}

torch::Tensor llama3_inv_freq(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  torch::Tensor inv_freq = base_inv_freq(c.rope_theta, c.head_dim);
  const double old_context_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_context_len / s.low_freq_factor;
  const double high_freq_wavelen = old_context_len / s.high_freq_factor;
  torch::Tensor wavelen = 2 * M_PI / inv_freq;
  torch::Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  torch::Tensor smooth = (old_context_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  torch::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  torch::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return torch::where(medium, smoothed, scaled);
}

// A bare module holding one parameter named "weight", so names read "lm_head.weight".
std::shared_ptr<torch::nn::Module> weight_holder(torch::Tensor& weight) {
  auto m = std::make_shared<torch::nn::Module>();
  weight = m->register_parameter("weight", weight);
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, torch::TensorOptions options) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad()))
    return RMSNormFunction::apply(x, weight, eps);
  if (internal::rms_norm_kernel_applies(x, weight)) return internal::rms_norm_forward(x, weight, eps);
  torch::Tensor h = x.to(torch::kFloat32);
  return rms_scale(x, h, rms_inverse(h, eps), weight);
}

// ---------------------------------------------------------------------------------------------------
LlamaAttentionImpl::LlamaAttentionImpl(const ModelConfig& c, int64_t layer_index, torch::TensorOptions options)
    : layer_index_(layer_index), num_heads_(c.num_attention_heads), num_kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", LoraLinear(c.hidden_size, num_heads_ * head_dim_, c.attention_bias, options));
  k_proj = register_module("k_proj", LoraLinear(c.hidden_size, num_kv_heads_ * head_dim_, c.attention_bias, options));
  v_proj = register_module("v_proj", LoraLinear(c.hidden_size, num_kv_heads_ * head_dim_, c.attention_bias, options));
  o_proj = register_module("o_proj", LoraLinear(num_heads_ * head_dim_, c.hidden_size, c.attention_bias, options));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  return o_proj(attend(x, ctx));
}

torch::Tensor LlamaAttentionImpl::attend(const torch::Tensor& x, const AttentionContext& ctx) {
  const bool packed = ctx.token_index.defined();
  LLM4DSR_CHECK(!packed || !at::GradMode::is_enabled(), "LlamaAttention: packed tokens are for inference only");
  const int64_t B = packed ? ctx.batch_size : x.size(0), T = packed ? ctx.width : x.size(1);
  // RoPE is applied in the projections' own [B, T, heads, D] layout and heads are moved by strides
  // only: SDPA reads strided inputs, and its CPU kernel writes [B, T, heads, D], so the output needs
  // no copy either. Packed, the projections and RoPE run on [1, N, ...] and q, k, v are then spread
  // over the padded layout, which attention and the cache use.
  auto q = q_proj(x).view({x.size(0), x.size(1), num_heads_, head_dim_});
  auto k = k_proj(x).view({x.size(0), x.size(1), num_kv_heads_, head_dim_});
  auto v = v_proj(x).view({x.size(0), x.size(1), num_kv_heads_, head_dim_});
  // The CPU flash-attention backward has no fast bf16/fp16 kernel (about 2.5x slower than in fp32 at
  // T = 128). When a gradient is recorded, bf16 causal attention without a cache or mask (training's
  // case) takes internal::bf16_causal_attention (bf16 flash forward, backward by bf16 GEMMs); other
  // bf16/fp16 cases run in fp32 on upcast copies of q, k and v and round the output back once, and
  // without a cache RoPE writes q and k in fp32 directly.
  const auto dtype = q.scalar_type();
  const bool grad = at::GradMode::is_enabled();
  const bool bf16_training_attention = grad && q.device().is_cpu() && dtype == torch::kBFloat16 && !ctx.cache &&
                                       !ctx.mask.defined() && ctx.is_causal && T > 1;
  const bool upcast = grad && !bf16_training_attention && q.device().is_cpu() &&
                      (dtype == torch::kBFloat16 || dtype == torch::kFloat16);
  if (grad) {
    const auto rotated_dtype = upcast && !ctx.cache ? torch::kFloat32 : dtype;
    q = RotaryFunction::apply(q, ctx.cos, ctx.sin, rotated_dtype);
    k = RotaryFunction::apply(k, ctx.cos, ctx.sin, rotated_dtype);
  } else if (internal::rotary_kernel_applies(q, ctx.cos, ctx.sin) &&
             internal::rotary_kernel_applies(k, ctx.cos, ctx.sin)) {
    q = internal::rotate(q, ctx.cos, ctx.sin, 1, dtype);  // one pass each (apply_rotary makes three)
    k = internal::rotate(k, ctx.cos, ctx.sin, 1, dtype);
  } else {
    auto cos = ctx.cos.unsqueeze(2), sin = ctx.sin.unsqueeze(2);
    q = apply_rotary(q, cos, sin);
    k = apply_rotary(k, cos, sin);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  if (packed) {
    // Keys and values into the padded layout (the cache's own when there is one, zeros at the pads);
    // cpu_attention reads the packed queries and writes packed rows, anything else gets them padded.
    if (ctx.cache) {
      std::tie(k, v) = ctx.cache->append_packed(layer_index_, k.squeeze(0), v.squeeze(0), ctx.token_index, T);
    } else {
      k = unpack_tokens(k, ctx.token_index, B, T).transpose(1, 2);
      v = unpack_tokens(v, ctx.token_index, B, T).transpose(1, 2);
    }
    if (T >= 4 && internal::cpu_attention_preferred(dtype) &&
        internal::cpu_attention_applies(q.transpose(1, 2), k, v, ctx.mask, ctx.query_rows))
      return internal::cpu_attention(q.transpose(1, 2), k, v, ctx.mask, ctx.is_causal, scale, nullptr, ctx.query_rows);
    q = unpack_tokens(q, ctx.token_index, B, T).transpose(1, 2);
  } else {
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    if (ctx.cache) std::tie(k, v) = ctx.cache->append(layer_index_, k, v);
  }
  if (upcast) {
    q = q.to(torch::kFloat32);
    k = k.to(torch::kFloat32);
    v = v.to(torch::kFloat32);
  }
  if (bf16_training_attention && internal::bf16_causal_attention_applies(q, k, v))
    return internal::bf16_causal_attention(q, k, v, scale).transpose(1, 2).reshape({B, T, num_heads_ * head_dim_});
  torch::Tensor out;  // [B, T, heads * D]
  // Without gradients, on AVX-512 CPUs where ATen's flash kernel is the slow path (see
  // internal/cpu_attention.h); from 4 query rows (a decoded token's one row would waste the kernel's
  // block of 4, and packing the cache's keys would cost as much as the attention itself).
  if (!grad && T >= 4 && internal::cpu_attention_preferred(dtype) &&
      internal::cpu_attention_applies(q, k, v, ctx.mask)) {
    out = internal::cpu_attention(q, k, v, ctx.mask, ctx.is_causal && T > 1, scale);
  } else {
    std::optional<torch::Tensor> mask;
    if (ctx.mask.defined()) mask = ctx.mask;
    // enable_gqa: each KV head serves num_heads / num_kv_heads consecutive query heads (HF's repeat_kv)
    // without materialising the repeated keys and values.
    out = at::scaled_dot_product_attention(q, k, v, mask, 0.0, ctx.is_causal && T > 1, scale,
                                           /*enable_gqa=*/num_kv_heads_ != num_heads_);
    if (upcast) out = out.to(dtype);
    out = out.transpose(1, 2).reshape({B, T, num_heads_ * head_dim_});
  }
  return packed ? pack_tokens(out, ctx.token_index) : out;
}

// ---------------------------------------------------------------------------------------------------
LlamaMLPImpl::LlamaMLPImpl(const ModelConfig& c, torch::TensorOptions options) {
  gate_proj = register_module("gate_proj", LoraLinear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  up_proj = register_module("up_proj", LoraLinear(c.hidden_size, c.intermediate_size, c.mlp_bias, options));
  down_proj = register_module("down_proj", LoraLinear(c.intermediate_size, c.hidden_size, c.mlp_bias, options));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) { return down_proj(activation(x)); }

torch::Tensor LlamaMLPImpl::activation(const torch::Tensor& x) {
  if (!at::GradMode::is_enabled() && !gate_proj->bias.defined() && !up_proj->bias.defined() &&
      !gate_proj->adds_branch() && !up_proj->adds_branch()) {
    torch::Tensor fused = detail::fused_swiglu(x, gate_proj->inference_weight(x), up_proj->inference_weight(x),
                                               gate_proj->out_features());
    if (fused.defined()) return fused;
  }
  torch::Tensor gate = gate_proj(x), up = up_proj(x);
  if (at::GradMode::is_enabled()) {
    if (internal::swiglu_kernel_applies(gate, up)) return SwiGLUFunction::apply(gate, up);
    return torch::silu(gate) * up;
  }
  if (internal::swiglu_kernel_applies(gate, up)) return internal::swiglu_forward(gate, up);  // one pass, not two
  return torch::silu_(gate).mul_(up);
}

// ---------------------------------------------------------------------------------------------------
LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const ModelConfig& c, int64_t layer_index, torch::TensorOptions options) {
  self_attn = register_module("self_attn", LlamaAttention(c, layer_index, options));
  mlp = register_module("mlp", LlamaMLP(c, options));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                             const torch::Tensor& keep_positions) {
  torch::Tensor attended = self_attn->attend(input_layernorm(x), ctx);
  torch::Tensor h = keep_positions.defined()
                        ? self_attn->o_proj->forward_add(select_positions(attended, keep_positions),
                                                         select_positions(x, keep_positions))
                        : self_attn->o_proj->forward_add(attended, x);
  // h is this layer's own tensor: without recorded gradients the MLP output is accumulated into it.
  return mlp->down_proj->forward_add(mlp->activation(post_attention_layernorm(h)), h,
                                     /*in_place=*/!at::GradMode::is_enabled());
}

// ---------------------------------------------------------------------------------------------------
LlamaModelImpl::LlamaModelImpl(const ModelConfig& config, torch::Device device, torch::Dtype dtype, uint64_t seed,
                               bool initialize)
    : config_(config), device_(device), dtype_(dtype), lm_head_packed_(std::make_shared<detail::PackedWeight>()) {
  config_.validate();
  LLM4DSR_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kFloat16 ||
                    dtype == torch::kFloat64,
                "LlamaModel: dtype must be a floating type (float32, bfloat16, float16, float64), got " << dtype);
  auto options = torch::TensorOptions().dtype(dtype).device(device);
  embed_tokens = register_module(
      "embed_tokens", torch::nn::Embedding(torch::nn::EmbeddingOptions(config_.vocab_size, config_.hidden_size)
                                               ._weight(torch::empty({config_.vocab_size, config_.hidden_size}, options))));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layer_list_.push_back(LlamaDecoderLayer(config_, i, options));
    layers->push_back(layer_list_.back());
  }
  norm = register_module("norm", RMSNorm(config_.hidden_size, config_.rms_norm_eps, options));
  if (config_.tie_word_embeddings) {
    lm_head_weight = embed_tokens->weight;
  } else {
    lm_head_weight = torch::empty({config_.vocab_size, config_.hidden_size}, options);
    register_module("lm_head", weight_holder(lm_head_weight));
  }
  inv_freq_ = inv_freq(config_.max_position_embeddings).to(device);

  if (initialize) {
    torch::NoGradGuard no_grad;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    for (auto& p : named_parameters(/*recurse=*/true)) {
      const std::string& name = p.key();
      torch::Tensor& t = p.value();
      if (name.find("norm") != std::string::npos) {
        t.fill_(1.0);
      } else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
        t.zero_();
      } else {
        auto w = torch::empty(t.sizes(), torch::kFloat32);
        w.normal_(0.0, config_.initializer_range, gen);
        if (name == "embed_tokens.weight" && config_.pad_token_id >= 0 && config_.pad_token_id < config_.vocab_size)
          w[config_.pad_token_id].zero_();
        t.copy_(w);
      }
    }
  }
}

torch::Tensor LlamaModelImpl::inv_freq(int64_t seq_len) const {
  const RopeScaling& s = config_.rope_scaling;
  if (s.rope_type == "llama3") return llama3_inv_freq(config_);
  if (s.rope_type == "linear") return base_inv_freq(config_.rope_theta, config_.head_dim) / s.factor;
  if (s.rope_type == "dynamic") {
    // NTK-aware: the base grows once the sequence exceeds max_position_embeddings. Unlike HF, which
    // remembers the longest length seen, this depends only on the current forward's length.
    const double max_pos = static_cast<double>(config_.max_position_embeddings);
    const double len = std::max<double>(static_cast<double>(seq_len), max_pos);
    const double dim = static_cast<double>(config_.head_dim);
    const double base = config_.rope_theta * std::pow(s.factor * len / max_pos - (s.factor - 1), dim / (dim - 2));
    return base_inv_freq(base, config_.head_dim);
  }
  return base_inv_freq(config_.rope_theta, config_.head_dim);
}

torch::Tensor LlamaModelImpl::position_ids_from_mask(const torch::Tensor& full_mask, int64_t new_tokens) {
  auto m = full_mask.to(torch::kInt64);
  auto pos = (m.cumsum(-1) - 1).clamp_min(0).masked_fill(m == 0, 0);
  return pos.narrow(1, pos.size(1) - new_tokens, new_tokens);
}

KVCache LlamaModelImpl::make_cache(int64_t batch_size, int64_t max_length) const {
  return KVCache(config_, batch_size, max_length, dtype_, device_);
}

void LlamaModelImpl::check_token_ids(const torch::Tensor& ids) const {
  LLM4DSR_CHECK(ids.device().is_cpu() && ids.scalar_type() == torch::kInt64,
                "check_token_ids: expected int64 ids on the CPU, got " << ids.scalar_type() << " on " << ids.device());
  if (ids.numel() == 0) return;
  const torch::Tensor c = ids.contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(p, p + c.numel());
  LLM4DSR_CHECK(*lo >= 0 && *hi < config_.vocab_size, "LlamaModel: input_ids hold token id "
                                                          << (*lo < 0 ? *lo : *hi) << ", outside the vocabulary [0, "
                                                          << config_.vocab_size << ")");
}

void LlamaModelImpl::check_forward_inputs(const torch::Tensor& input_ids, const KVCache* cache) const {
  LLM4DSR_CHECK(input_ids.dim() == 2, "LlamaModel: input_ids must be [batch, seq], got shape " << input_ids.sizes());
  LLM4DSR_CHECK(input_ids.scalar_type() == torch::kInt64, "LlamaModel: input_ids must be int64, got " << input_ids.scalar_type());
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  LLM4DSR_CHECK(T > 0 && B > 0, "LlamaModel: empty input_ids " << input_ids.sizes());
  if (input_ids.device().is_cpu()) check_token_ids(input_ids);
  if (!cache) return;
  LLM4DSR_CHECK(cache->allocated() && cache->batch_size() == B && cache->num_layers() == config_.num_hidden_layers,
                "LlamaModel: the KV cache was made for " << cache->batch_size() << " rows and " << cache->num_layers()
                                                         << " layers; this batch has " << B << " rows and the model "
                                                         << config_.num_hidden_layers << " layers");
}

torch::Tensor LlamaModelImpl::forward_hidden(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                             KVCache* cache) {
  return forward_hidden_impl(input_ids, attention_mask, cache, torch::Tensor());
}

torch::Tensor LlamaModelImpl::forward_hidden_impl(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                                  KVCache* cache, const torch::Tensor& keep_positions) {
  check_forward_inputs(input_ids, cache);
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  const int64_t past = cache ? cache->length() : 0;
  const int64_t S = past + T;

  torch::Tensor full_mask;  // [B, S] int64 or undefined (= all ones)
  torch::Tensor new_mask;   // [B, T]: the new tokens' part
  if (cache) {
    if (!attention_mask.defined()) new_mask = torch::ones({B, T}, torch::TensorOptions().dtype(torch::kInt64).device(device_));
    else if (attention_mask.size(-1) == T) new_mask = attention_mask;
    else if (attention_mask.size(-1) == S) new_mask = attention_mask.narrow(1, past, T);
    else LLM4DSR_THROW("LlamaModel: attention_mask has " << attention_mask.size(-1) << " columns; expected " << T
                                                         << " (new tokens) or " << S << " (cached + new)");
    LLM4DSR_CHECK(new_mask.dim() == 2 && new_mask.size(0) == B, "LlamaModel: attention_mask must be [" << B << ", "
                                                                                                    << T << "], got " << new_mask.sizes());
    full_mask = cache->append_mask(new_mask.to(device_, torch::kInt64));
  } else if (attention_mask.defined()) {
    LLM4DSR_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == B && attention_mask.size(1) == T,
                  "LlamaModel: attention_mask must be [" << B << ", " << T << "] like input_ids, got " << attention_mask.sizes());
    full_mask = attention_mask.to(device_, torch::kInt64);
    new_mask = full_mask;
  }
  const bool has_pads = full_mask.defined() && (full_mask == 0).any().item<bool>();

  auto long_options = torch::TensorOptions().dtype(torch::kInt64).device(device_);
  torch::Tensor position_ids = has_pads ? position_ids_from_mask(full_mask, T)
                                        : torch::arange(past, S, long_options).unsqueeze(0).expand({B, T});

  AttentionContext ctx;
  ctx.cache = cache;
  if (!has_pads && past == 0) {
    ctx.is_causal = true;
  } else if (!(!has_pads && T == 1)) {
    auto key_ok = full_mask.defined() ? (full_mask != 0).view({B, 1, 1, S})
                                      : torch::ones({B, 1, 1, S}, torch::TensorOptions().dtype(torch::kBool).device(device_));
    auto q_abs = torch::arange(past, S, long_options).view({1, 1, T, 1});
    auto k_idx = torch::arange(0, S, long_options).view({1, 1, 1, S});
    auto allowed = (k_idx <= q_abs).logical_and(key_ok);
    // A pad query before the row's first token sees no key at all; let it see everything rather than
    // produce NaN (its output is never used: no real token attends to a pad).
    ctx.mask = allowed.logical_or(allowed.any(-1, /*keepdim=*/true).logical_not());
  }
  // A decoded token (T = 1) is never a pad: no packing to consider.
  return run_layers(input_ids, position_ids, std::move(ctx), keep_positions,
                    has_pads && T > 1 ? new_mask : torch::Tensor());
}

torch::Tensor LlamaModelImpl::forward_hidden_packed(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                                                    const torch::Tensor& allowed, KVCache* cache,
                                                    const torch::Tensor& token_mask) {
  check_forward_inputs(input_ids, cache);
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  const int64_t past = cache ? cache->length() : 0;
  const int64_t S = past + T;
  LLM4DSR_CHECK(position_ids.dim() == 2 && position_ids.size(0) == B && position_ids.size(1) == T &&
                    position_ids.scalar_type() == torch::kInt64,
                "LlamaModel: position_ids must be int64 [" << B << ", " << T << "], got " << position_ids.scalar_type()
                                                          << " " << position_ids.sizes());
  LLM4DSR_CHECK(allowed.dim() == 4 && allowed.size(0) == B && allowed.size(1) == 1 && allowed.size(2) == T &&
                    allowed.size(3) == S && allowed.scalar_type() == torch::kBool,
                "LlamaModel: allowed must be bool [" << B << ", 1, " << T << ", " << S << "] (past " << past
                                                     << " + new " << T << " keys), got " << allowed.scalar_type() << " "
                                                     << allowed.sizes());
  if (cache) {
    const auto options = torch::TensorOptions().dtype(torch::kInt64).device(device_);
    LLM4DSR_CHECK(!token_mask.defined() || (token_mask.dim() == 2 && token_mask.size(0) == B && token_mask.size(1) == T),
                  "LlamaModel: token_mask must be [" << B << ", " << T << "], got " << token_mask.sizes());
    cache->append_mask(token_mask.defined() ? token_mask.to(device_, torch::kInt64) : torch::ones({B, T}, options));
  }
  AttentionContext ctx;
  ctx.cache = cache;
  ctx.mask = allowed.to(device_);
  return run_layers(input_ids, position_ids.to(device_), std::move(ctx), torch::Tensor(), token_mask);
}

torch::Tensor LlamaModelImpl::run_layers(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                                         AttentionContext ctx, const torch::Tensor& keep_positions,
                                         const torch::Tensor& token_mask) {
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  torch::Tensor ids = input_ids.to(device_), positions = position_ids, keep = keep_positions;
  // Packed when pads would otherwise be computed (left padding in scoring and generation wastes 4-10%
  // of a micro-batch's products) and every kept position is a real token.
  if (token_mask.defined() && !at::GradMode::is_enabled()) {
    const torch::Tensor index = (token_mask.to(device_).reshape({-1}) != 0).nonzero().squeeze(1);
    const int64_t N = index.size(0);
    if (N > 0 && N < B * T) {
      // Each (b, t)'s packed row, -1 at pads.
      auto packed_row = torch::full({B * T}, -1, index.options());
      packed_row.index_copy_(0, index, torch::arange(N, index.options()));
      torch::Tensor packed_keep;  // keep ([K] or [B, K] in [0, T)) as packed rows, [B * K]
      if (keep.defined()) {
        auto rows = torch::arange(B, index.options()).unsqueeze(1) * T;
        packed_keep = packed_row.index_select(0, (rows + (keep.dim() == 1 ? keep.unsqueeze(0) : keep)).reshape({-1}));
      }
      if (!packed_keep.defined() || packed_keep.min().item<int64_t>() >= 0) {
        ctx.token_index = index;
        ctx.query_rows = packed_row.view({B, T});
        ctx.batch_size = B;
        ctx.width = T;
        ids = ids.reshape({-1}).index_select(0, index).unsqueeze(0);
        positions = positions.reshape({-1}).index_select(0, index).unsqueeze(0);
        keep = packed_keep;
      }
    }
  }

  torch::Tensor freq = inv_freq_;
  if (config_.rope_scaling.rope_type == "dynamic") {
    const int64_t seq_len = positions.max().item<int64_t>() + 1;
    if (seq_len > config_.max_position_embeddings) freq = inv_freq(seq_len).to(device_);
  }
  auto freqs = positions.unsqueeze(-1).to(torch::kFloat32) * freq;
  auto emb = torch::cat({freqs, freqs}, -1);
  ctx.cos = emb.cos().to(dtype_);
  ctx.sin = emb.sin().to(dtype_);

  auto h = embed_tokens(ids);
  for (size_t i = 0; i < layer_list_.size(); ++i)
    h = layer_list_[i]->forward(h, ctx, i + 1 == layer_list_.size() ? keep : torch::Tensor());
  if (layer_list_.empty() && keep.defined()) h = select_positions(h, keep);
  if (ctx.cache) ctx.cache->advance(T);
  h = norm(h);
  if (!ctx.token_index.defined()) return h;
  if (keep.defined()) return h.view({B, keep.numel() / B, h.size(-1)});  // [1, B * K, H] -> [B, K, H]
  return unpack_tokens(h, ctx.token_index, B, T);
}

torch::Tensor LlamaModelImpl::checked_positions(const torch::Tensor& positions, int64_t B, int64_t T,
                                                torch::Device device) {
  auto pos = positions.to(device, torch::kInt64);
  pos = torch::where(pos < 0, pos + T, pos);
  LLM4DSR_CHECK(pos.numel() == 0 || (pos.min().item<int64_t>() >= 0 && pos.max().item<int64_t>() < T),
                "LlamaModel: logits positions must lie in [-" << T << ", " << T << ")");
  LLM4DSR_CHECK(pos.dim() == 1 || (pos.dim() == 2 && pos.size(0) == B),
                "LlamaModel: positions must be [K] or [" << B << ", K], got " << positions.sizes());
  return pos;
}

void LlamaModelImpl::set_weight_packing(bool enabled) {
  lm_head_packed_->set_enabled(enabled);
  for (auto& [name, proj] : projections()) proj->set_weight_packing(enabled);
}

bool LlamaModelImpl::weight_packing() const { return lm_head_packed_->enabled(); }

torch::Tensor LlamaModelImpl::lm_head(const torch::Tensor& hidden) {
  const torch::Tensor w = lm_head_packed_->for_product(hidden, lm_head_weight);
  if (detail::is_bf16x3_weight(w, lm_head_weight)) return detail::bf16x3_linear(hidden, w, torch::Tensor());
  if (detail::onednn_fp32_product_applies(hidden, lm_head_weight))
    return detail::onednn_fp32_linear(hidden, lm_head_weight, torch::Tensor(), torch::Tensor());
  // bf16 logits for many rows (full-sequence logits: 100 MB at batch 8 x 128 tokens): one product into
  // memory on huge pages (internal/large_output.h). Faulting in a fresh mapping page by page made the
  // product half as fast (SmolLM2 bf16 forward at batch 8 249 -> 202 ms); the plain weight serves here,
  // the packed copy pays off on few rows. Not for fp32: its 200 MB of logits on huge pages made the same
  // forward 14% slower (907-947 -> 1,034-1,106 ms, for reasons not pinned down), so it keeps its path.
  const int64_t hidden_size = hidden.size(-1), rows = hidden_size > 0 ? hidden.numel() / hidden_size : 0;
  if (!at::GradMode::is_enabled() && hidden.device().is_cpu() && hidden.scalar_type() == lm_head_weight.scalar_type() &&
      (hidden.scalar_type() == torch::kBFloat16 || hidden.scalar_type() == torch::kFloat16) &&
      !at::autocast::is_autocast_enabled(torch::kCPU) &&
      rows * config_.vocab_size * static_cast<int64_t>(hidden.element_size()) >= internal::kLargeOutputBytes) {
    torch::Tensor out = internal::empty_large_output({rows, config_.vocab_size}, hidden.options());
    at::mm_out(out, hidden.reshape({rows, hidden_size}), lm_head_weight.t());
    auto sizes = hidden.sizes().vec();
    sizes.back() = config_.vocab_size;
    return out.view(sizes);
  }
  if (w.is_mkldnn()) return detail::packed_linear(hidden, w, torch::Tensor(), config_.vocab_size);
  return torch::linear(hidden, lm_head_weight);
}

torch::Tensor LlamaModelImpl::logits_from_hidden(const torch::Tensor& hidden, const torch::Tensor& positions) {
  if (!positions.defined()) return lm_head(hidden);
  const auto pos = checked_positions(positions, hidden.size(0), hidden.size(1), hidden.device());
  return lm_head(select_positions(hidden, pos));
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                      KVCache* cache, const torch::Tensor& positions) {
  if (!positions.defined() || at::GradMode::is_enabled())
    return logits_from_hidden(forward_hidden(input_ids, attention_mask, cache), positions);
  check_forward_inputs(input_ids, cache);  // before input_ids' sizes are read
  const auto pos = checked_positions(positions, input_ids.size(0), input_ids.size(1), device_);
  return lm_head(forward_hidden_impl(input_ids, attention_mask, cache, pos));
}

void LlamaModelImpl::to_device_dtype(torch::Device device, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  to(device, dtype);
  device_ = device;
  dtype_ = dtype;
  // The reordered copies belong to the weights just replaced.
  lm_head_packed_->clear();
  for (auto& [name, proj] : projections()) proj->release_packed_weight();
  inv_freq_ = inv_freq_.to(device);
  if (dtype == torch::kBFloat16 || dtype == torch::kFloat16)
    for (auto& [name, proj] : projections())
      if (proj->has_adapter()) {
        proj->lora_A.set_data(proj->lora_A.to(torch::kFloat32));
        proj->lora_B.set_data(proj->lora_B.to(torch::kFloat32));
      }
}

std::vector<std::pair<std::string, LoraLinear>> LlamaModelImpl::projections() const {
  std::vector<std::pair<std::string, LoraLinear>> out;
  for (size_t i = 0; i < layer_list_.size(); ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    const auto& a = layer_list_[i]->self_attn;
    const auto& m = layer_list_[i]->mlp;
    out.emplace_back(prefix + "self_attn.q_proj", a->q_proj);
    out.emplace_back(prefix + "self_attn.k_proj", a->k_proj);
    out.emplace_back(prefix + "self_attn.v_proj", a->v_proj);
    out.emplace_back(prefix + "self_attn.o_proj", a->o_proj);
    out.emplace_back(prefix + "mlp.gate_proj", m->gate_proj);
    out.emplace_back(prefix + "mlp.up_proj", m->up_proj);
    out.emplace_back(prefix + "mlp.down_proj", m->down_proj);
  }
  return out;
}

void LlamaModelImpl::add_lora(const LoraConfig& lora) {
  lora.validate();
  LLM4DSR_CHECK(!has_lora_, "LlamaModel: LoRA adapters are already present; remove_lora() first");
  auto targets = projections();
  std::vector<LoraLinear> chosen;
  for (size_t k = 0; k < targets.size(); ++k)
    if (lora.matches(targets[k].first, static_cast<int64_t>(k / 7))) chosen.push_back(targets[k].second);
  LLM4DSR_CHECK(!chosen.empty(), "LlamaModel: LoRA target modules match no projection of the model");
  for (auto& p : parameters(/*recurse=*/true)) p.set_requires_grad(false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(lora.seed);
  for (auto& proj : chosen) proj->add_adapter(lora.r, lora.alpha, lora.dropout, lora.use_rslora, gen);
  lora_config_ = lora;
  has_lora_ = true;
}

void LlamaModelImpl::remove_lora() {
  for (auto& [name, proj] : projections()) proj->remove_adapter();
  for (auto& p : parameters(/*recurse=*/true)) p.set_requires_grad(true);
  has_lora_ = false;
  lora_config_ = LoraConfig();
}

void LlamaModelImpl::merge_lora() {
  LLM4DSR_CHECK(has_lora_, "LlamaModel: merge_lora() without LoRA adapters");
  for (auto& [name, proj] : projections())
    if (proj->has_adapter()) proj->merge();
}

void LlamaModelImpl::unmerge_lora() {
  for (auto& [name, proj] : projections())
    if (proj->has_adapter()) proj->unmerge();
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaModelImpl::lora_state() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, proj] : projections())
    if (proj->has_adapter()) {
      out.emplace_back("base_model.model." + name + ".lora_A.weight", proj->lora_A);
      out.emplace_back("base_model.model." + name + ".lora_B.weight", proj->lora_B);
    }
  return out;
}

std::vector<torch::Tensor> LlamaModelImpl::lora_parameters() const {
  std::vector<torch::Tensor> out;
  for (auto& [name, t] : lora_state()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaModelImpl::hf_state() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters(/*recurse=*/true)) {
    const std::string& name = p.key();
    if (name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos) continue;
    out.emplace_back(name.rfind("lm_head.", 0) == 0 ? name : "model." + name, p.value());
  }
  return out;
}

}  // namespace llm4dsr
