// LoraBypassGuard: runs models as their base models (LoRA adapters switched off) for one scope, on the
// thread that holds it.
//
// The Embedder grounds generated text against catalogue embeddings of the base model (the authors
// embed with the model before fine-tuning), while the same LlamaModel object carries the adapters
// used for scoring and generation, possibly from other threads at the same time. So the guard
// changes no module state: it raises a thread-local flag that LoraLinear reads in forward, and other
// threads keep their adapters. While it is alive, on its thread:
//   - unmerged adapters: the low-rank branch is skipped, exactly the base model's output;
//   - merged adapters: the branch is subtracted from the merged product, (W + sBA)x - sB(Ax), the base
//     output up to rounding (fp32: ~1e-6 relative; bf16 weights: within the merged weight's ulp).
// Guards nest; the flag holds for every model run on the thread, not only the one named.
#pragma once

#include <cstddef>

#include "llm4dsr/model/llama_model.h"

namespace llm4dsr {

class LoraBypassGuard {
 public:
  explicit LoraBypassGuard(const LlamaModel& model);
  ~LoraBypassGuard();
  LoraBypassGuard(const LoraBypassGuard&) = delete;
  LoraBypassGuard& operator=(const LoraBypassGuard&) = delete;

  // Number of the model's adapters switched off (0 when it has none).
  size_t bypassed() const { return bypassed_; }

 private:
  size_t bypassed_ = 0;
};

// Whether a LoraBypassGuard is alive on the calling thread.
bool lora_bypassed_on_this_thread();

}  // namespace llm4dsr
