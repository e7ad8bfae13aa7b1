#include "llm4dsr/model/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <optional>
#include <regex>
#include <tuple>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "llm4dsr/model/lora_guard.h"
#include "internal/bf16_kernels.h"
#include "internal/dropout_mask.h"
#include "model/bf16x3_linear.h"
#include "model/onednn_linear.h"
#include "model/packed_linear.h"

namespace llm4dsr {

namespace {

using internal::DropoutMask;

const char* const kProjections[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A parameter holder registered as "lora_A" / "lora_B" so names read "...q_proj.lora_A.weight", as in PEFT files.
std::shared_ptr<torch::nn::Module> holder(torch::Tensor& weight) {
  auto m = std::make_shared<torch::nn::Module>();
  weight = m->register_parameter("weight", weight);
  return m;
}

// The seed of one dropout mask, drawn from the default CPU generator: seeding that generator (the
// Trainer does, and checkpoints its state) makes the masks reproducible.
uint64_t draw_dropout_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get<at::CPUGeneratorImpl>()->random64();
}

// Inverted dropout of x [tokens, in] into the adapters' fp32: writes scale[i] = 1 / keep where element
// i is kept and 0 elsewhere (DropoutMask), and h[i] = x[i] * scale[i].
template <typename In>
void dropout_draw(const In* x, float* h, float* scale, int64_t n, uint64_t seed, double keep) {
  const DropoutMask mask(seed, keep);
  at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
    mask.fill(begin, end - begin, scale + begin);
    for (int64_t i = begin; i < end; ++i) h[i] = static_cast<float>(x[i]) * scale[i];  // x: any float type
  });
}

// h = dropout(x) in fp32, and the per-element scale it applied (for backward), for contiguous x.
std::pair<torch::Tensor, torch::Tensor> lora_dropout_fp32(const torch::Tensor& x, double p) {
  torch::Tensor h = torch::empty(x.sizes(), x.options().dtype(torch::kFloat32));
  torch::Tensor scale = torch::empty_like(h);
  const uint64_t seed = draw_dropout_seed();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lora_dropout", [&] {
    dropout_draw<scalar_t>(x.const_data_ptr<scalar_t>(), h.data_ptr<float>(), scale.data_ptr<float>(), x.numel(), seed,
                           1.0 - p);
  });
  return {h, scale};
}

// The adapter branch's gradients for x (shaped like g with in features), A and B, from the incoming
// gradient g of out = y + s * B(A(h)), h = x * scale (scale undefined: no dropout), down = s * A h, all
// in the adapters' dtype, with whole-tensor ATen ops: differentiable again when gradients are recorded.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> lora_branch_grads(
    const torch::Tensor& g, const torch::Tensor& x2, const torch::Tensor& lora_A, const torch::Tensor& lora_B,
    const torch::Tensor& down, const torch::Tensor& scale, double scaling, bool need_x, bool need_A, bool need_B) {
  const torch::Tensor g2 = g.reshape({-1, lora_B.size(0)}).to(lora_B.scalar_type()).contiguous();
  torch::Tensor grad_x, grad_A, grad_B;
  if (need_B) grad_B = torch::mm(g2.t(), down);
  if (need_x || need_A) {
    const torch::Tensor grad_down = torch::mm(g2, lora_B).mul_(scaling);  // [tokens, r]
    if (need_A) {
      torch::Tensor h = x2.to(lora_A.scalar_type());
      if (scale.defined()) h = h.is_same(x2) ? h * scale : h.mul_(scale);
      grad_A = torch::mm(grad_down.t(), h);
    }
    if (need_x) {
      torch::Tensor grad_h = torch::mm(grad_down, lora_A);
      if (scale.defined()) grad_h.mul_(scale);
      auto sizes = g.sizes().vec();
      sizes.back() = lora_A.size(1);
      grad_x = grad_h.to(x2.scalar_type()).view(sizes);
    }
  }
  return {grad_x, grad_A, grad_B};
}

