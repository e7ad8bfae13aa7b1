// The label of tokens outside the loss. One definition shared by the data side (InstructionBuilder
// writes it) and the trainer (skips it), without either depending on the other.
#pragma once

#include <cstdint>

namespace llm4dsr {

// As in HF's CrossEntropyLoss(ignore_index=-100), so labels round-trip with transformers unchanged.
constexpr int64_t kIgnoreIndex = -100;

}  // namespace llm4dsr
