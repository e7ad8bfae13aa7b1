// parallel_over: a loop over [0, n) on libtorch's intra-op pool that carries exceptions back.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>

namespace llm4dsr::internal {

// Runs body(i) for every i in [0, n). An exception thrown by a body is rethrown to the caller;
// when several fail, the one with the lowest index wins, so the error a user sees does not depend
// on thread scheduling. `grain` is the smallest chunk a thread takes.
template <typename Body>
void parallel_over(size_t n, int64_t grain, Body&& body) {
  std::mutex mutex;
  std::exception_ptr first_error;
  size_t first_error_index = std::numeric_limits<size_t>::max();
  at::parallel_for(0, static_cast<int64_t>(n), grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        body(static_cast<size_t>(i));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (static_cast<size_t>(i) < first_error_index) {
          first_error_index = static_cast<size_t>(i);
          first_error = std::current_exception();
        }
        return;  // the rest of this chunk would be wasted work
      }
    }
  });
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace llm4dsr::internal
