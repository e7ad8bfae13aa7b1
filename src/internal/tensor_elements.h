// A CPU tensor's elements as the loops over fast_math.h's load/store read them (internal): float* for
// fp32, the bf16 bits as uint16_t* for bf16. data_ptr checks the dtype.
#pragma once

#include <cstdint>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <torch/types.h>

namespace llm4dsr::internal {

template <typename T>
T* elements(const torch::Tensor& t) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, uint16_t>, "float (fp32) or uint16_t (bf16 bits)");
  if constexpr (std::is_same_v<T, float>) return t.data_ptr<float>();
  else return reinterpret_cast<uint16_t*>(t.data_ptr<c10::BFloat16>());
}

}  // namespace llm4dsr::internal
