// Causal self-attention of bf16 queries, keys and values on the CPU with recorded gradients
// (internal): forward by ATen's bf16 flash kernel (by cpu_attention.h's kernel where that is
// preferred: AVX512-BF16 without AMX), backward by bf16 GEMMs.
//
// ATen's CPU flash-attention backward has no fast bf16 kernel (2.5x slower than fp32), and in fp32 it
// ran at 150-170 GFLOP/s: 28% of a bf16 LoRA training step at batch 32 x 128 tokens went to it and to
// the fp32 copies around it. Here the backward recomputes the scores S = Q K^T in fp32 (one fp32 GEMM),
// forms P = exp(S * scale - logsumexp) and dS = P (dO V^T - rowsum(dO * O)) * scale in one pass that
// also writes both in bf16, and takes dV = P^T dO, dQ = dS K and dK = dS^T Q as bf16 GEMMs with fp32
// accumulation. Each KV head's G query heads are stacked into one [G * T, D] operand, so grouped-query
// attention needs no repeated keys or values and dK, dV come out summed over the group. Gradients are
// within about 0.5% (relative norm) of float64 on random inputs, against 0.2% for the fp32 kernel: P,
// dS and dO V^T are rounded to bf16 as a GPU bf16 kernel rounds them. The backward works through
// (sequence, KV head) pairs in slices whose fp32 scores stay under 64 MB, or one pair when a pair
// needs more (G * T^2 * 4 bytes: 50 MB at T = 2,048 with SmolLM2's 3 query heads per KV head).
#pragma once

#include <torch/types.h>

namespace llm4dsr::internal {

// Whether bf16_causal_attention takes q [B, H, T, D], k and v [B, KV, T, D]: CPU, all bf16, H a
// multiple of KV, the same T for queries and keys (no cache), T > 1.
bool bf16_causal_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// softmax(q k^T * scale + causal mask) v as [B, H, T, D] bf16 (the flash kernel's output, laid out
// [B, T, H, D] in memory), differentiable in q, k and v. Requires bf16_causal_attention_applies.
torch::Tensor bf16_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    double scale);

}  // namespace llm4dsr::internal
