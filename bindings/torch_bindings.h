// Helpers shared by the binding translation units that pass torch tensors (they include
// <torch/extension.h>, which is heavy: keep such units few).
#pragma once

#include <torch/extension.h>

#include <pybind11/numpy.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/runtime.h"

namespace llm4dsr::bindings {

namespace py = pybind11;

// A dtype by name. "auto" is the compute dtype for `device` (llm4dsr::auto_dtype: bfloat16 where its
// products are native, float32 elsewhere).
inline torch::Dtype parse_dtype(const std::string& name, const torch::Device& device = torch::Device(torch::kCPU)) {
  if (name == "auto") return parse_dtype(auto_dtype(device.str()), device);
  if (name == "float32" || name == "float" || name == "fp32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "half" || name == "fp16") return torch::kFloat16;
  if (name == "float64" || name == "double") return torch::kFloat64;
  LLM4DSR_THROW("unknown dtype '" << name << "' (expected auto, float32, bfloat16, float16 or float64)");
}

inline std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    case torch::kFloat64: return "float64";
    default: return c10::toString(dtype);
  }
}

inline torch::Device parse_device(const std::string& name) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const c10::Error&) {
    LLM4DSR_THROW("unknown device '" << name << "' (expected e.g. cpu, cuda, cuda:1)");
  }
  // Checked here, where the name is known: libtorch's own error surfaces later, deep in a tensor copy.
  if (device.is_cuda()) {
    LLM4DSR_CHECK(torch::cuda::is_available(),
                  "device '" << name << "': this torch has no CUDA support or sees no GPU; use cpu, or a "
                             "CUDA build of torch on a GPU machine");
    LLM4DSR_CHECK(!device.has_index() || device.index() < static_cast<int>(torch::cuda::device_count()),
                  "device '" << name << "': only " << torch::cuda::device_count() << " GPU(s) visible");
  } else {
    LLM4DSR_CHECK(device.is_cpu(), "device '" << name << "': only cpu and cuda devices are supported");
  }
  return device;
}

// A torch tensor as is, or anything numpy can turn into an integer array (lists, numpy arrays), as int64.
// Float data is refused, not truncated; booleans only where `elements` allows them (masks, not ids).
inline torch::Tensor int64_tensor(const py::handle& obj, const char* what, Elements elements = Elements::kIntegers) {
  if (THPVariable_Check(obj.ptr())) {
    torch::Tensor t = THPVariable_Unpack(obj.ptr());
    LLM4DSR_CHECK(!t.is_floating_point() && !t.is_complex() &&
                      (t.scalar_type() != torch::kBool || elements == Elements::kIntegersOrBools),
                  what << " must hold integers" << (elements == Elements::kIntegersOrBools ? " or booleans" : "")
                       << ", got " << t.scalar_type());
    return t.to(torch::kInt64);
  }
  auto arr = typed_array<int64_t>(obj, what, elements);
  std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
  return torch::from_blob(const_cast<int64_t*>(arr.data()), shape, torch::kInt64).clone();
}

// A one-dimensional int64 argument (torch tensor, numpy array or list) as a vector; `what` names it
// in the error for another shape.
inline std::vector<int64_t> int64_vector(const py::handle& obj, const char* what) {
  torch::Tensor t = int64_tensor(obj, what).contiguous();
  LLM4DSR_CHECK(t.dim() == 1, what << " must be one-dimensional, got shape " << t.sizes());
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

// The Python-side handle of a LlamaModel (shared by bind_model and bind_train).
struct PyLlamaModel {
  LlamaModel model{nullptr};

  torch::Device device() const { return model->device(); }
  torch::Tensor on_device(const torch::Tensor& t) const { return t.defined() ? t.to(device()) : t; }
  // Input ids on the model's device; host ids bound for a GPU are range-checked before the copy (the
  // model checks CPU ids itself).
  torch::Tensor ids_on_device(const torch::Tensor& ids) const {
    if (!device().is_cpu() && ids.device().is_cpu()) model->check_token_ids(ids);
    return on_device(ids);
  }
};

}  // namespace llm4dsr::bindings
