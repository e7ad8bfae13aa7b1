// Row-wise RMSNorm kernels for CPU: HF's LlamaRMSNorm arithmetic (fp32 statistics, the normalised
// row rounded to the input's dtype before the weight is applied) in one pass over each row that keeps
// the row in L1, instead of ATen's sequence of full-tensor passes (cast, square, mean, rsqrt, two
// products, cast back), each of which allocates and streams a full-size tensor.
#pragma once

#include <utility>

#include <torch/types.h>

namespace llm4dsr::internal {

// Whether the kernels below take these tensors: CPU, float / bfloat16 / float16 input with a
// weight of the same dtype and a last dimension equal to the weight's length.
bool rms_norm_kernel_applies(const torch::Tensor& x, const torch::Tensor& weight);

// weight * (x.float() * inv_rms).to(x.dtype) with inv_rms = 1 / sqrt(mean(x.float()^2) + eps) per row.
// When inv_rms_out is given it receives the fp32 inverse RMS of every row, shaped like x without its
// last dimension (for rms_norm_backward).
torch::Tensor rms_norm_forward(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                               torch::Tensor* inv_rms_out = nullptr);

// Gradients of sum(grad * rms_norm_forward(x)) with respect to x and (when need_weight) the weight,
// computed in fp32 and returned in x's and the weight's dtype: with n = x * r and gn = grad * weight,
// dx = r * (gn - n * mean(gn * n)) and dweight = sum over rows of grad * n (n rounded as the forward
// rounds it).
std::pair<torch::Tensor, torch::Tensor> rms_norm_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                                          const torch::Tensor& weight, const torch::Tensor& inv_rms,
                                                          bool need_weight);

}  // namespace llm4dsr::internal
