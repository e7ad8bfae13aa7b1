// llm4dsr.BpeTokenizer: byte-level BPE (SmolLM2, GPT-2, Llama-3, Qwen2 vocabularies). The Tokenizer
// methods (encode, decode, encode_batch, ...) come from the base class bound in bind_text.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <filesystem>
#include <memory>
#include <string>

#include "bindings.h"
#include "llm4dsr/text/bpe_tokenizer.h"

namespace py = pybind11;

namespace llm4dsr::bindings {

void bind_bpe(py::module_& m) {
  py::class_<BpeTokenizer, Tokenizer, py::smart_holder>(m, "BpeTokenizer", R"doc(
Byte-level BPE as in HuggingFace tokenizers: added tokens first (never split), then the regex
pre-tokenizer, then BPE merges over GPT-2's byte-to-unicode pieces. Special (control) tokens decode
to nothing. kind == 'bpe'.)doc")
      .def_static(
          "from_tokenizer_json",
          [](const std::filesystem::path& path) { return BpeTokenizer::from_tokenizer_json(path.string()); },
          py::arg("path"), R"doc(
Reads a HuggingFace tokenizer.json; special ids and add_bos/add_eos come from tokenizer_config.json
beside it when present, else from the post-processor.)doc")
      .def_static(
          "from_gguf", [](const std::filesystem::path& path) { return BpeTokenizer::from_gguf(path.string()); },
          py::arg("path"), R"doc(
Reads the vocabulary of a GGUF file (tokenizer.ggml.model == 'gpt2'); a SentencePiece vocabulary
('llama') raises llm4dsr.Error.)doc")
      .def(
          "encode_with_offsets",
          [](const BpeTokenizer& self, std::string_view text) {
            BpeEncoding encoding = self.encode_with_offsets(text);
            return py::make_tuple(std::move(encoding.ids), std::move(encoding.offsets));
          },
          py::arg("text"), "(ids, offsets): the byte span [start, end) of the UTF-8 text each token covers.")
      .def_property_readonly("add_bos_token", &BpeTokenizer::add_bos_token,
                             "Whether encode(..., add_bos=True) prepends bos for this vocabulary.")
      .def_property_readonly("add_eos_token", &BpeTokenizer::add_eos_token)
      .def("is_special", &BpeTokenizer::is_special, py::arg("id"), "True for special tokens (decode drops them).")
      .def("__repr__", [](const BpeTokenizer& self) {
        return "<llm4dsr.BpeTokenizer vocab_size=" + std::to_string(self.vocab_size()) + ">";
      });
}

}  // namespace llm4dsr::bindings
