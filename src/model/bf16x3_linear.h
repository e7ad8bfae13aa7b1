// fp32 products on bf16 matrix units: each fp32 factor taken as the sum of two bf16 numbers (internal).
//
// PyTorch's float32 matmul precision "high" means "TensorFloat32, or each float32 number treated as the
// sum of two bfloat16 numbers". On the CPU, PyTorch maps "high" to oneDNN's TF32 mode, which only
// machines with TF32 units speed up; elsewhere the product stays IEEE fp32. A machine with AMX-BF16
// runs bf16 products with fp32 accumulation about 7 times faster than fp32 FMAs (2.5 TFLOP/s against
// 0.35 on two cores here), so this library takes "high" at its word there (AVX512-BF16 alone is only
// about 2x fp32: three products would lose): with x = xh + xl and w = wh + wl (xh = bf16(x),
// xl = bf16(x - xh)),
//
//     x . w  ~=  xh . wh + xl . wh + xh . wl
//
// (xl . wl, about 2^-18 of the product, is smaller than what the two halves leave out of x and w
// anyway). The three products run as ONE bf16 GEMM over a 3x longer inner dimension: [xh | xl | xh] times [wh | wh | wl],
// accumulated in fp32 (MKL's gemm_bf16bf16f32, which libtorch carries). Each operand keeps about 16
// significant bits instead of 24: measured on random [1024 x 576] x [576 x 1536] products, the largest
// error is 3e-5 of the mean output magnitude, against 4e-6 for fp32 FMAs and 1.5e-2 for a single bf16
// pass ("medium"). 1.2-1.5x faster than fp32 per product at 256-1,024 rows (M x 576 x 576 / 1536 and
// 1536 x 576), about 2x at 4,096. Fewer rows stay on fp32: there the product leans on reading the
// weight, 1.5x larger here (prompt processing of one 128-token row was 15% slower split).
//
// Used only where no gradient is recorded (forward, scoring, generation), under
// torch.set_float32_matmul_precision("high") (or torch.backends.mkldnn.matmul.fp32_precision = "tf32"),
// on machines with AMX-BF16, not under autocast. "highest", the default, is never affected. Values
// within 2^-8 of FLT_MAX, and infinities, split into hi = inf and lo = -inf (or NaN) and give NaN
// where fp32 would not.
#pragma once

#include <torch/types.h>

namespace llm4dsr::detail {

// Fewest rows for which the split product is used (break-even of a product whose weight is in the
// cache is near 32-128 rows; in a model, where it is not, higher).
constexpr int64_t kBf16x3MinRows = 256;

// Whether split products can run here: AMX-BF16 on this machine (and oneDNN enabled), and libtorch's
// MKL exposing gemm_bf16bf16f32.
bool bf16x3_supported();

// bf16x3_supported() and precision "high" requested through torch (oneDNN's matmul precision "tf32").
bool bf16x3_requested();

// Whether the product of x with weight runs split: bf16x3_requested(), x and weight fp32 on the CPU,
// weight a matrix, no gradient recorded, and at least kBf16x3MinRows rows in x.
bool bf16x3_product_applies(const torch::Tensor& x, const torch::Tensor& weight);

// The split copy of weight [out, in] (fp32): [out, 3 * in] bf16 holding [wh | wh | wl] per row.
torch::Tensor bf16x3_weight(const torch::Tensor& weight);

// Whether `copy` is what bf16x3_weight made of `weight`.
bool is_bf16x3_weight(const torch::Tensor& copy, const torch::Tensor& weight);

// x [..., in] (fp32) times the split weight: x W^T (+ bias), or residual + x W^T when residual is
// defined (the GEMM's beta = 1; bias must then be undefined). With in_place the sum is formed in
// `residual` itself (it must be contiguous); callers always use the returned tensor.
torch::Tensor bf16x3_linear(const torch::Tensor& x, const torch::Tensor& split_weight, const torch::Tensor& bias,
                            const torch::Tensor& residual = torch::Tensor(), bool in_place = false);

}  // namespace llm4dsr::detail
