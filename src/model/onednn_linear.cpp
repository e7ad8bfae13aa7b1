#include "model/onednn_linear.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <atomic>
#include <cstring>

#include <torch/torch.h>

#include "llm4dsr/runtime.h"
#include "model/packed_linear.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace llm4dsr::detail {

namespace {

std::atomic<bool> onednn_failed_flag{false};

// Autograd inputs cannot be undefined: absent bias / residual come in as `weight` with a flag.
struct OneDnnLinearFunction : public torch::autograd::Function<OneDnnLinearFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const torch::Tensor& residual, bool with_bias,
                               bool with_residual) {
    const int64_t in = weight.size(1), out = weight.size(0);
    const torch::Tensor x2 = x.reshape({-1, in}).contiguous();
    const torch::Tensor y = onednn_rows_product(x2, weight, with_bias ? bias : torch::Tensor(),
                                    with_residual ? residual.reshape({-1, out}).contiguous() : torch::Tensor());
    // x is needed only for the weight's gradient; a frozen weight (LoRA) saves nothing of the activations.
    ctx->save_for_backward({weight, weight.requires_grad() ? x2 : torch::Tensor()});
    ctx->saved_data["with_bias"] = with_bias;
    ctx->saved_data["with_residual"] = with_residual;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    return y.view(sizes_with_last(x, out));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& weight = saved[0];
    const int64_t out = weight.size(0);
    const torch::Tensor g2 = grads[0].reshape({-1, out}).contiguous();
    torch::Tensor grad_x, grad_w, grad_b;
    // g W as a linear whose weight is W^T ([in, out], a view: oneDNN reads it with its strides).
    if (ctx->needs_input_grad(0))
      grad_x = onednn_rows_product(g2, weight.t(), torch::Tensor(), torch::Tensor()).view(ctx->saved_data["x_sizes"].toIntVector());
    // dW^T = x^T g as a linear of x^T's rows with g^T for weight, then viewed back as [out, in].
    if (ctx->needs_input_grad(1)) grad_w = onednn_rows_product(saved[1].t().contiguous(), g2.t(), torch::Tensor(), torch::Tensor()).t();
    const bool with_bias = ctx->saved_data["with_bias"].toBool();
    const bool with_residual = ctx->saved_data["with_residual"].toBool();
    if (with_bias && ctx->needs_input_grad(2)) grad_b = g2.sum(0);
    return {grad_x,
            grad_w,
            grad_b,
            with_residual && ctx->needs_input_grad(3) ? grads[0] : torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

const OneDnnOps& onednn_ops() {
  static const OneDnnOps ops = [] {
    OneDnnOps o;
    auto& dispatcher = c10::Dispatcher::singleton();
    try {
      if (auto op = dispatcher.findOp({"mkldnn::_linear_pointwise", ""})) o.unary = op->typed<OneDnnUnaryFn>();
      if (auto op = dispatcher.findOp({"mkldnn::_linear_pointwise", "binary"})) o.binary = op->typed<OneDnnBinaryFn>();
      if (auto op = dispatcher.findOp({"mkldnn::_reorder_linear_weight", ""})) o.reorder = op->typed<OneDnnReorderFn>();
    } catch (const c10::Error&) {
      o = OneDnnOps{};  // a libtorch whose signatures differ from these: the plain ATen path
    }
    return o;
  }();
  return ops;
}

std::vector<int64_t> sizes_with_last(const torch::Tensor& x, int64_t last) {
  auto sizes = x.sizes().vec();
  sizes.back() = last;
  return sizes;
}

torch::Tensor onednn_rows_product(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias,
                                  const torch::Tensor& residual2) {
  if (residual2.defined()) return onednn_ops().binary->call(x2, residual2, weight, std::nullopt, "add");
  std::optional<at::Tensor> b;
  if (bias.defined()) b = bias;
  return onednn_ops().unary->call(x2, weight, b, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

bool onednn_failed() { return onednn_failed_flag.load(std::memory_order_relaxed); }

void mark_onednn_failed() { onednn_failed_flag = true; }

bool intel_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool intel = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return false;
    char vendor[13] = {};
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
    return std::strcmp(vendor, "GenuineIntel") == 0;
  }();
  return intel;
#else
  return false;
#endif
}

bool non_intel_avx512_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool yes = !intel_cpu() && cpu_has("avx512_f");
  return yes;
#else
  return false;
#endif
}

bool onednn_fp32_preferred() {
  return non_intel_avx512_cpu() && at::globalContext().userEnabledMkldnn() && onednn_ops().present();
}

bool onednn_fp32_gemm() {
  return fp32_gemm() == Fp32Gemm::kOneDnn && !onednn_failed() && at::globalContext().userEnabledMkldnn() &&
         onednn_ops().present();
}

bool onednn_fp32_product_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || !weight.device().is_cpu() ||
      weight.scalar_type() != torch::kFloat32 || weight.dim() != 2 || weight.is_mkldnn())
    return false;
  if (x.dim() == 0 || weight.size(1) == 0 || weight.size(0) == 0 || x.size(-1) != weight.size(1)) return false;
  if (at::autocast::is_autocast_enabled(x.device().type())) return false;
  const int64_t rows = x.numel() / weight.size(1);
  if (rows == 0 || (rows < kOneDnnFp32MinRows && weight.numel() < kOneDnnFp32LargeWeight)) return false;
  return onednn_fp32_gemm();
}

torch::Tensor onednn_fp32_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 const torch::Tensor& residual) {
  const int64_t in = weight.size(1), out = weight.size(0);
  try {
    const bool grad = at::GradMode::is_enabled() &&
                      (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()) ||
                       (residual.defined() && residual.requires_grad()));
    if (grad)
      return OneDnnLinearFunction::apply(x, weight, bias.defined() ? bias : weight,
                                         residual.defined() ? residual : weight, bias.defined(), residual.defined());
    const torch::Tensor x2 = x.reshape({-1, in}).contiguous();
    return onednn_rows_product(x2, weight, bias, residual.defined() ? residual.reshape({-1, out}).contiguous() : torch::Tensor())
        .view(sizes_with_last(x, out));
  } catch (const c10::Error&) {
    mark_onednn_failed();
    torch::Tensor y = torch::linear(x, weight, bias);
    return residual.defined() ? residual + y : y;
  }
}

}  // namespace llm4dsr::detail