// The adapter branch of a LoRA linear, training on the CPU: out = y + s * B(A(dropout(x))), computed in
// the adapters' dtype and rounded to y's once (PEFT's fp32 adapters over a bf16 base: its bf16 + fp32 sum
// promotes, then is cast back). One autograd node in place of about ten (conversion, dropout, two
// products, scale, sum, cast): x is converted and dropped out in one pass, the incoming gradient is
// converted once. Backward keeps only the per-element dropout scale (which the input's gradient needs
// anyway) and rebuilds the dropped input from it and x, instead of keeping both a mask and that input.
struct LoraBranch : public torch::autograd::Function<LoraBranch> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& y, const torch::Tensor& x,
                               const torch::Tensor& lora_A, const torch::Tensor& lora_B, double dropout,
                               double scaling) {
    const int64_t in = lora_A.size(1), out = lora_B.size(0);
    const torch::Tensor x2 = x.reshape({-1, in}).contiguous();
    torch::Tensor h, scale;  // dropout > 0 only with fp32 adapters (add_lora's condition)
    if (dropout > 0.0)
      std::tie(h, scale) = lora_dropout_fp32(x2, dropout);
    else
      h = x2.to(lora_A.scalar_type());
    const torch::Tensor down = torch::mm(h, lora_A.t()).mul_(scaling);  // [tokens, r]: the scale on the rank-r side
    const torch::Tensor y2 = y.reshape({-1, out});
    torch::Tensor result;
    if (y.scalar_type() == lora_B.scalar_type()) {
      result = at::addmm(y2, down, lora_B.t());
    } else {
      // In the adapters' dtype and rounded once; a mixed-dtype sum would take ATen's slow unvectorised path.
      result = y2.to(lora_B.scalar_type()).addmm_(down, lora_B.t()).to(y.scalar_type());
    }
    ctx->save_for_backward({x2, lora_A, lora_B, down, scale});
    ctx->saved_data["scaling"] = scaling;
    return result.view(y.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x2 = saved[0], &lora_A = saved[1], &lora_B = saved[2], &down = saved[3], &scale = saved[4];
    const auto [grad_x, grad_A, grad_B] =
        lora_branch_grads(grads[0], x2, lora_A, lora_B, down, scale, ctx->saved_data["scaling"].toDouble(),
                          ctx->needs_input_grad(1), ctx->needs_input_grad(2), ctx->needs_input_grad(3));
    const torch::Tensor& g = grads[0];
    return {ctx->needs_input_grad(0) ? g : torch::Tensor(), grad_x, grad_A, grad_B, torch::Tensor(), torch::Tensor()};
  }
};

// Rows per block of LoraBranchBf16: at most 128, so that a block's fp32 rows ([128, 1536] for SmolLM2,
// 768 KB) stay in the L2 cache between the steps that read them; fewer when that leaves a thread
// without a block (a batch of one 128-token sequence runs as two blocks of 64 on two threads).
int64_t lora_block_rows(int64_t tokens) {
  const int64_t per_thread = (tokens + at::get_num_threads() - 1) / at::get_num_threads();
  return std::clamp<int64_t>(per_thread, 16, 128);
}

