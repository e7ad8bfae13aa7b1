// Rotary position embedding (HF's rotate-half form) as one pass over memory, writing fp32 or the
// input's dtype (internal).
//
// rotate(x, cos, sin, sign) = x * cos + sign * rotate_half(x) * sin, rotate_half(x) = [-x2, x1]. With
// sign = +1 it is RoPE; with sign = -1 it is RoPE's transpose, hence its gradient. In LoRA training the
// queries and keys were rotated by a product and two half-width multiply-adds (three passes), and the
// same again backward; this reads x once and writes the result once, in the dtype attention reads
// (bf16 for the bf16 training attention, fp32 where attention runs on upcast copies, saving the upcast's
// pass). Arithmetic is fp32, rounded once when the output is bf16.
#pragma once

#include <torch/types.h>

namespace llm4dsr::internal {

// Whether rotate() takes x [B, T, heads, D] (CPU, fp32 or bf16, unit inner stride, D even) with
// cos/sin [B or 1, T, D] (CPU, fp32 or bf16, contiguous; HF's cat(freqs, freqs): their two halves equal).
bool rotary_kernel_applies(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// x * cos + sign * rotate_half(x) * sin as a fresh contiguous [B, T, heads, D] tensor of `out_dtype`
// (fp32 or bf16). sign is +1 or -1. Only the first half of cos and sin is read. Requires
// rotary_kernel_applies.
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int sign,
                     torch::ScalarType out_dtype);

}  // namespace llm4dsr::internal
