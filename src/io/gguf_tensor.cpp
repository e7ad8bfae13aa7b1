#include "llm4dsr/io/gguf_tensor.h"

#include <torch/torch.h>

#include "llm4dsr/error.h"

namespace llm4dsr::io {

torch::Tensor gguf_tensor(const GGUFFile& file, const std::string& name, torch::Dtype dtype) {
  LLM4DSR_CHECK(torch::isFloatingType(dtype), "gguf_tensor: dtype must be floating point, got " << dtype
                                                                                                << " (tensor '" << name
                                                                                                << "' of " << file.path() << ")");
  const GGUFTensorInfo& info = file.tensor(name);
  torch::Tensor out = torch::empty(info.shape, torch::TensorOptions().dtype(torch::kFloat32));
  file.dequantize(name, out.data_ptr<float>());
  return dtype == torch::kFloat32 ? out : out.to(dtype);
}

}  // namespace llm4dsr::io
