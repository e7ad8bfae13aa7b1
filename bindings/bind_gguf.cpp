// Python bindings for GGUF files: metadata as Python values, tensor infos, dequantisation to numpy
// float32 arrays in row-major (PyTorch) shape, and the Llama mapping (ModelConfig, HF-named torch
// state dict).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf.h"
#include "llm4dsr/io/gguf_checkpoint.h"
#include "torch_bindings.h"

namespace py = pybind11;

namespace llm4dsr::bindings {

namespace {

using io::GGUFFile;
using io::GGUFTensorInfo;
using io::GGUFValue;
using io::GGUFValueType;

// Strings in GGUF are meant to be UTF-8; bytes that are not decode as lone surrogates (as
// os.fsdecode does) so nothing is lost and encode('utf-8', 'surrogateescape') gives them back.
py::object to_python_string(const std::string& s) {
  PyObject* obj = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (!obj) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(obj);
}

py::object to_python(const GGUFValue& v) {
  switch (v.type) {
    case GGUFValueType::UINT8:
    case GGUFValueType::UINT16:
    case GGUFValueType::UINT32:
    case GGUFValueType::UINT64: return py::int_(v.uint_value);
    case GGUFValueType::INT8:
    case GGUFValueType::INT16:
    case GGUFValueType::INT32:
    case GGUFValueType::INT64: return py::int_(v.int_value);
    case GGUFValueType::FLOAT32:
    case GGUFValueType::FLOAT64: return py::float_(v.float_value);
    case GGUFValueType::BOOL: return py::bool_(v.uint_value != 0);
    case GGUFValueType::STRING: return to_python_string(v.string_value);
    case GGUFValueType::ARRAY: {
      py::list out(v.items.size());
      for (size_t i = 0; i < v.items.size(); ++i) out[i] = to_python(v.items[i]);
      return std::move(out);
    }
  }
  return py::none();
}

// A key or tensor name from Python: str (lone surrogates from to_python_string turn back into the
// original bytes) or bytes.
std::string name_arg(const py::handle& obj) {
  if (PyBytes_Check(obj.ptr())) return obj.cast<std::string>();
  if (!PyUnicode_Check(obj.ptr()))
    throw py::type_error("expected str or bytes, got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  PyObject* bytes = PyUnicode_AsEncodedString(obj.ptr(), "utf-8", "surrogateescape");
  if (!bytes) throw py::error_already_set();
  return py::reinterpret_steal<py::bytes>(bytes).cast<std::string>();
}

py::tuple to_tuple(const std::vector<int64_t>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = py::int_(v[i]);
  return t;
}

}  // namespace

void bind_gguf(py::module_& m) {
  py::class_<GGUFTensorInfo>(m, "GGUFTensorInfo",
                             "One tensor of a GGUF file: name, shapes, ggml type and where its bytes are.")
      .def_property_readonly("name", [](const GGUFTensorInfo& t) { return to_python_string(t.name); })
      .def_property_readonly("shape", [](const GGUFTensorInfo& t) { return to_tuple(t.shape); },
                             "Row-major (PyTorch / numpy) shape: ne reversed.")
      .def_property_readonly("ne", [](const GGUFTensorInfo& t) { return to_tuple(t.ne); },
                             "ggml dimensions, ne[0] the contiguous one.")
      .def_property_readonly("type", &GGUFTensorInfo::type_name, "ggml type name, e.g. 'Q4_K'.")
      .def_readonly("offset", &GGUFTensorInfo::offset, "Offset relative to the data section.")
      .def_readonly("file_offset", &GGUFTensorInfo::file_offset)
      .def_readonly("n_elements", &GGUFTensorInfo::n_elements)
      .def_readonly("n_bytes", &GGUFTensorInfo::n_bytes)
      .def("__repr__", [](const GGUFTensorInfo& t) {
        return py::str("GGUFTensorInfo({!r}, shape={}, type={})").format(to_python_string(t.name), to_tuple(t.shape),
                                                                        t.type_name());
      });

  py::class_<GGUFFile>(m, "GGUFFile",
                       "A validated, memory-mapped GGUF file (versions 2 and 3). Corrupt files raise "
                       "llm4dsr.Error naming the file and the key or tensor.")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def_property_readonly("path", &GGUFFile::path)
      .def_property_readonly("version", &GGUFFile::version)
      .def_property_readonly("alignment", &GGUFFile::alignment)
      .def_property_readonly("data_offset", &GGUFFile::data_offset)
      .def_property_readonly(
          "metadata",
          [](const GGUFFile& f) {
            py::dict out;
            for (const auto& key : f.keys()) out[to_python_string(key)] = to_python(f.value(key));
            return out;
          },
          "Every key/value pair in file order: ints, floats, bools, str, and arrays as lists.")
      .def(
          "value_type", [](const GGUFFile& f, const py::handle& key) { return f.value(name_arg(key)).type_description(); },
          py::arg("key"), "The stored type of a metadata value, e.g. 'UINT32' or 'ARRAY[STRING]'.")
      .def_property_readonly(
          "tensor_names",
          [](const GGUFFile& f) {
            py::list out;
            for (const auto& t : f.tensors()) out.append(to_python_string(t.name));
            return out;
          },
          "Tensor names in file order.")
      .def(
          "tensor_info", [](const GGUFFile& f, const py::handle& name) { return f.tensor(name_arg(name)); },
          py::arg("name"))
      .def(
          "__contains__", [](const GGUFFile& f, const py::handle& name) { return f.has_tensor(name_arg(name)); },
          py::arg("name"))
      .def("__len__", [](const GGUFFile& f) { return f.tensors().size(); })
      .def(
          "dequantize",
          [](const GGUFFile& f, const py::handle& name_obj) {
            const std::string name = name_arg(name_obj);
            const GGUFTensorInfo& info = f.tensor(name);
            py::array_t<float> out(std::vector<py::ssize_t>(info.shape.begin(), info.shape.end()));
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              f.dequantize(name, data);
            }
            return out;
          },
          py::arg("name"), "The tensor as a float32 numpy array in row-major shape (bit-identical to gguf-py).")
      .def("model_config", &io::model_config_from_gguf,
           "The Llama ModelConfig from the llama.* metadata (as transformers' GGUF loader reads it).")
      .def(
          "hf_state_dict",
          [](const GGUFFile& f, const std::string& dtype) {
            const torch::Dtype dt = parse_dtype(dtype);
            std::map<std::string, torch::Tensor> out;
            {
              py::gil_scoped_release release;
              out = io::hf_state_dict_from_gguf(f, dt);
            }
            return out;
          },
          py::arg("dtype") = "float32",
          "Every tensor under its HuggingFace name, dequantised, Q/K rows un-permuted (lm_head.weight only "
          "when untied).")
      .def("__repr__", [](const GGUFFile& f) {
        return "GGUFFile('" + f.path() + "', version=" + std::to_string(f.version()) +
               ", tensors=" + std::to_string(f.tensors().size()) + ", keys=" + std::to_string(f.keys().size()) + ")";
      });
}

}  // namespace llm4dsr::bindings
