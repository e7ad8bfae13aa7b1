// Linear products through oneDNN's linear ops as libtorch registers them (internal): the lookup every
// oneDNN caller here shares, and fp32 products on CPUs where libtorch's own fp32 GEMM is the slow one.
//
// libtorch's fp32 GEMM is MKL's sgemm. On x86 CPUs not made by Intel, MKL runs its AVX2 code even
// where the CPU has AVX-512: on an AMD EPYC (Zen 5, two threads) it reached 205-215 GFLOP/s at
// SmolLM2's projection shapes (1,024-4,096 rows) and 160-170 at the lm_head's, where oneDNN's fp32
// GEMM, on the same plain row-major matrices, reached 430-480 and 300-410: both IEEE fp32 FMAs, with
// errors of the same order (6.6e-6 against 2.7e-6 of the mean output at K = 576, measured against
// float64). oneDNN is also 2.8x faster on the 49k-row lm_head at one row (decode: 6.8 -> 2.4 ms), but
// 1.2-1.9x slower on the small projections at one row, where its per-call setup dominates.
//
// So fp32 products run through oneDNN where the setting says so (runtime.h: set_fp32_gemm; by default
// on x86 CPUs with AVX-512 not made by Intel), with or without recorded gradients. Weights stay plain
// fp32 tensors: no reordered copies, nothing to keep in sync.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/types.h>

namespace llm4dsr::detail {

// oneDNN's linear ops as torch.compile's CPU backend uses them (mkldnn::_linear_pointwise with post-ops,
// mkldnn::_reorder_linear_weight), looked up once through the dispatcher: libtorch registers them but
// does not declare them in its headers. Absent (all three) from a libtorch whose signatures differ.
using OneDnnUnaryFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                 std::string_view, c10::List<std::optional<at::Scalar>>,
                                 std::optional<std::string_view>);
using OneDnnBinaryFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const std::optional<at::Tensor>&, std::string_view);
using OneDnnReorderFn = at::Tensor(const at::Tensor&, std::optional<int64_t>);

struct OneDnnOps {
  std::optional<c10::TypedOperatorHandle<OneDnnUnaryFn>> unary;    // x W^T (+ bias), then an activation
  std::optional<c10::TypedOperatorHandle<OneDnnBinaryFn>> binary;  // x W^T combined with another tensor
  std::optional<c10::TypedOperatorHandle<OneDnnReorderFn>> reorder;
  bool present() const { return unary && binary && reorder; }
};
const OneDnnOps& onednn_ops();

// x's sizes with the last one replaced by `last`.
std::vector<int64_t> sizes_with_last(const torch::Tensor& x, int64_t last);

// Set once a oneDNN call failed (e.g. a libtorch built without these post-ops): every caller then takes
// the plain ATen path for good, instead of an exception on every product.
bool onednn_failed();
void mark_onednn_failed();

// Whether this x86 CPU's vendor is Intel (false off x86).
bool intel_cpu();

// An x86 CPU with AVX-512 whose vendor is not Intel: there MKL, behind libtorch's fp32 GEMMs, runs its
// AVX2 code. The fp32 products (onednn_fp32_preferred) and fp32 attention (internal/cpu_attention.h)
// leave libtorch's path on such CPUs.
bool non_intel_avx512_cpu();

// residual2 + x2 W^T, or x2 W^T + bias (bias optional), on rows x2 [rows, in]: one oneDNN call, the
// residual added on the accumulators. weight [out, in]: plain (any strides, e.g. a transposed view) or
// reordered by ops.reorder. A fresh [rows, out] result (oneDNN's linear has no out= form).
torch::Tensor onednn_rows_product(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias,
                                  const torch::Tensor& residual2);

// The "auto" choice (runtime.h: Fp32Gemm::kAuto): an x86 CPU with AVX-512 whose vendor is not Intel,
// oneDNN enabled in torch and its linear ops present.
bool onednn_fp32_preferred();

// Whether fp32 products run through oneDNN under the current setting (runtime.h: fp32_gemm()).
bool onednn_fp32_gemm();

// Fewest rows for which a product with a weight below kOneDnnFp32LargeWeight runs through oneDNN: at one
// row its per-call setup costs more than MKL's matrix-vector product (576 x 576: 36 us against 19);
// from 4 rows it is 1.8-2.2x faster.
constexpr int64_t kOneDnnFp32MinRows = 4;
// A weight at least this large (elements) goes through oneDNN at any row count: reading it dominates,
// and oneDNN reads faster (the lm_head at one row: 2.4 ms against 6.8).
constexpr int64_t kOneDnnFp32LargeWeight = int64_t(1) << 22;

// Whether the product of x [..., in] with weight [out, in] runs through oneDNN: onednn_fp32_gemm(),
// both fp32 on the CPU, weight a matrix matching x, outside autocast (whose products are bf16), and
// enough rows (or a large weight, above).
bool onednn_fp32_product_applies(const torch::Tensor& x, const torch::Tensor& weight);

// residual + x W^T + bias (residual and bias optional, not both) through oneDNN, the residual added on
// the accumulators (one pass over the output). While gradients are recorded it is one autograd node
// whose backward runs its products through oneDNN too: dx = g W, dW = g^T x (only when the weight
// requires a gradient; x is saved only then), db = sum of g over the rows, d residual = g.
torch::Tensor onednn_fp32_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                 const torch::Tensor& residual);

}  // namespace llm4dsr::detail
