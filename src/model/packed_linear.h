// bf16 products on the CPU through oneDNN with weights reordered once, and the split copies of fp32
// weights for precision "high" (bf16x3_linear.h) kept the same way (internal).
//
// ATen's bf16 linear reorders the weight into oneDNN's blocked layout on every call. For this
// model's small projections that reorder costs as much as the product itself (a 576 x 576 weight:
// 0.41 ms -> 0.21 ms at 1,024 rows, 0.04 -> 0.02 ms per decoded token; the 49k-row lm_head at one
// row 1.9 -> 1.25 ms). PackedWeight keeps the reordered copy and repacks it when the weight changes.
// Used only without recorded gradients: the packed copy is opaque to autograd.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>

#include <c10/core/StorageImpl.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/types.h>

namespace llm4dsr::detail {

// Whether ATen reports this CPU capability ("amx_bf16", "avx512_bf16", ...) as present.
bool cpu_has(const char* capability);

// Whether this machine runs bf16 GEMMs natively (AVX512-BF16 or AMX), so oneDNN is ATen's own bf16 path.
bool native_bf16_gemm();

// Whether a packed product applies to input x and weight: bf16 both, on the CPU, no gradient being
// recorded, a machine with native bf16 GEMMs and libtorch's oneDNN linear ops present.
bool packed_product_applies(const torch::Tensor& x, const torch::Tensor& weight);

// The oneDNN-reordered copy of one bf16 weight, or the split copy of an fp32 one (bf16x3_weight).
// get() packs on first use and again whenever the weight is
// no longer the same storage or its version counter moved (every in-place change through ATen bumps
// it: merge, copy_, load). Changes that bypass the version counter (writes through `.data` or a raw
// pointer) must be followed by clear(). Thread-safe.
class PackedWeight {
 public:
  // What a product of x with `weight` should read, packing being enabled: the oneDNN copy where
  // packed_product_applies (is_mkldnn()), the split copy where bf16x3_product_applies
  // (is_bf16x3_weight), otherwise `weight` itself.
  torch::Tensor for_product(const torch::Tensor& x, const torch::Tensor& weight);
  // The packed copy of `weight` (a bf16 or, split, fp32 CPU matrix [out, in] that is not an inference
  // tensor), or an undefined tensor when it cannot be packed (then the caller uses `weight` itself).
  torch::Tensor get(const torch::Tensor& weight);
  void clear();
  bool holds_copy();
  // Off: the copy is dropped and never made again. On by default.
  void set_enabled(bool enabled);
  bool enabled() const { return enabled_.load(); }

 private:
  std::atomic<bool> enabled_{true};
  std::mutex mutex_;
  torch::Tensor packed_;
  c10::weak_intrusive_ptr<c10::StorageImpl> storage_{c10::intrusive_ptr<c10::StorageImpl>()};
  const void* data_ = nullptr;
  uint32_t version_ = 0;
};

// A [rows, out_features] product of `options` filled by fill(first_row, n, out_rows), which writes
// rows first_row .. first_row + n - 1 into out_rows ([n, out_features], contiguous): in one call,
// or, when every thread can have 256 to 1,023 rows (row_blocks_apply), one row block per thread,
// each its own single-threaded product. oneDNN runs some bf16 shapes on one thread however many it
// is given (with two threads, K 1536 x N 576 takes 1.3 ms at 1,024 rows, as long as at 2,048 rows
// where both work). From 1,024 rows per thread on it spreads them itself, and its own split is the
// faster one (a batch-32 LoRA step, 4,096 rows, was 3% slower in blocks).
torch::Tensor by_row_blocks(int64_t rows, int64_t out_features, torch::TensorOptions options,
                            const std::function<void(int64_t first_row, int64_t n, torch::Tensor out_rows)>& fill);
// Whether by_row_blocks cuts `rows` rows into blocks with the current number of threads.
bool row_blocks_apply(int64_t rows);

// x [..., in] times the packed weight (+ bias): [..., out].
torch::Tensor packed_linear(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& bias,
                            int64_t out_features);
// residual + x W^T, the sum formed on the fp32 accumulators (oneDNN's binary post-op) and rounded once.
torch::Tensor packed_linear_add(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& residual);

// silu(x gate^T) * (x up^T) for a bf16 CPU MLP without recorded gradients, as two oneDNN GEMMs whose
// epilogues apply the SiLU and the product: the [tokens, intermediate] activations are written once
// instead of being re-read by separate silu and mul passes. The epilogues work on the fp32
// accumulators, so the result differs from the unfused one by bf16 rounding only. Either weight may be
// a plain matrix or a packed one. Undefined when the fused path does not apply (then the caller
// computes it step by step).
torch::Tensor fused_swiglu(const torch::Tensor& x, const torch::Tensor& gate_weight, const torch::Tensor& up_weight,
                           int64_t intermediate_size);

}  // namespace llm4dsr::detail
