#include "model/bf16x3_linear.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <climits>
#include <cstdint>
#include <cstring>

#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "internal/bf16_kernels.h"
#include "internal/tensor_elements.h"
#include "llm4dsr/error.h"
#include "model/packed_linear.h"

// MKL's CBLAS bf16 x bf16 -> fp32 GEMM (LP64 interface; the enums are ints), exported by the libtorch
// builds that bundle MKL (x86-64 Linux). Declared weak so that the library still loads against a
// libtorch without it: the address is then null and products stay on fp32.
extern "C" void cblas_gemm_bf16bf16f32(int layout, int transa, int transb, int m, int n, int k, float alpha,
                                       const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta, float* c,
                                       int ldc) __attribute__((weak));

namespace llm4dsr::detail {

namespace {

constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;

bool fp32_cpu(const torch::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat32; }

// A contiguous fp32 matrix [rows, n] as bf16 [rows, 3n] in three blocks of n: each row's high halves in
// block 0 and in whichever of blocks 1 and 2 lo_block is not, its low halves in block lo_block.
torch::Tensor split_rows(const torch::Tensor& m, int lo_block) {
  const int64_t rows = m.size(0), n = m.size(1);
  const int64_t hi_copy = lo_block == 1 ? 2 : 1;
  torch::Tensor split = torch::empty({rows, 3 * n}, m.options().dtype(torch::kBFloat16));
  const float* from = m.data_ptr<float>();
  auto* to = split.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      c10::BFloat16* row = to + r * 3 * n;
      internal::split_bf16(from + r * n, row, row + lo_block * n, n);
      std::memcpy(row + hi_copy * n, row, n * sizeof(c10::BFloat16));
    }
  });
  return split;
}

}  // namespace

bool bf16x3_supported() {
  static const bool amx = cpu_has("amx_bf16");
  return cblas_gemm_bf16bf16f32 != nullptr && amx && native_bf16_gemm();
}

bool bf16x3_requested() {
  if (!bf16x3_supported()) return false;
  return at::globalContext().float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL) ==
         at::Float32Precision::TF32;
}

bool bf16x3_product_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  if (at::GradMode::is_enabled() || !fp32_cpu(x) || !fp32_cpu(weight) || weight.dim() != 2) return false;
  // Under autocast the product is autocast's (one bf16 pass, a bf16 result the adapter branch expects).
  if (at::autocast::is_autocast_enabled(x.device().type())) return false;
  if (x.dim() == 0 || weight.size(1) == 0 || x.size(-1) != weight.size(1) ||
      x.numel() / weight.size(1) < kBf16x3MinRows)
    return false;
  return bf16x3_requested();
}

torch::Tensor bf16x3_weight(const torch::Tensor& weight) {
  LLM4DSR_CHECK(fp32_cpu(weight) && weight.dim() == 2, "bf16x3_weight: expected an fp32 CPU matrix, got "
                                                           << weight.scalar_type() << " " << weight.sizes());
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.contiguous();
  // [wh | wh | wl]: against [xh | xl | xh] this sums xh.wh + xl.wh + xh.wl.
  return split_rows(w, /*lo_block=*/2);
}

bool is_bf16x3_weight(const torch::Tensor& copy, const torch::Tensor& weight) {
  return copy.defined() && !copy.is_mkldnn() && copy.scalar_type() == torch::kBFloat16 &&
         weight.scalar_type() == torch::kFloat32 && copy.dim() == 2 && weight.dim() == 2 &&
         copy.size(0) == weight.size(0) && copy.size(1) == 3 * weight.size(1);
}

torch::Tensor bf16x3_linear(const torch::Tensor& x, const torch::Tensor& split_weight, const torch::Tensor& bias,
                            const torch::Tensor& residual, bool in_place) {
  LLM4DSR_CHECK(cblas_gemm_bf16bf16f32 != nullptr, "bf16x3_linear: this libtorch has no gemm_bf16bf16f32");
  LLM4DSR_CHECK(fp32_cpu(x) && split_weight.scalar_type() == torch::kBFloat16 && split_weight.dim() == 2 &&
                    split_weight.size(1) == 3 * x.size(-1),
                "bf16x3_linear: x " << x.scalar_type() << " " << x.sizes() << " does not fit the split weight "
                                    << split_weight.scalar_type() << " " << split_weight.sizes());
  LLM4DSR_CHECK(!(residual.defined() && bias.defined()), "bf16x3_linear: a residual and a bias together");
  torch::NoGradGuard no_grad;
  const int64_t in = x.size(-1), out_features = split_weight.size(0);
  const torch::Tensor x2 = x.reshape({-1, in}).contiguous();
  const int64_t rows = x2.size(0);
  LLM4DSR_CHECK(rows < INT_MAX && out_features < INT_MAX && 3 * in < INT_MAX,
                "bf16x3_linear: " << rows << " x " << 3 * in << " x " << out_features << " exceeds MKL's 32-bit sizes");
  const torch::Tensor w = split_weight.contiguous();

  // [xh | xl | xh] per row, matching the weight's [wh | wh | wl].
  const torch::Tensor split_x = split_rows(x2, /*lo_block=*/1);

  torch::Tensor out;
  float beta = 0.0f;
  if (residual.defined()) {
    LLM4DSR_CHECK(fp32_cpu(residual) && residual.numel() == rows * out_features,
                  "bf16x3_linear: residual " << residual.sizes() << " does not match the product's [" << rows << ", "
                                             << out_features << "]");
    LLM4DSR_CHECK(!in_place || residual.is_contiguous(), "bf16x3_linear: an in-place residual must be contiguous");
    out = in_place ? residual.view({rows, out_features}) : residual.reshape({rows, out_features}).clone();
    beta = 1.0f;
  } else {
    out = torch::empty({rows, out_features}, x2.options());
  }
  if (rows > 0 && out_features > 0) {
    const uint16_t* a = internal::elements<uint16_t>(split_x);
    const uint16_t* b = internal::elements<uint16_t>(w);
    cblas_gemm_bf16bf16f32(kCblasRowMajor, kCblasNoTrans, kCblasTrans, static_cast<int>(rows),
                           static_cast<int>(out_features), static_cast<int>(3 * in), 1.0f, a, static_cast<int>(3 * in),
                           b, static_cast<int>(3 * in), beta, out.data_ptr<float>(), static_cast<int>(out_features));
  }
  if (bias.defined()) out.add_(bias);
  if (residual.defined() && in_place) {
    // Written through a raw pointer: bump the version counter as an in-place ATen op would, so that a
    // graph that saved `residual` still detects the change.
    torch::autograd::impl::bump_version(residual);
    return residual;
  }
  if (residual.defined()) return out.view(residual.sizes());
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return out.view(sizes);
}

}  // namespace llm4dsr::detail