// LoraBranch for the usual CPU training setup, a bf16 base with fp32 adapters, fused by row blocks.
// The unfused branch moves whole [tokens, features] tensors through memory several times per
// projection (x to fp32 with its dropout, y to fp32 and back, the incoming gradient to fp32, the
// dropout scale kept for backward): with adapters on all seven projections that was 40% of a
// SmolLM2 step. Here each block of up to 128 rows is widened, dropped out, multiplied and rounded while it
// sits in the cache, and only bf16 tensors and the [tokens, r] intermediate reach memory; the dropout
// mask is drawn again in backward from its seed (DropoutMask). Same formula, same fp32 arithmetic, same
// mask as LoraBranch; the adapters' gradients are summed block by block.
struct LoraBranchBf16 : public torch::autograd::Function<LoraBranchBf16> {
  // Rows first .. first + n - 1 of x [tokens, in] (bf16), widened and dropped out, into h [n, in].
  static void dropped_rows(const c10::BFloat16* x, int64_t in, int64_t first, int64_t n, const DropoutMask* mask,
                           float* h, float* scale) {
    internal::widen_bf16(x + first * in, h, n * in);
    if (!mask) return;
    mask->fill(first * in, n * in, scale);
    internal::scale_in_place(h, scale, n * in);
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& y, const torch::Tensor& x,
                               const torch::Tensor& lora_A, const torch::Tensor& lora_B, double dropout,
                               double scaling) {
    const int64_t r = lora_A.size(0), in = lora_A.size(1), out = lora_B.size(0);
    const torch::Tensor x2 = x.reshape({-1, in}).contiguous();
    const torch::Tensor y2 = y.reshape({-1, out}).contiguous();
    const int64_t tokens = x2.size(0);
    const uint64_t seed = dropout > 0.0 ? draw_dropout_seed() : 0;
    const auto f32 = x2.options().dtype(torch::kFloat32);
    torch::Tensor down = torch::empty({tokens, r}, f32);
    torch::Tensor result = torch::empty({tokens, out}, y2.options());
    const torch::Tensor A_t = lora_A.t(), B_t = lora_B.t();
    const c10::BFloat16* xp = x2.const_data_ptr<c10::BFloat16>();
    const c10::BFloat16* yp = y2.const_data_ptr<c10::BFloat16>();
    c10::BFloat16* rp = result.data_ptr<c10::BFloat16>();
    const std::optional<DropoutMask> mask =
        dropout > 0.0 ? std::optional<DropoutMask>(DropoutMask(seed, 1.0 - dropout)) : std::nullopt;
    const int64_t block_rows = lora_block_rows(tokens);
    const int64_t blocks = (tokens + block_rows - 1) / block_rows;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      const at::AutoGradMode no_grad(false);  // pool threads start with gradients on; A requires grad
      torch::Tensor h = torch::empty({block_rows, in}, f32), lora = torch::empty({block_rows, out}, f32);
      torch::Tensor scale = mask ? torch::empty({block_rows, in}, f32) : torch::Tensor();
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t first = b * block_rows, n = std::min(block_rows, tokens - first);
        dropped_rows(xp, in, first, n, mask ? &*mask : nullptr, h.data_ptr<float>(),
                     mask ? scale.data_ptr<float>() : nullptr);
        torch::Tensor d = down.narrow(0, first, n);
        at::mm_out(d, h.narrow(0, 0, n), A_t).mul_(scaling);  // the scale on the rank-r side
        torch::Tensor lb = lora.narrow(0, 0, n);
        at::mm_out(lb, d, B_t);
        internal::add_into_bf16(yp + first * out, lora.const_data_ptr<float>(), rp + first * out, n * out);
      }
    });
    ctx->save_for_backward({x2, lora_A, lora_B, down});
    ctx->saved_data["scaling"] = scaling;
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["seed"] = static_cast<int64_t>(seed);
    return result.view(y.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x2 = saved[0], &lora_A = saved[1], &lora_B = saved[2], &down = saved[3];
    const double scaling = ctx->saved_data["scaling"].toDouble();
    const double dropout = ctx->saved_data["dropout"].toDouble();
    const uint64_t seed = static_cast<uint64_t>(ctx->saved_data["seed"].toInt());
    const int64_t r = lora_A.size(0), in = lora_A.size(1), out = lora_B.size(0), tokens = x2.size(0);
    const torch::Tensor& g = grads[0];
    const bool need_x = ctx->needs_input_grad(1), need_A = ctx->needs_input_grad(2), need_B = ctx->needs_input_grad(3);
    const auto f32 = x2.options().dtype(torch::kFloat32);
    const std::optional<DropoutMask> mask =
        dropout > 0.0 ? std::optional<DropoutMask>(DropoutMask(seed, 1.0 - dropout)) : std::nullopt;
    if (at::GradMode::is_enabled()) {
      // create_graph: the whole-tensor formula, whose ops autograd records, with the mask drawn in full.
      torch::Tensor scale;
      if (mask) {
        scale = torch::empty({tokens, in}, f32);
        mask->fill(0, scale.numel(), scale.data_ptr<float>());
      }
      const auto [grad_x, grad_A, grad_B] =
          lora_branch_grads(g, x2, lora_A, lora_B, down, scale, scaling, need_x, need_A, need_B);
      return {ctx->needs_input_grad(0) ? g : torch::Tensor(), grad_x, grad_A, grad_B, torch::Tensor(), torch::Tensor()};
    }
    const torch::Tensor g2 = g.reshape({-1, out}).to(torch::kBFloat16).contiguous();
    torch::Tensor grad_x = need_x ? torch::empty({tokens, in}, x2.options()) : torch::Tensor();
    const int64_t block_rows = lora_block_rows(tokens);
    const int64_t blocks = (tokens + block_rows - 1) / block_rows;
    // Per-thread sums of the adapters' gradients, added up at the end (parallel_for numbers its threads
    // below min(threads, blocks)); their split, and so the last bits of the sums, follow the thread count.
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks));
    torch::Tensor grad_A_parts = need_A ? torch::zeros({parts, r, in}, f32) : torch::Tensor();
    torch::Tensor grad_B_parts = need_B ? torch::zeros({parts, out, r}, f32) : torch::Tensor();
    if (need_x || need_A || need_B) {
      const c10::BFloat16* xp = x2.const_data_ptr<c10::BFloat16>();
      const c10::BFloat16* gp = g2.const_data_ptr<c10::BFloat16>();
      at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
        const at::AutoGradMode no_grad(false);
        const int64_t t = at::get_thread_num();
        torch::Tensor gf = torch::empty({block_rows, out}, f32), gd = torch::empty({block_rows, r}, f32);
        torch::Tensor h = torch::empty({block_rows, in}, f32);
        torch::Tensor scale = mask ? torch::empty({block_rows, in}, f32) : torch::Tensor();
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t first = b * block_rows, n = std::min(block_rows, tokens - first);
          torch::Tensor gb = gf.narrow(0, 0, n), gdb = gd.narrow(0, 0, n), hb = h.narrow(0, 0, n);
          internal::widen_bf16(gp + first * out, gf.data_ptr<float>(), n * out);
          if (need_B) grad_B_parts[t].addmm_(gb.t(), down.narrow(0, first, n));
          if (!need_x && !need_A) continue;
          at::mm_out(gdb, gb, lora_B).mul_(scaling);  // d loss / d down, [n, r]
          // The dropped-out input again for A's gradient (and with it the mask); x's needs only the mask.
          if (need_A)
            dropped_rows(xp, in, first, n, mask ? &*mask : nullptr, h.data_ptr<float>(),
                         mask ? scale.data_ptr<float>() : nullptr);
          else if (mask)
            mask->fill(first * in, n * in, scale.data_ptr<float>());
          if (need_A) grad_A_parts[t].addmm_(gdb.t(), hb);
          if (need_x) {
            at::mm_out(hb, gdb, lora_A);  // d loss / d h, into h's buffer (no longer needed)
            internal::scale_into_bf16(h.const_data_ptr<float>(), mask ? scale.const_data_ptr<float>() : nullptr,
                                      grad_x.data_ptr<c10::BFloat16>() + first * in, n * in);
          }
        }
      });
    }
    torch::Tensor grad_A = need_A ? grad_A_parts.sum(0) : torch::Tensor();
    torch::Tensor grad_B = need_B ? grad_B_parts.sum(0) : torch::Tensor();
    if (need_x) {
      auto sizes = g.sizes().vec();
      sizes.back() = in;
      grad_x = grad_x.view(sizes);
    }
    return {ctx->needs_input_grad(0) ? g : torch::Tensor(), grad_x, grad_A, grad_B, torch::Tensor(), torch::Tensor()};
  }
};

