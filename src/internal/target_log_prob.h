// log_softmax(logits)[row, target[row]] for every row without materialising the log-softmax (internal).
//
// The exact scorer and greedy decoding need the log-probability of one token per row of logits over
// a 49k vocabulary. ATen's logits.float().logsumexp(-1) streams the rows five times through freshly
// allocated full-size tensors (the fp32 copy, max, difference, exp, sum): in exact scoring that was a
// fifth of the time. Here each row is read twice (max, then the sum of exponentials) straight from
// the logits' own dtype, with fp32 arithmetic and a polynomial exp that vectorises.
#pragma once

#include <torch/types.h>

namespace llm4dsr::internal {

// Whether target_log_prob's own kernel takes these tensors: CPU logits [N, V] in float, bfloat16 or
// float16 with contiguous rows and V > 0, targets int64 [N]. Otherwise it computes the same thing
// with ATen operations.
bool target_log_prob_kernel_applies(const torch::Tensor& logits, const torch::Tensor& target);

// fp32 [N]: logits[n, target[n]] - logsumexp(logits[n, :]), computed in fp32 (so a row of -inf gives
// NaN, a row holding NaN gives NaN, as the ATen expression does). Throws Error for mismatched shapes
// and, in the kernel, for a target outside 0 .. V-1 (ATen's gather raises its own error otherwise).
torch::Tensor target_log_prob(const torch::Tensor& logits, const torch::Tensor& target);

}  // namespace llm4dsr::internal
