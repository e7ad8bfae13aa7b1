// Declarations shared by the binding translation units (one per area).
#pragma once

#include <pybind11/pybind11.h>

namespace llm4dsr::bindings {

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

}  // namespace llm4dsr::bindings