// residual + x W^T (residual optional) for a frozen bf16 base weight on the CPU while gradients are
// recorded: the forward product and the input gradient g W as row blocks per thread
// (detail::by_row_blocks), which oneDNN otherwise runs on a single thread at the MLP's K 1536 x N 576
// shape (the down projection forward, the gate and up projections' input gradients). The weight
// gets no gradient; x is not saved (only the weight-gradient would need it). Without a residual, pass
// with_residual = false and any defined tensor (autograd takes no undefined inputs).
struct FrozenLinear : public torch::autograd::Function<FrozenLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& residual, bool with_residual) {
    const int64_t in = weight.size(1), out = weight.size(0);
    const torch::Tensor x2 = x.reshape({-1, in}).contiguous();
    const torch::Tensor r2 = with_residual ? residual.reshape({-1, out}) : torch::Tensor();
    torch::Tensor y =
        detail::by_row_blocks(x2.size(0), out, x2.options(), [&](int64_t first, int64_t n, torch::Tensor rows_out) {
          const torch::Tensor rows = x2.narrow(0, first, n);
          if (r2.defined())
            at::addmm_out(rows_out, r2.narrow(0, first, n), rows, weight.t());
          else
            at::mm_out(rows_out, rows, weight.t());
        });
    ctx->save_for_backward({weight});
    ctx->saved_data["with_residual"] = with_residual;
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    return y.view(sizes);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor weight = ctx->get_saved_variables()[0];
    const torch::Tensor& g = grads[0];
    torch::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      const torch::Tensor g2 = g.reshape({-1, weight.size(0)}).contiguous();
      grad_x = detail::by_row_blocks(g2.size(0), weight.size(1), g2.options(),
                                     [&](int64_t first, int64_t n, torch::Tensor rows_out) {
                                       at::mm_out(rows_out, g2.narrow(0, first, n), weight);
                                     });
      auto sizes = g.sizes().vec();
      sizes.back() = weight.size(1);
      grad_x = grad_x.view(sizes);
    }
    const bool with_residual = ctx->saved_data["with_residual"].toBool();
    return {grad_x, torch::Tensor(), with_residual && ctx->needs_input_grad(2) ? g : torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

double LoraConfig::scaling() const { return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

void LoraConfig::validate() const {
  LLM4DSR_CHECK(r > 0, "LoraConfig: r must be > 0, got " << r);
  LLM4DSR_CHECK(dropout >= 0.0 && dropout < 1.0, "LoraConfig: dropout must be in [0, 1), got " << dropout);
  if (!target_regex.empty()) {
    try {
      std::regex re(target_regex);
    } catch (const std::regex_error& e) {
      LLM4DSR_THROW("LoraConfig: target_regex '" << target_regex << "' is not a valid regular expression: " << e.what());
    }
    return;
  }
  LLM4DSR_CHECK(!target_modules.empty(), "LoraConfig: target_modules is empty");
  for (const auto& t : target_modules) {
    if (t == "all-linear") {
      LLM4DSR_CHECK(target_modules.size() == 1, "LoraConfig: 'all-linear' must be the only target module");
      continue;
    }
    bool known = false;
    for (const char* p : kProjections) known = known || ends_with(t, p);
    LLM4DSR_CHECK(known, "LoraConfig: target module '"
                             << t << "' names no projection of a Llama model (expected q_proj, k_proj, v_proj, o_proj, "
                                     "gate_proj, up_proj, down_proj or all-linear)");
  }
}

bool LoraConfig::matches(const std::string& module_name, int64_t layer_index) const {
  if (!layers_to_transform.empty() &&
      std::find(layers_to_transform.begin(), layers_to_transform.end(), layer_index) == layers_to_transform.end())
    return false;
  if (!target_regex.empty()) return std::regex_match(module_name, std::regex(target_regex));
  for (const auto& t : target_modules) {
    if (t == "all-linear") {
      for (const char* p : kProjections)
        if (ends_with(module_name, std::string(".") + p)) return true;
      continue;
    }
    if (module_name == t || ends_with(module_name, "." + t)) return true;
  }
  return false;
}

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, bool with_bias, torch::TensorOptions options)
    : in_features_(in_features), out_features_(out_features), packed_weight_(std::make_shared<detail::PackedWeight>()) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}, options));
}

