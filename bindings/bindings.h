// Declarations shared by the binding translation units (one per area).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <vector>

namespace llm4dsr::bindings {

// A copy of a vector as a 1-D numpy array.
template <typename T>
pybind11::array_t<T> to_numpy(const std::vector<T>& v) {
  pybind11::array_t<T> out(static_cast<pybind11::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

void bind_data(pybind11::module_& m);
void bind_text(pybind11::module_& m);
void bind_model(pybind11::module_& m);
void bind_instructions(pybind11::module_& m);
void bind_gguf(pybind11::module_& m);
void bind_bpe(pybind11::module_& m);
void bind_train(pybind11::module_& m);
void bind_io(pybind11::module_& m);
void bind_grounding(pybind11::module_& m);
void bind_denoise(pybind11::module_& m);
void bind_denoiser(pybind11::module_& m);

}  // namespace llm4dsr::bindings
