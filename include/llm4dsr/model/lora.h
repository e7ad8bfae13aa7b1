// LoRA (Hu et al., 2021): low-rank adapters on frozen linear layers, PEFT-compatible.
//
// Every projection of LlamaModel is a LoraLinear. Without an adapter it is a plain linear layer;
// with one, y = W x + b + s * B(A(dropout(x))) where s = alpha / r (or alpha / sqrt(r) with rsLoRA),
// A [r, in] is Kaiming-uniform (a = sqrt 5, as torch.nn.Linear and PEFT) and B [out, r] starts at zero, so a
// fresh adapter leaves the outputs unchanged. The base weight is never modified unless merge() is
// called on purpose; unmerge() subtracts the same product again.
//
// As PEFT does by default (autocast_adapter_dtype), adapters on a bf16/fp16 base are kept in fp32:
// the low-rank path runs in fp32 and its result is cast to the base output's dtype.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace llm4dsr {

namespace detail {
class PackedWeight;
}

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.05;
  // Projection names (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj), matched as PEFT does
  // (the module's name equals the entry or ends with "." + entry), or the single entry "all-linear"
  // (every projection; never lm_head).
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  // When non-empty, used instead of target_modules: a regular expression (ECMAScript) that must match
  // the whole HF module name, e.g. "model\\.layers\\.\\d+\\.self_attn\\.(q|v)_proj" (PEFT's string form).
  std::string target_regex;
  // Layer indices to adapt; empty means all.
  std::vector<int64_t> layers_to_transform;
  bool use_rslora = false;
  // Seeds the initialisation of every A matrix (modules in layer order, then q k v o gate up down).
  uint64_t seed = 0;

  double scaling() const;
  void validate() const;
  // Whether the module with HF name `module_name` (e.g. "model.layers.3.self_attn.q_proj") gets an adapter.
  bool matches(const std::string& module_name, int64_t layer_index) const;
};

class LoraLinearImpl : public torch::nn::Module {
 public:
  LoraLinearImpl(int64_t in_features, int64_t out_features, bool with_bias, torch::TensorOptions options);

  torch::Tensor forward(const torch::Tensor& x);
  // residual + forward(x), the base product accumulated into the residual by one GEMM (addmm). With
  // in_place set the sum may be formed in `residual` itself; callers pass it only for a tensor they own
  // and while no gradient is recorded, and always use the returned tensor.
  torch::Tensor forward_add(const torch::Tensor& x, const torch::Tensor& residual, bool in_place = false);
  // The base weight as the product with x should read it: without recorded gradients on a bf16 CPU
  // model, a copy reordered once for oneDNN; on an fp32 CPU model under
  // torch.set_float32_matmul_precision("high") on a machine with AMX-BF16, a copy split into
  // bf16 halves (from 256 rows of x on); either kept until the weight changes (see
  // release_packed_weight). Otherwise `weight` itself.
  torch::Tensor inference_weight(const torch::Tensor& x);
  // Drops the reordered copy (it is made again on the next product that uses it).
  void release_packed_weight();
  // Off: the reordered copy is dropped and never made again; products read `weight` itself.
  void set_weight_packing(bool enabled);
  bool weight_packing() const;
  bool has_packed_weight() const;
  // y + s * B(A(dropout(x))) for y = the base output at x; y unchanged where adds_branch() is false.
  // The sum is formed in the adapter's dtype and cast to y's (PEFT's order); in place on y while no
  // gradient is recorded.
  torch::Tensor add_lora(const torch::Tensor& y, const torch::Tensor& x);

  // Adds a fresh adapter (A Kaiming-uniform drawn from `generator` on the CPU in fp32, B = 0) and
  // freezes the base weight and bias. Throws when one is already present.
  void add_adapter(int64_t r, double alpha, double dropout, bool use_rslora, at::Generator& generator);
  void remove_adapter();  // unmerges first when merged
  bool has_adapter() const { return lora_A.defined(); }
  bool merged() const { return merged_; }
  // Whether forward adds a low-rank branch to the stored weight's product on this thread: an unmerged
  // adapter, or a merged one under a LoraBypassGuard (subtracted). Without one, forward is x W^T (+ b).
  bool adds_branch() const;
  // W += s * B A (computed in fp32); forward then skips the low-rank path. No-op when already merged.
  void merge();
  void unmerge();

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  int64_t rank() const { return rank_; }
  double scaling() const { return scaling_; }
  double dropout() const { return dropout_; }

  torch::Tensor weight;      // [out, in]
  torch::Tensor bias;        // [out] or undefined
  torch::Tensor lora_A;      // [r, in] (registered as "lora_A.weight")
  torch::Tensor lora_B;      // [out, r] (registered as "lora_B.weight")

 private:
  int64_t in_features_;
  int64_t out_features_;
  int64_t rank_ = 0;
  double scaling_ = 0.0;
  double dropout_ = 0.0;
  bool merged_ = false;
  // Whether the base product with x runs as FrozenLinear (lora.cpp): bf16 CPU training of a frozen
  // base with enough rows for one block per thread.
  bool frozen_rows_product(const torch::Tensor& x) const;
  // residual + x W^T (x W^T + bias without a residual) through the packed or split weight or
  // FrozenLinear where one applies (in_place: the split product may sum into `residual` itself);
  // undefined otherwise (then the caller's plain ATen product).
  torch::Tensor fast_base_product(const torch::Tensor& x, const torch::Tensor& residual, bool in_place);

  std::shared_ptr<detail::PackedWeight> packed_weight_;
};
TORCH_MODULE(LoraLinear);

}  // namespace llm4dsr