torch::Tensor LoraLinearImpl::inference_weight(const torch::Tensor& x) { return packed_weight_->for_product(x, weight); }

void LoraLinearImpl::release_packed_weight() { packed_weight_->clear(); }

void LoraLinearImpl::set_weight_packing(bool enabled) { packed_weight_->set_enabled(enabled); }

bool LoraLinearImpl::weight_packing() const { return packed_weight_->enabled(); }

bool LoraLinearImpl::has_packed_weight() const { return packed_weight_->holds_copy(); }

bool LoraLinearImpl::frozen_rows_product(const torch::Tensor& x) const {
  return at::GradMode::is_enabled() && !weight.requires_grad() && !bias.defined() && x.device().is_cpu() &&
         x.scalar_type() == torch::kBFloat16 && weight.scalar_type() == torch::kBFloat16 &&
         !at::autocast::is_autocast_enabled(x.device().type()) && detail::native_bf16_gemm() &&
         detail::row_blocks_apply(x.numel() / in_features_);
}

torch::Tensor LoraLinearImpl::fast_base_product(const torch::Tensor& x, const torch::Tensor& residual, bool in_place) {
  const bool with_residual = residual.defined();
  const torch::Tensor w = inference_weight(x);
  if (w.is_mkldnn())
    return with_residual ? detail::packed_linear_add(x, w, residual) : detail::packed_linear(x, w, bias, out_features_);
  if (detail::is_bf16x3_weight(w, weight))
    return detail::bf16x3_linear(x, w, with_residual ? torch::Tensor() : bias, residual, in_place);
  if (detail::onednn_fp32_product_applies(x, weight))
    return detail::onednn_fp32_linear(x, weight, with_residual ? torch::Tensor() : bias, residual);
  if (frozen_rows_product(x)) return FrozenLinear::apply(x, weight, with_residual ? residual : weight, with_residual);
  return {};
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = fast_base_product(x, torch::Tensor(), false);
  return add_lora(y.defined() ? y : torch::linear(x, weight, bias), x);
}

