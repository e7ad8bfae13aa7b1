// llm4dsr.Tokenizer and llm4dsr.SentencePieceTokenizer.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "llm4dsr/text/tokenizer.h"

namespace py = pybind11;

namespace llm4dsr::bindings {

namespace {

// A decoded id sequence need not be valid UTF-8 (a byte-fallback character cut in half); Python
// gets U+FFFD for the broken bytes, as sentencepiece's own package gives, instead of an exception.
py::str to_str(const std::string& text) {
  PyObject* object = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace");
  if (!object) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(object);
}

}  // namespace

void bind_text(py::module_& m) {
  py::class_<Tokenizer, py::smart_holder>(m, "Tokenizer", R"doc(
Text <-> token ids. Abstract: obtain one from SentencePieceTokenizer.from_file / from_serialized /
train (or another implementation).)doc")
      .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("add_bos") = false, py::arg("add_eos") = false,
           "The ids of `text`, optionally with <s> first and </s> last.")
      .def(
          "encode_batch",
          [](const Tokenizer& self, const std::vector<std::string>& texts, bool add_bos, bool add_eos) {
            py::gil_scoped_release release;
            return self.encode_batch(texts, add_bos, add_eos);
          },
          py::arg("texts"), py::arg("add_bos") = false, py::arg("add_eos") = false,
          "encode() of each text, in parallel; the result keeps the input order.")
      .def(
          "decode", [](const Tokenizer& self, const std::vector<TokenId>& ids) { return to_str(self.decode(ids)); },
          py::arg("ids"), "The text of `ids`; control ids (<s>, </s>, <pad>) decode to nothing.")
      .def(
          "decode_batch",
          [](const Tokenizer& self, const std::vector<std::vector<TokenId>>& ids) {
            std::vector<std::string> texts;
            {
              py::gil_scoped_release release;
              texts = self.decode_batch(ids);
            }
            py::list out(texts.size());
            for (size_t i = 0; i < texts.size(); ++i) out[i] = to_str(texts[i]);
            return out;
          },
          py::arg("ids"), "decode() of each id list, in parallel.")
      .def("encode_in_context", &Tokenizer::encode_in_context, py::arg("prefix"), py::arg("text"), R"doc(
The ids of `text` as tokenised right after `prefix`: the tail of encode(prefix + text) from the token
covering the first byte of `text` (which may also cover the end of `prefix`).)doc")
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("bos_id", &Tokenizer::bos_id, "-1 when the vocabulary has no <s>.")
      .def_property_readonly("eos_id", &Tokenizer::eos_id)
      .def_property_readonly("pad_id", &Tokenizer::pad_id, "<pad>, or </s> when the model defines no pad.")
      .def_property_readonly("unk_id", &Tokenizer::unk_id)
      .def_property_readonly("kind", &Tokenizer::kind, "'sentencepiece' or 'bpe'.")
      .def("id_to_piece", &Tokenizer::id_to_piece, py::arg("id"))
      .def("piece_to_id", &Tokenizer::piece_to_id, py::arg("piece"), "unk_id when the piece is absent.")
      .def("__len__", &Tokenizer::vocab_size)
      .def("__repr__", [](const Tokenizer& self) {
        return "<llm4dsr." + std::string(self.kind() == "sentencepiece" ? "SentencePieceTokenizer" : "Tokenizer") +
               " kind='" + self.kind() + "' vocab_size=" + std::to_string(self.vocab_size()) + ">";
      });

  py::class_<SentencePieceTokenizer, Tokenizer, py::smart_holder>(m, "SentencePieceTokenizer",
                                                                                          "A sentencepiece model.")
      .def_static(
          "from_file",
          [](const std::filesystem::path& path) { return SentencePieceTokenizer::from_file(path.string()); },
          py::arg("path"), "Loads a sentencepiece .model file (e.g. Llama's tokenizer.model).")
      .def_static(
          "from_serialized",
          [](const py::bytes& model_proto) {
            return SentencePieceTokenizer::from_serialized(static_cast<std::string>(model_proto));
          },
          py::arg("model_proto"), "From the bytes of a serialized ModelProto (what serialized() returns).")
      .def_static(
          "train",
          [](const std::vector<std::string>& texts, int64_t vocab_size, const std::string& model_type,
             double character_coverage, uint64_t seed, bool byte_fallback, bool hard_vocab_limit) {
            SentencePieceTrainOptions options;
            options.vocab_size = vocab_size;
            options.model_type = model_type;
            options.character_coverage = character_coverage;
            options.seed = seed;
            options.byte_fallback = byte_fallback;
            options.hard_vocab_limit = hard_vocab_limit;
            py::gil_scoped_release release;
            return SentencePieceTokenizer::train(texts, options);
          },
          py::arg("texts"), py::arg("vocab_size") = 2000, py::arg("model_type") = "bpe",
          py::arg("character_coverage") = 1.0, py::arg("seed") = 0, py::arg("byte_fallback") = true, py::arg("hard_vocab_limit") = true, R"doc(
Trains a model on `texts`, in memory and deterministically. Ids: 0 <unk>, 1 <s>, 2 </s>, 3 <pad>.
model_type is 'bpe' or 'unigram'; with byte_fallback unseen characters become byte pieces, never <unk>;
with hard_vocab_limit=False vocab_size is an upper bound (a small corpus gives fewer pieces).)doc")
      .def(
          "serialized", [](const SentencePieceTokenizer& self) { return py::bytes(self.serialized()); },
          "The serialized ModelProto (sentencepiece.SentencePieceProcessor(model_proto=...) reads it).")
      .def(
          "save", [](const SentencePieceTokenizer& self, const std::filesystem::path& path) { self.save(path.string()); },
          py::arg("path"), "Writes the model atomically as a .model file.");
}

}  // namespace llm4dsr::bindings
