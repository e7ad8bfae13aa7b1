// SwiGLU's elementwise part, silu(gate) * up, and its gradient, each one pass over memory (internal).
//
// In LoRA training autograd ran it as silu, mul and, backward, two muls and silu_backward: five passes
// over [tokens, intermediate] tensors, each writing a fresh one, and three of them kept for backward.
// At batch 32 x 128 tokens on SmolLM2's dims that was 14% of a bf16 training step (a 2.8 ms mul per
// 6.3M elements: memory-bound). Here the forward reads gate and up and writes the product, the backward
// reads the gradient, gate and up and writes both gradients; only gate and up are kept. Arithmetic is
// fp32 for fp32 and bf16 tensors alike, rounded once per output (ATen's bf16 chain rounds silu(gate)
// and grad * up to bf16 on the way).
#pragma once

#include <utility>

#include <torch/types.h>

namespace llm4dsr::internal {

// Whether the kernels take gate and up: CPU tensors of the same sizes, both fp32 or both bf16,
// contiguous.
bool swiglu_kernel_applies(const torch::Tensor& gate, const torch::Tensor& up);

// silu(gate) * up, a fresh tensor of gate's sizes and dtype. Requires swiglu_kernel_applies.
torch::Tensor swiglu_forward(const torch::Tensor& gate, const torch::Tensor& up);

// The gradients of silu(gate) * up for the incoming gradient `grad` (gate's sizes and dtype, any
// strides): (grad * up * silu'(gate), grad * silu(gate)), where silu'(g) = s (1 + g (1 - s)) with
// s = sigmoid(g). Requires swiglu_kernel_applies(gate, up).
std::pair<torch::Tensor, torch::Tensor> swiglu_backward(const torch::Tensor& grad, const torch::Tensor& gate,
                                                        const torch::Tensor& up);

}  // namespace llm4dsr::internal
