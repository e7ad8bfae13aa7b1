// LoraBypassGuard: runs a LlamaModel as its base model (adapters switched off) for one scope.
//
// The Embedder grounds generated text against catalogue embeddings of the base model (the authors
// embed with the model before fine-tuning), while the same LlamaModel object carries the adapters
// used for scoring and generation. Removing and re-adding adapters would lose them; this guard only
// detaches them for its lifetime:
//   - unmerged adapters: the LoraLinear's lora_A / lora_B handles are set aside (the registered
//     parameters keep the tensors, so parameters(), state dicts and optimiser references are
//     untouched) and forward takes the plain-linear path, exactly the base model's output;
//   - merged adapters: unmerged (then detached as above) for the scope and merged again on exit. W + sBA - sBA is W up to
//     rounding in the weights' dtype (exact enough in fp32; bf16 weights may move by one ulp).
// The model must not be used elsewhere (another thread, a training step) while a guard is alive.
#pragma once

#include <vector>

#include <torch/types.h>

#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/model/lora.h"

namespace llm4dsr {

class LoraBypassGuard {
 public:
  explicit LoraBypassGuard(LlamaModel model);
  ~LoraBypassGuard();
  LoraBypassGuard(const LoraBypassGuard&) = delete;
  LoraBypassGuard& operator=(const LoraBypassGuard&) = delete;

  // Number of adapters switched off (0 when the model has none).
  size_t bypassed() const { return detached_.size(); }

 private:
  struct Detached {
    LoraLinear module;
    torch::Tensor lora_A, lora_B;
  };
  LlamaModel model_;
  std::vector<Detached> detached_;
  std::vector<LoraLinear> remerge_;
};

}  // namespace llm4dsr
