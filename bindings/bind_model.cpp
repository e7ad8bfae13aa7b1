// Python bindings for the language model: ModelConfig, LoraConfig, LlamaModel (HF folder I/O, PEFT
// adapters, logits / hidden states). torch tensors cross the boundary as torch tensors, which is why
// this translation unit includes <torch/extension.h>.
#include <torch/extension.h>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "torch_bindings.h"
#include "llm4dsr/error.h"
#include "llm4dsr/io/hf_checkpoint.h"
#include "llm4dsr/io/model_registry.h"
#include "llm4dsr/io/peft_adapter.h"
#include "llm4dsr/io/safetensors.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/generation.h"
#include "llm4dsr/model/kv_cache.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/model/lora.h"

namespace py = pybind11;

namespace llm4dsr::bindings {

namespace {

torch::Tensor optional_int64(const py::object& obj, const char* what, Elements elements = Elements::kIntegers) {
  return obj.is_none() ? torch::Tensor() : int64_tensor(obj, what, elements);
}

torch::Tensor ids_2d(const py::handle& obj) {
  torch::Tensor t = int64_tensor(obj, "input ids");
  if (t.dim() == 1) t = t.unsqueeze(0);
  LLM4DSR_CHECK(t.dim() == 2, "input ids must be [batch, seq] (or [seq]), got shape " << t.sizes());
  return t;
}

torch::Tensor mask_like(const py::object& obj, const torch::Tensor& ids) {
  torch::Tensor m = optional_int64(obj, "attention_mask", Elements::kIntegersOrBools);
  if (m.defined() && m.dim() == 1) m = m.unsqueeze(0);
  // Checked here as well as in the model: logits_incremental slices the mask column by column first.
  LLM4DSR_CHECK(!m.defined() || m.sizes() == ids.sizes(),
                "attention_mask must be " << ids.sizes() << " like input_ids, got " << m.sizes());
  return m;
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<RopeScaling>(m, "RopeScaling", "Rotary-embedding frequency scaling (HF rope_scaling / rope_parameters).")
      .def(py::init<>())
      .def_readwrite("rope_type", &RopeScaling::rope_type)
      .def_readwrite("factor", &RopeScaling::factor)
      .def_readwrite("low_freq_factor", &RopeScaling::low_freq_factor)
      .def_readwrite("high_freq_factor", &RopeScaling::high_freq_factor)
      .def_readwrite("original_max_position_embeddings", &RopeScaling::original_max_position_embeddings)
      .def("__repr__", [](const RopeScaling& s) {
        return "RopeScaling(rope_type='" + s.rope_type + "', factor=" + std::to_string(s.factor) + ")";
      });

  py::class_<ModelConfig>(m, "ModelConfig", "Hyper-parameters of a Llama model (HF config.json fields).")
      .def(py::init<>())
      .def_readwrite("vocab_size", &ModelConfig::vocab_size)
      .def_readwrite("hidden_size", &ModelConfig::hidden_size)
      .def_readwrite("intermediate_size", &ModelConfig::intermediate_size)
      .def_readwrite("num_hidden_layers", &ModelConfig::num_hidden_layers)
      .def_readwrite("num_attention_heads", &ModelConfig::num_attention_heads)
      .def_readwrite("num_key_value_heads", &ModelConfig::num_key_value_heads)
      .def_readwrite("head_dim", &ModelConfig::head_dim)
      .def_readwrite("max_position_embeddings", &ModelConfig::max_position_embeddings)
      .def_readwrite("rms_norm_eps", &ModelConfig::rms_norm_eps)
      .def_readwrite("rope_theta", &ModelConfig::rope_theta)
      .def_readwrite("rope_scaling", &ModelConfig::rope_scaling)
      .def_readwrite("tie_word_embeddings", &ModelConfig::tie_word_embeddings)
      .def_readwrite("attention_bias", &ModelConfig::attention_bias)
      .def_readwrite("mlp_bias", &ModelConfig::mlp_bias)
      .def_readwrite("initializer_range", &ModelConfig::initializer_range)
      .def_readwrite("hidden_act", &ModelConfig::hidden_act)
      .def_readwrite("torch_dtype", &ModelConfig::torch_dtype)
      .def_readwrite("bos_token_id", &ModelConfig::bos_token_id)
      .def_readwrite("eos_token_ids", &ModelConfig::eos_token_ids)
      .def_readwrite("pad_token_id", &ModelConfig::pad_token_id)
      .def("validate", &ModelConfig::validate)
      .def_static("from_json", &ModelConfig::from_json, py::arg("text"), py::arg("source") = "config.json")
      .def_static("from_file", &ModelConfig::from_file, py::arg("path"))
      .def_static("preset", &ModelConfig::preset, py::arg("name"), py::arg("vocab_size") = 0,
                  "Small configurations for training from scratch: 'tiny', 'small', 'base'.")
      .def("to_json", &ModelConfig::to_json)
      .def("save", &ModelConfig::save, py::arg("path"))
      .def("__repr__", [](const ModelConfig& c) {
        return "ModelConfig(vocab_size=" + std::to_string(c.vocab_size) + ", hidden_size=" + std::to_string(c.hidden_size) +
               ", num_hidden_layers=" + std::to_string(c.num_hidden_layers) +
               ", num_attention_heads=" + std::to_string(c.num_attention_heads) +
               ", num_key_value_heads=" + std::to_string(c.num_key_value_heads) + ")";
      });

  py::class_<LoraConfig>(m, "LoraConfig", "LoRA settings (PEFT adapter_config.json fields).")
      .def(py::init<>())
      .def_readwrite("r", &LoraConfig::r)
      .def_readwrite("alpha", &LoraConfig::alpha)
      .def_readwrite("dropout", &LoraConfig::dropout)
      .def_readwrite("target_modules", &LoraConfig::target_modules)
      .def_readwrite("target_regex", &LoraConfig::target_regex)
      .def_readwrite("layers_to_transform", &LoraConfig::layers_to_transform)
      .def_readwrite("use_rslora", &LoraConfig::use_rslora)
      .def_readwrite("seed", &LoraConfig::seed)
      .def_property_readonly("scaling", &LoraConfig::scaling)
      .def_static("from_adapter_config", &io::read_adapter_config, py::arg("path"));

  py::class_<GenerationOutput>(m, "GenerationOutput", "What generate_greedy returns.")
      .def_readonly("sequences", &GenerationOutput::sequences, "new token ids per row (stop token included)")
      .def_readonly("stopped", &GenerationOutput::stopped, "whether each row produced a stop token")
      .def_readonly("steps", &GenerationOutput::steps, "forwards run, the prefill included")
      .def("__repr__", [](const GenerationOutput& o) {
        return "GenerationOutput(rows=" + std::to_string(o.sequences.size()) + ", steps=" + std::to_string(o.steps) + ")";
      });

  py::class_<PyLlamaModel>(m, "LlamaModel",
                           "Llama causal language model (HF LlamaForCausalLM numerics) with optional LoRA adapters.")
      .def(py::init([](const ModelConfig& config, const std::string& device, const std::string& dtype, uint64_t seed) {
             const auto dev = parse_device(device);
             PyLlamaModel p;
             p.model = LlamaModel(config, dev, parse_dtype(dtype, dev), seed);
             return p;
           }),
           py::arg("config"), py::arg("device") = "cpu", py::arg("dtype") = "float32", py::arg("seed") = 0,
           "A freshly initialised model (HF initialisation, seeded).")
      .def_static(
          "from_pretrained",
          [](const std::string& path, const std::string& device, const std::string& dtype) {
            const auto dev = parse_device(device);
            const auto dt = parse_dtype(dtype, dev);
            PyLlamaModel p;
            {
              py::gil_scoped_release release;
              p.model = io::load_llama_model(path, dev, dt);
            }
            return p;
          },
          py::arg("path"), py::arg("device") = "cpu", py::arg("dtype") = "float32",
          "Loads a HuggingFace Llama checkpoint folder (config.json + model.safetensors or shards), a GGUF file "
          "(dequantised to `dtype`), or a known short name such as 'smollm2-135m-instruct'. dtype 'auto': bfloat16 "
          "where the device multiplies it natively, float32 elsewhere (llm4dsr.auto_dtype).")
      .def(
          "save_pretrained",
          [](PyLlamaModel& p, const std::string& path) {
            py::gil_scoped_release release;
            io::save_hf_checkpoint(p.model, path);
          },
          py::arg("path"))
      .def(
          "logits",
          [](PyLlamaModel& p, const py::object& ids, const py::object& attention_mask, const py::object& positions) {
            torch::Tensor x = ids_2d(ids), mask = mask_like(attention_mask, x), pos = optional_int64(positions, "positions");
            py::gil_scoped_release release;
            torch::NoGradGuard no_grad;
            return p.model->forward(p.ids_on_device(x), p.on_device(mask), nullptr, p.on_device(pos))
                .to(torch::kCPU, torch::kFloat32);
          },
          py::arg("ids"), py::arg("attention_mask") = py::none(), py::arg("positions") = py::none(),
          "float32 CPU logits [B, T, vocab] (or [B, K, vocab] at `positions`: [K] or [B, K]); no gradients.")
      .def(
          "hidden_states",
          [](PyLlamaModel& p, const py::object& ids, const py::object& attention_mask) {
            torch::Tensor x = ids_2d(ids), mask = mask_like(attention_mask, x);
            py::gil_scoped_release release;
            torch::NoGradGuard no_grad;
            return p.model->forward_hidden(p.ids_on_device(x), p.on_device(mask)).to(torch::kCPU, torch::kFloat32);
          },
          py::arg("ids"), py::arg("attention_mask") = py::none(),
          "float32 CPU final hidden states [B, T, hidden] (after the last RMSNorm); no gradients.")
      .def(
          "forward",
          [](PyLlamaModel& p, const py::object& ids, const py::object& attention_mask) {
            torch::Tensor x = ids_2d(ids), mask = mask_like(attention_mask, x);
            py::gil_scoped_release release;
            return p.model->forward(p.ids_on_device(x), p.on_device(mask));
          },
          py::arg("ids"), py::arg("attention_mask") = py::none(),
          "Logits in the model's dtype and device, with autograd (for training and gradient checks).")
      .def(
          "logits_incremental",
          [](PyLlamaModel& p, const py::object& ids, const py::object& attention_mask, int64_t prompt_length) {
            torch::Tensor x = ids_2d(ids), mask = mask_like(attention_mask, x);
            const int64_t T = x.size(1);
            LLM4DSR_CHECK(prompt_length >= 1 && prompt_length <= T,
                          "prompt_length must be in [1, " << T << "], got " << prompt_length);
            py::gil_scoped_release release;
            torch::NoGradGuard no_grad;
            x = p.ids_on_device(x);
            mask = p.on_device(mask);
            KVCache cache = p.model->make_cache(x.size(0), T);
            std::vector<torch::Tensor> parts;
            auto cols = [&](int64_t begin, int64_t n) { return mask.defined() ? mask.narrow(1, begin, n) : torch::Tensor(); };
            parts.push_back(p.model->forward(x.narrow(1, 0, prompt_length), cols(0, prompt_length), &cache));
            for (int64_t t = prompt_length; t < T; ++t)
              parts.push_back(p.model->forward(x.narrow(1, t, 1), cols(t, 1), &cache));
            return torch::cat(parts, 1).to(torch::kCPU, torch::kFloat32);
          },
          py::arg("ids"), py::arg("attention_mask") = py::none(), py::arg("prompt_length") = 1,
          "Logits computed with a KV cache: the first prompt_length tokens in one forward, then one token "
          "per step. Equal to logits() up to rounding.")
      .def(
          "generate_greedy",
          [](PyLlamaModel& p, const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
             const py::object& stop_token_ids, int64_t pad_token_id) {
            const std::vector<int64_t> stops = stop_token_ids.is_none() ? p.model->config().eos_token_ids
                                                                        : stop_token_ids.cast<std::vector<int64_t>>();
            GreedyOptions options;
            options.pad_token_id = pad_token_id;
            py::gil_scoped_release release;
            return generate_greedy(p.model, prompts, max_new_tokens, stops, options);
          },
          py::arg("prompts"), py::arg("max_new_tokens") = 32, py::arg("stop_token_ids") = py::none(),
          py::arg("pad_token_id") = -1,
          "Greedy decoding with a KV cache of a batch of prompts (lists of token ids, left-padded together). "
          "stop_token_ids: None = the config's eos_token_ids, [] = none. Returns a GenerationOutput: "
          ".sequences (the new ids per row, ending with the stop token where a row stopped), .stopped, .steps.")
      .def(
          "add_lora",
          [](PyLlamaModel& p, int64_t r, double alpha, double dropout, const py::object& target_modules,
             bool use_rslora, uint64_t seed, const std::vector<int64_t>& layers_to_transform) {
            LoraConfig c;
            c.r = r;
            c.alpha = alpha;
            c.dropout = dropout;
            c.use_rslora = use_rslora;
            c.seed = seed;
            c.layers_to_transform = layers_to_transform;
            if (py::isinstance<py::str>(target_modules)) {
              const std::string s = target_modules.cast<std::string>();
              if (s == "all-linear") c.target_modules = {s};
              else c.target_regex = s;
            } else {
              c.target_modules = target_modules.cast<std::vector<std::string>>();
            }
            p.model->add_lora(c);
          },
          py::arg("r") = 8, py::arg("alpha") = 16.0, py::arg("dropout") = 0.05,
          py::arg("target_modules") = std::vector<std::string>{"q_proj", "v_proj"}, py::arg("use_rslora") = false,
          py::arg("seed") = 0, py::arg("layers_to_transform") = std::vector<int64_t>{},
          "Adds LoRA adapters (B = 0, A Kaiming-uniform from `seed`) and freezes the base weights. "
          "target_modules: a list of projection names, 'all-linear', or a regular expression string.")
      .def("add_lora_config", [](PyLlamaModel& p, const LoraConfig& c) { p.model->add_lora(c); }, py::arg("config"))
      .def(
          "load_adapter",
          [](PyLlamaModel& p, const std::string& path) {
            py::gil_scoped_release release;
            io::load_peft_adapter(p.model, path);
          },
          py::arg("path"), "Adds and loads a PEFT LoRA adapter folder.")
      .def(
          "save_adapter",
          [](PyLlamaModel& p, const std::string& path, const std::string& base) {
            py::gil_scoped_release release;
            io::save_peft_adapter(p.model, path, base);
          },
          py::arg("path"), py::arg("base_model_name_or_path") = "")
      .def("merge_lora", [](PyLlamaModel& p) { p.model->merge_lora(); })
      .def("unmerge_lora", [](PyLlamaModel& p) { p.model->unmerge_lora(); })
      .def("remove_lora", [](PyLlamaModel& p) { p.model->remove_lora(); })
      .def_property_readonly("has_lora", [](const PyLlamaModel& p) { return p.model->has_lora(); })
      .def_property_readonly("lora_config", [](const PyLlamaModel& p) { return p.model->lora_config(); })
      .def(
          "lora_parameters",
          [](const PyLlamaModel& p) {
            py::dict out;
            for (auto& [name, t] : p.model->lora_state()) out[py::str(name)] = t;
            return out;
          },
          "The adapter tensors by PEFT name (shared with the model: in-place changes take effect).")
      .def(
          "state_dict",
          [](const PyLlamaModel& p) {
            py::dict out;
            for (auto& [name, t] : p.model->hf_state()) out[py::str(name)] = t;
            return out;
          },
          "The base weights by HF name (shared with the model).")
      .def(
          "train", [](PyLlamaModel& p, bool mode) { p.model->train(mode); return &p; }, py::arg("mode") = true,
          py::return_value_policy::reference)
      .def(
          "eval", [](PyLlamaModel& p) { p.model->eval(); return &p; }, py::return_value_policy::reference)
      .def_property(
          "weight_packing", [](const PyLlamaModel& p) { return p.model->weight_packing(); },
          [](PyLlamaModel& p, bool enabled) { p.model->set_weight_packing(enabled); },
          "bf16 CPU inference through weights reordered once for oneDNN (faster; as much memory again as the "
          "projection and lm_head weights). Set False to drop the copies.")
      .def_property_readonly("training", [](const PyLlamaModel& p) { return p.model->is_training(); })
      .def_property_readonly("config", [](const PyLlamaModel& p) { return p.model->config(); })
      .def_property_readonly("device", [](const PyLlamaModel& p) { return p.model->device().str(); })
      .def_property_readonly("dtype", [](const PyLlamaModel& p) { return dtype_name(p.model->dtype()); })
      .def("to", [](PyLlamaModel& p, const std::string& device, const std::string& dtype) {
            const auto dev = parse_device(device);
            p.model->to_device_dtype(dev, parse_dtype(dtype, dev));
          }, py::arg("device") = "cpu", py::arg("dtype") = "float32")
      .def("num_parameters", [](const PyLlamaModel& p) {
        int64_t n = 0;
        for (auto& [name, t] : p.model->hf_state()) n += t.numel();
        return n;
      });

  m.def(
      "load_safetensors",
      [](const std::string& path) {
        std::map<std::string, torch::Tensor> out;
        {
          py::gil_scoped_release release;
          out = io::load_safetensors(path);
        }
        py::dict d;
        for (auto& [k, v] : out) d[py::str(k)] = v;
        return d;
      },
      py::arg("path"), "Reads a .safetensors file into {name: tensor} (validated; memory-mapped).");
  m.def(
      "save_safetensors",
      [](const std::string& path, const py::dict& tensors, const std::map<std::string, std::string>& metadata) {
        std::vector<std::pair<std::string, torch::Tensor>> items;
        for (auto& [k, v] : tensors) {
          LLM4DSR_CHECK(THPVariable_Check(v.ptr()), "save_safetensors: value for '" << std::string(py::str(k))
                                                                                    << "' is not a torch tensor");
          items.emplace_back(py::str(k), THPVariable_Unpack(v.ptr()));
        }
        py::gil_scoped_release release;
        io::save_safetensors(path, items, metadata);
      },
      py::arg("path"), py::arg("tensors"), py::arg("metadata") = std::map<std::string, std::string>{});
}

}  // namespace llm4dsr::bindings
