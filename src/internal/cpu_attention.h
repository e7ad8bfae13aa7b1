// Inference attention on AVX-512 CPUs without ATen's flash kernel (internal).
//
// On an AVX-512 CPU without AMX (the AMD EPYC these machines may be), ATen's CPU flash attention ran at
// about 120 GFLOP/s in bf16 and in fp32: at T = 128 it was 17-23% of a bf16 SmolLM2 forward and 12%
// of exact fp32 scoring, for 4% of the FLOPs. Its bf16 kernel goes through a GEMM path that is fast
// only with AMX, and its fp32 one through MKL, which runs its AVX2 code there.
//
// Here each (sequence, KV head) pair's keys are packed once (K transposed, and for bf16 K and V in
// the key pairs AVX512-BF16's dot product reads), then blocks of 4 query rows of one head compute
// their full score rows in fp32 (bf16: fp32 sums of bf16 products, as the flash kernel), the masked
// softmax in fp32, and P V with P rounded to bf16 for a bf16 model (as the flash kernel rounds it).
// Keys past a causal block's last row are skipped. A row that may attend to no key gives zeros.
#pragma once

#include <torch/types.h>

namespace llm4dsr::internal {

// Whether cpu_attention takes these operands: q [B, H, Tq, D], k and v [B, KV, Tk, D] on the CPU,
// all fp32 or all bf16, innermost stride 1, H a multiple of KV, D a multiple of 16 (at most 512); mask
// undefined or bool [B or 1, 1, Tq, Tk]; and this CPU has the instructions (AVX-512F, and AVX512-BF16
// for bf16). Packed queries: q [1, H, N, D] and query_rows contiguous int64 [B, Tq] on the CPU.
bool cpu_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& mask, const torch::Tensor& query_rows = {});

// Whether the model's inference attention should take cpu_attention on this machine for this dtype:
// bf16 on AVX512-BF16 CPUs without AMX (with AMX, ATen's flash kernel runs on AMX tiles); fp32 on
// AVX-512 CPUs whose vendor is not Intel (where MKL, behind the flash kernel, is the slow library).
bool cpu_attention_preferred(torch::ScalarType dtype);

// softmax(q k^T * scale + mask) v with query head h reading KV head h / (H / KV) (HF's repeat_kv),
// as [B, Tq, H * D] in q's dtype. `mask` true = attend; `is_causal` additionally limits query t to
// keys j <= t (SDPA's top-left alignment). With log_sum_exp, also sets it to fp32 [B, H, Tq]:
// log sum_j exp(q_t k_j * scale) over the visible keys (-inf for a row that sees none), what the
// flash kernel returns for its backward. No gradient. Requires cpu_attention_applies.
// query_rows (packed queries, a batch whose pads are not computed): when defined, q holds N query rows
// [1, H, N, D] and query (b, t) is row query_rows[b][t] of q and of the result [1, N, H * D] (-1: a
// pad, no query); each of the N rows must be named once. No log_sum_exp then.
torch::Tensor cpu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& mask, bool is_causal, double scale,
                            torch::Tensor* log_sum_exp = nullptr, const torch::Tensor& query_rows = {});

}  // namespace llm4dsr::internal
