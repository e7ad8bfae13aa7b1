// Python-side handles of the denoising stages, shared by the binding units that take them
// (bind_denoise: scorer and thresholds; bind_denoiser: generator and Denoiser).
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl_bind.h>

#include <memory>
#include <string>
#include <vector>

#include "torch_bindings.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/denoise/generator.h"
#include "llm4dsr/denoise/uncertainty_scorer.h"
#include "llm4dsr/text/tokenizer.h"

PYBIND11_MAKE_OPAQUE(llm4dsr::SequenceSet)

namespace llm4dsr::bindings {

namespace py = pybind11;

// Options structs with template_name / prompt_template and chat_format / chat (ScorerOptions,
// GeneratorOptions): Python passes a name or an object for each.
template <typename Options>
void set_template_and_chat(Options& o, const py::object& prompt_template, const py::object& chat_format) {
  if (py::isinstance<py::str>(prompt_template)) o.template_name = prompt_template.cast<std::string>();
  else o.prompt_template = prompt_template.cast<PromptTemplate>();
  if (py::isinstance<py::str>(chat_format)) o.chat_format = chat_format.cast<std::string>();
  else o.chat = chat_format.cast<ChatFormat>();
}

// Each keeps the model (and tokenizer) alive as long as the stage.
struct PyUncertaintyScorer {
  PyLlamaModel model;
  std::shared_ptr<Tokenizer> tokenizer;
  std::shared_ptr<UncertaintyScorer> scorer;
};

struct PyGenerator {
  PyLlamaModel model;
  std::shared_ptr<Tokenizer> tokenizer;
  std::shared_ptr<Generator> generator;
};

// A SequenceSet, or any iterable of Sequence objects or of item-id lists / arrays.
inline std::vector<std::vector<int64_t>> to_item_lists(const py::object& sequences) {
  std::vector<std::vector<int64_t>> out;
  if (py::isinstance<SequenceSet>(sequences)) {
    const auto& set = sequences.cast<const SequenceSet&>();
    out.reserve(set.size());
    for (const auto& s : set) out.push_back(s.items);
    return out;
  }
  size_t index = 0;
  for (const py::handle item : sequences) {
    if (py::isinstance<Sequence>(item)) {
      out.push_back(item.cast<const Sequence&>().items);
    } else {
      const std::string what = "sequence " + std::to_string(index) + ": items";
      out.push_back(int64_vector(item, what.c_str()));
    }
    ++index;
  }
  return out;
}

}  // namespace llm4dsr::bindings
