// Declarations shared by the binding translation units (one per area).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "llm4dsr/error.h"

namespace llm4dsr::bindings {

// The element types an array argument accepts.
enum class Elements { kIntegers, kIntegersOrBools, kReals };

// `obj` (a numpy array, a CPU torch tensor, a list) as a C-contiguous array of T, converted only after its
// element type is checked: numpy's forcecast alone turns ids 1.9 into 1, a 0.5 mask into 0 and strings into
// a null array. An empty list (numpy makes it float64) passes as any type. `what` names the argument.
template <typename T>
pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast> typed_array(const pybind11::handle& obj,
                                                                                      const char* what,
                                                                                      Elements elements) {
  namespace py = pybind11;
  py::array raw = py::array::ensure(obj);
  auto type_name = [&] { return std::string(py::str(obj.attr("__class__").attr("__name__"))); };
  LLM4DSR_CHECK(raw, what << " must be an array or a list of numbers, got " << type_name());
  if (raw.size() > 0) {
    const char kind = raw.dtype().kind();
    const bool integer = kind == 'i' || kind == 'u';
    const bool ok = elements == Elements::kReals            ? integer || kind == 'f'
                    : elements == Elements::kIntegersOrBools ? integer || kind == 'b'
                                                             : integer;
    const char* wanted = elements == Elements::kReals            ? "numbers"
                         : elements == Elements::kIntegersOrBools ? "integers or booleans"
                                                                  : "integers";
    LLM4DSR_CHECK(ok, what << " must hold " << wanted << ", got an array of "
                           << std::string(py::str(raw.dtype())));
  }
  auto out = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(raw);
  LLM4DSR_CHECK(out, what << ": cannot convert " << std::string(py::str(raw.dtype())) << " elements");
  return out;
}

// A one-dimensional `typed_array` as a vector.
template <typename T>
std::vector<T> typed_vector(const pybind11::handle& obj, const char* what, Elements elements) {
  auto a = typed_array<T>(obj, what, elements);
  LLM4DSR_CHECK(a.ndim() == 1, what << " must be one-dimensional, got " << a.ndim() << " dimensions");
  return std::vector<T>(a.data(), a.data() + a.size());
}

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
