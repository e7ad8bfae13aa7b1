// Python bindings of the model registry: short names, load_pretrained / save_pretrained of whole
// model folders (weights + tokenizer + adapter + llm4dsr.json), ModelCard.
#include <pybind11/stl.h>

#include "bindings.h"
#include "torch_bindings.h"
#include "llm4dsr/io/model_registry.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr::bindings {

namespace {

struct PyPretrainedModel {
  PyLlamaModel model;
  std::shared_ptr<Tokenizer> tokenizer;
  io::ModelCard card;
  std::string path;
  std::string format;
};

io::PretrainedModel to_cpp(const PyPretrainedModel& p) {
  io::PretrainedModel out;
  out.model = p.model.model;
  out.tokenizer = p.tokenizer;
  out.card = p.card;
  out.path = p.path;
  out.format = p.format;
  return out;
}

}  // namespace

void bind_io(py::module_& m) {
  py::class_<io::ModelCard>(m, "ModelCard", "Prompt settings a model was fine-tuned with (llm4dsr.json).")
      .def(py::init<>())
      .def_readwrite("base_model", &io::ModelCard::base_model)
      .def_readwrite("prompt_template", &io::ModelCard::prompt_template)
      .def_readwrite("chat_format", &io::ModelCard::chat_format)
      .def_readwrite("max_prompt_tokens", &io::ModelCard::max_prompt_tokens)
      .def("to_json", &io::ModelCard::to_json)
      .def("__repr__", [](const io::ModelCard& c) {
        return "<ModelCard base='" + c.base_model + "' template='" + c.prompt_template + "' chat='" + c.chat_format + "'>";
      });

  py::class_<PyPretrainedModel>(m, "PretrainedModel", "A model with its tokenizer and prompt settings.")
      .def(py::init([](const PyLlamaModel& model, std::shared_ptr<Tokenizer> tokenizer, const io::ModelCard& card) {
             return PyPretrainedModel{model, std::move(tokenizer), card, "", ""};
           }),
           py::arg("model"), py::arg("tokenizer"), py::arg_v("card", io::ModelCard{}, "ModelCard()"))
      .def_readwrite("model", &PyPretrainedModel::model)
      .def_readwrite("tokenizer", &PyPretrainedModel::tokenizer)
      .def_readwrite("card", &PyPretrainedModel::card)
      .def_readonly("path", &PyPretrainedModel::path)
      .def_readonly("format", &PyPretrainedModel::format)
      .def("__repr__", [](const PyPretrainedModel& p) {
        return "<PretrainedModel '" + p.path + "' format=" + p.format + ">";
      });

  m.def("model_cache_dir", &io::model_cache_dir);
  m.def("known_model_names", &io::known_model_names);
  m.def("resolve_model", &io::resolve_model, py::arg("name_or_path"));
  m.def("load_tokenizer", &io::load_tokenizer, py::arg("folder_or_gguf"), py::call_guard<py::gil_scoped_release>(),
        "The tokenizer of an HF/llm4dsr folder (tokenizer.json or tokenizer.model) or of a GGUF file.");
  m.def(
      "load_pretrained",
      [](const std::string& name_or_path, const std::string& device, const std::string& dtype) {
        const auto dev = parse_device(device);
        const auto dt = parse_dtype(dtype, dev);
        io::PretrainedModel loaded;
        {
          py::gil_scoped_release release;
          loaded = io::load_pretrained(name_or_path, dev, dt);
        }
        return PyPretrainedModel{PyLlamaModel{loaded.model}, loaded.tokenizer, loaded.card, loaded.path, loaded.format};
      },
      py::arg("name_or_path"), py::arg("device") = "cpu", py::arg("dtype") = "float32",
      "A short name (smollm2-135m-instruct), an HF or llm4dsr folder, a GGUF file, or an adapter folder on a base.");
  m.def(
      "save_pretrained",
      [](const PyPretrainedModel& p, const std::string& folder, bool with_base) {
        io::PretrainedModel cpp = to_cpp(p);
        py::gil_scoped_release release;
        io::save_pretrained(cpp, folder, with_base);
      },
      py::arg("model"), py::arg("folder"), py::arg("with_base") = true,
      "Writes weights (unless with_base is False), tokenizer, PEFT adapter and llm4dsr.json.");
}

}  // namespace llm4dsr::bindings