torch::Tensor LoraLinearImpl::forward_add(const torch::Tensor& x, const torch::Tensor& residual, bool in_place) {
  // One GEMM with beta = 1 instead of a product followed by an elementwise sum: the output is written
  // once and, in place, no [tokens, out] tensor is allocated at all.
  // Not under autocast: it would run the folded GEMM, residual included, in bf16, where HF keeps the
  // residual stream in fp32 (its fp32 + bf16 sum promotes).
  const bool gemm = !bias.defined() && residual.scalar_type() == weight.scalar_type() && residual.is_contiguous() &&
                    residual.size(-1) == out_features_ && x.size(-1) == in_features_ &&
                    !at::autocast::is_autocast_enabled(x.device().type());
  if (!gemm) {
    torch::Tensor y = forward(x);
    return in_place ? residual.add_(y) : residual + y;
  }
  // in_place comes only without recorded gradients, where FrozenLinear never applies.
  if (torch::Tensor y = fast_base_product(x, residual, in_place); y.defined()) return add_lora(y, x);
  const torch::Tensor x2 = x.reshape({-1, in_features_});
  const torch::Tensor r2 = residual.view({-1, out_features_});
  torch::Tensor out;
  if (in_place) {
    r2.addmm_(x2, weight.t());
    out = residual;
  } else {
    out = at::addmm(r2, x2, weight.t()).view(residual.sizes());
  }
  return add_lora(out, x);
}

bool LoraLinearImpl::adds_branch() const {
  // Unmerged: the branch is added unless bypassed. Merged: the weight holds it, and a bypass on this
  // thread (LoraBypassGuard) needs it subtracted.
  return lora_A.defined() && merged_ == lora_bypassed_on_this_thread();
}

