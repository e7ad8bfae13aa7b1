#include "llm4dsr/model/lora_guard.h"

#include "llm4dsr/model/lora.h"

namespace llm4dsr {

namespace {
thread_local int bypass_depth = 0;
}  // namespace

LoraBypassGuard::LoraBypassGuard(const LlamaModel& model) {
  for (const auto& [name, proj] : model->projections()) bypassed_ += proj->has_adapter() ? 1 : 0;
  ++bypass_depth;
}

LoraBypassGuard::~LoraBypassGuard() { --bypass_depth; }

bool lora_bypassed_on_this_thread() { return bypass_depth > 0; }

}  // namespace llm4dsr
