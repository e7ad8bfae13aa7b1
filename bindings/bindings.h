// Declarations shared by the binding translation units (one per area).
#pragma once

#include <pybind11/pybind11.h>

namespace llm4dsr::bindings {

void bind_data(pybind11::module_& m);
void bind_text(pybind11::module_& m);
void bind_model(pybind11::module_& m);

}  // namespace llm4dsr::bindings
