#include "internal/large_output.h"

#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <torch/torch.h>

namespace llm4dsr::internal {

torch::Tensor empty_large_output(torch::IntArrayRef sizes, torch::TensorOptions options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (options.device().is_cpu()) {
    int64_t numel = 1;
    for (int64_t s : sizes) numel *= s;
    const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
    if (bytes >= kLargeOutputBytes) {
      constexpr size_t kHugePage = size_t(2) << 20;
      const size_t rounded = (static_cast<size_t>(bytes) + kHugePage - 1) / kHugePage * kHugePage;
      void* data = nullptr;
      if (posix_memalign(&data, kHugePage, rounded) != 0) throw std::bad_alloc();
      madvise(data, rounded, MADV_HUGEPAGE);  // advice only: without THP the pages stay 4 KB
      return torch::from_blob(data, sizes, [](void* p) { std::free(p); }, options);
    }
  }
#endif
  return torch::empty(sizes, options);
}

}  // namespace llm4dsr::internal
