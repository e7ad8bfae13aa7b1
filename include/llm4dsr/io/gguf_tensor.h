// Torch tensors from GGUF files, kept apart from gguf.h so that code reading only metadata does not
// include torch.
#pragma once

#include <string>

#include <torch/types.h>

#include "llm4dsr/io/gguf.h"

namespace llm4dsr::io {

// The tensor `name` dequantised to fp32 and converted to `dtype` (a floating dtype), as a contiguous
// CPU tensor in row-major (PyTorch) shape, i.e. ggml's ne reversed. Throws Error naming the file and
// tensor when it is absent or its ggml type cannot be dequantised.
torch::Tensor gguf_tensor(const GGUFFile& file, const std::string& name, torch::Dtype dtype = torch::kFloat32);

}  // namespace llm4dsr::io
