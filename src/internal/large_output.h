// Large CPU outputs on transparent huge pages (internal).
//
// glibc serves blocks of 32 MB and more with a fresh mmap each time, and a fresh mapping costs a page
// fault per 4 KB page on first touch: filling the bf16 logits of a batch-8 SmolLM2 forward (1,024 x
// 49,152, 100 MB) faulted 25,000 times and ran at half the GEMM's speed (53 ms against 23 ms into a
// reused buffer). On 2 MB pages (madvise(MADV_HUGEPAGE), which Linux honours unless THP is "never") the
// same product took 34 ms. Smaller outputs come from the heap, where the freed-memory retention
// (runtime.h) already keeps their pages.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace llm4dsr::internal {

// Outputs of at least this many bytes go on huge pages (glibc's largest mmap threshold).
constexpr int64_t kLargeOutputBytes = int64_t(32) << 20;

// An uninitialised contiguous CPU tensor like torch::empty(sizes, options), placed on 2 MB-aligned
// memory advised for huge pages when it holds at least kLargeOutputBytes (Linux); torch::empty otherwise.
torch::Tensor empty_large_output(torch::IntArrayRef sizes, torch::TensorOptions options);

}  // namespace llm4dsr::internal