torch::Tensor LoraLinearImpl::add_lora(const torch::Tensor& y, const torch::Tensor& x) {
  if (!adds_branch()) return y;
  // Under a LoraBypassGuard a merged product has the branch taken back out (no dropout, scale negated).
  const bool bypass = merged_;
  const double scaling = bypass ? -scaling_ : scaling_;
  const double dropout = is_training() && !bypass ? dropout_ : 0.0;
  const bool fp32_adapters = lora_A.scalar_type() == torch::kFloat32;
  if (at::GradMode::is_enabled() && x.device().is_cpu() && !at::autocast::is_autocast_enabled(x.device().type()) &&
      (dropout == 0.0 || fp32_adapters)) {
    if (y.scalar_type() == torch::kBFloat16 && x.scalar_type() == torch::kBFloat16 && fp32_adapters)
      return LoraBranchBf16::apply(y, x, lora_A, lora_B, dropout, scaling);
    return LoraBranch::apply(y, x, lora_A, lora_B, dropout, scaling);
  }
  torch::Tensor h;
  if (dropout > 0.0 && x.device().is_cpu() && !at::GradMode::is_enabled() && fp32_adapters) {
    h = lora_dropout_fp32(x.contiguous(), dropout).first;
  } else {
    h = x.to(lora_A.scalar_type());
    if (dropout > 0.0) h = torch::dropout(h, dropout, /*train=*/true);
  }
  // The scale goes on the rank-r intermediate ([tokens, r]) rather than on the [tokens, out] product.
  const torch::Tensor down = torch::linear(h, lora_A).reshape({-1, rank_}) * scaling;
  const bool same_dtype = y.scalar_type() == lora_B.scalar_type();
  if (!at::GradMode::is_enabled()) {
    if (same_dtype && y.is_contiguous()) {
      y.view({-1, out_features_}).addmm_(down, lora_B.t());
      return y;
    }
    // A bf16/fp16 base with fp32 adapters: the in-place sum is computed in fp32 and rounded once.
    return y.add_(torch::mm(down, lora_B.t()).view(y.sizes()));
  }
  if (same_dtype) return at::addmm(y.reshape({-1, out_features_}), down, lora_B.t()).view(y.sizes());
  return (y + torch::mm(down, lora_B.t()).view(y.sizes())).to(y.scalar_type());
}

void LoraLinearImpl::add_adapter(int64_t r, double alpha, double dropout, bool use_rslora, at::Generator& generator) {
  LLM4DSR_CHECK(!lora_A.defined(), "LoraLinear: an adapter is already present; remove it first");
  LLM4DSR_CHECK(r > 0, "LoraLinear: r must be > 0, got " << r);
  rank_ = r;
  scaling_ = use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
  dropout_ = dropout;
  merged_ = false;
  const auto base = weight.scalar_type();
  const auto dtype = (base == torch::kBFloat16 || base == torch::kFloat16) ? torch::kFloat32 : base;
  // kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)), bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
  const double a = std::sqrt(5.0);
  const double bound = std::sqrt(2.0 / (1.0 + a * a)) * std::sqrt(3.0 / double(in_features_));
  torch::Tensor A = torch::empty({r, in_features_}, torch::kFloat32);
  A.uniform_(-bound, bound, generator);
  lora_A = A.to(weight.device(), dtype);
  lora_B = torch::zeros({out_features_, r}, torch::TensorOptions().dtype(dtype).device(weight.device()));
  register_module("lora_A", holder(lora_A));
  register_module("lora_B", holder(lora_B));
  weight.set_requires_grad(false);
  if (bias.defined()) bias.set_requires_grad(false);
}

void LoraLinearImpl::remove_adapter() {
  if (!lora_A.defined()) return;
  unmerge();
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = torch::Tensor();
  lora_B = torch::Tensor();
  rank_ = 0;
  scaling_ = 0.0;
  dropout_ = 0.0;
}

void LoraLinearImpl::merge() {
  LLM4DSR_CHECK(lora_A.defined(), "LoraLinear: merge() without an adapter");
  if (merged_) return;
  torch::NoGradGuard no_grad;
  auto delta = torch::matmul(lora_B.to(torch::kFloat32), lora_A.to(torch::kFloat32)) * scaling_;
  weight.copy_((weight.to(torch::kFloat32) + delta).to(weight.scalar_type()));
  merged_ = true;
}

void LoraLinearImpl::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  auto delta = torch::matmul(lora_B.to(torch::kFloat32), lora_A.to(torch::kFloat32)) * scaling_;
  weight.copy_((weight.to(torch::kFloat32) - delta).to(weight.scalar_type()));
  merged_ = false;
}

}  // namespace llm4dsr
