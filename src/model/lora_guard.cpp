#include "llm4dsr/model/lora_guard.h"

#include <utility>

namespace llm4dsr {

LoraBypassGuard::LoraBypassGuard(LlamaModel model) : model_(std::move(model)) {
  if (!model_->has_lora()) return;
  for (auto& [name, proj] : model_->projections()) {
    if (!proj->has_adapter()) continue;
    // An unmerged adapter is active in forward, so a merged one is unmerged and then detached too.
    if (proj->merged()) {
      proj->unmerge();
      remerge_.push_back(proj);
    }
    detached_.push_back({proj, proj->lora_A, proj->lora_B});
    proj->lora_A = torch::Tensor();
    proj->lora_B = torch::Tensor();
  }
}

LoraBypassGuard::~LoraBypassGuard() {
  for (auto& d : detached_) {
    d.module->lora_A = std::move(d.lora_A);
    d.module->lora_B = std::move(d.lora_B);
  }
  // Handles first: merge() needs them. It only throws without an adapter, which the constructor
  // checked, and a destructor must not throw.
  for (auto& proj : remerge_) {
    try {
      proj->merge();
    } catch (...) {
    }
  }
}

}  // namespace llm4dsr
