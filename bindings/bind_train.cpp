// Python bindings of the trainer: TrainingExample, Trainer (instruction tuning / from-scratch
// training with checkpoints and resume), make_lm_examples.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "torch_bindings.h"
#include "llm4dsr/train/trainer.h"

namespace llm4dsr::bindings {

namespace {

// Accepts TrainingExample objects, dicts with input_ids/labels (what InstructionBuilder.tokenize
// gives), or (input_ids, labels) pairs.
std::vector<TrainingExample> to_examples(const py::iterable& items) {
  std::vector<TrainingExample> out;
  size_t index = 0;
  for (const py::handle& item : items) {
    if (py::isinstance<TrainingExample>(item)) {
      out.push_back(item.cast<TrainingExample>());
    } else if (py::isinstance<py::dict>(item)) {
      py::dict d = py::reinterpret_borrow<py::dict>(item);
      LLM4DSR_CHECK(d.contains("input_ids") && d.contains("labels"),
                    "example " << index << " is a dict without 'input_ids' and 'labels'");
      out.push_back({int64_vector(d["input_ids"], "input_ids"), int64_vector(d["labels"], "labels")});
    } else if (py::isinstance<py::tuple>(item) && py::len(item) == 2) {
      py::tuple t = py::reinterpret_borrow<py::tuple>(item);
      out.push_back({int64_vector(t[0], "input_ids"), int64_vector(t[1], "labels")});
    } else if (py::hasattr(item, "input_ids") && py::hasattr(item, "labels")) {
      out.push_back({int64_vector(item.attr("input_ids"), "input_ids"), int64_vector(item.attr("labels"), "labels")});
    } else {
      LLM4DSR_THROW("example " << index << " must be a TrainingExample, a dict or an (input_ids, labels) pair, got "
                               << std::string(py::str(py::type::of(item).attr("__name__"))));
    }
    ++index;
  }
  return out;
}

py::dict progress_dict(const TrainerProgress& p) {
  py::dict d;
  d["step"] = p.step;
  d["total_steps"] = p.total_steps;
  d["loss"] = p.loss;
  d["learning_rate"] = p.learning_rate;
  d["tokens_per_second"] = p.tokens_per_second;
  d["elapsed_seconds"] = p.elapsed_seconds;
  d["eta_seconds"] = p.eta_seconds;
  return d;
}

struct PyTrainer {
  PyLlamaModel model;  // keeps the model alive as long as the trainer
  std::unique_ptr<Trainer> trainer;
};

}  // namespace

void bind_train(py::module_& m) {
  py::class_<TrainingExample>(m, "TrainingExample",
                              "Token ids and per-token labels (-100 = not in the loss; HF convention, the trainer "
                              "shifts).")
      .def(py::init([](const py::object& ids, const py::object& labels) {
             return TrainingExample{int64_vector(ids, "input_ids"), int64_vector(labels, "labels")};
           }),
           py::arg("input_ids"), py::arg("labels"))
      .def_readwrite("input_ids", &TrainingExample::input_ids)
      .def_readwrite("labels", &TrainingExample::labels)
      .def("__len__", [](const TrainingExample& e) { return e.input_ids.size(); });

  py::class_<PyTrainer>(m, "Trainer",
                        "AdamW on the trainable parameters (LoRA adapters, or all for a model trained from scratch), "
                        "warm-up + cosine schedule, clipping, accumulation, length-bucketed micro-batches, optional "
                        "bf16 autocast, atomic checkpoints and exact resume.")
      .def(py::init([](const PyLlamaModel& model, double learning_rate, int64_t num_epochs, int64_t max_steps,
                       int64_t micro_batch_size, int64_t gradient_accumulation_steps, double warmup_ratio,
                       int64_t warmup_steps, const std::string& lr_scheduler, double weight_decay,
                       double max_grad_norm, bool bf16, int64_t pad_token_id, uint64_t seed,
                       const std::string& output_dir, int64_t save_steps, bool progress) {
             TrainerOptions o;
             o.learning_rate = learning_rate;
             o.num_epochs = num_epochs;
             o.max_steps = max_steps;
             o.micro_batch_size = micro_batch_size;
             o.gradient_accumulation_steps = gradient_accumulation_steps;
             o.warmup_ratio = warmup_ratio;
             o.warmup_steps = warmup_steps;
             o.lr_scheduler = lr_scheduler;
             o.weight_decay = weight_decay;
             o.max_grad_norm = max_grad_norm;
             o.bf16 = bf16;
             o.pad_token_id = pad_token_id;
             o.seed = seed;
             o.output_dir = output_dir;
             o.save_steps = save_steps;
             o.progress = progress;
             return PyTrainer{model, std::make_unique<Trainer>(model.model, o)};
           }),
           py::arg("model"), py::arg("learning_rate") = TrainerOptions{}.learning_rate,
           py::arg("num_epochs") = TrainerOptions{}.num_epochs, py::arg("max_steps") = TrainerOptions{}.max_steps,
           py::arg("micro_batch_size") = TrainerOptions{}.micro_batch_size,
           py::arg("gradient_accumulation_steps") = TrainerOptions{}.gradient_accumulation_steps,
           py::arg("warmup_ratio") = TrainerOptions{}.warmup_ratio, py::arg("warmup_steps") = TrainerOptions{}.warmup_steps,
           py::arg("lr_scheduler") = TrainerOptions{}.lr_scheduler, py::arg("weight_decay") = TrainerOptions{}.weight_decay,
           py::arg("max_grad_norm") = TrainerOptions{}.max_grad_norm, py::arg("bf16") = TrainerOptions{}.bf16,
           py::arg("pad_token_id") = TrainerOptions{}.pad_token_id, py::arg("seed") = TrainerOptions{}.seed,
           py::arg("output_dir") = "", py::arg("save_steps") = TrainerOptions{}.save_steps,
           py::arg("progress") = TrainerOptions{}.progress)
      .def(
          "train",
          [](PyTrainer& t, const py::iterable& examples, bool resume, const py::object& callback) {
            std::vector<TrainingExample> data = to_examples(examples);
            if (!callback.is_none()) {
              py::function fn = callback;
              t.trainer->set_progress_callback([fn](const TrainerProgress& p) {
                py::gil_scoped_acquire acquire;
                // Ctrl-C while the GIL was released: raise KeyboardInterrupt here, between steps.
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                fn(progress_dict(p));
              });
            } else {
              t.trainer->set_progress_callback([](const TrainerProgress&) {
                py::gil_scoped_acquire acquire;
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
              });
            }
            TrainResult r;
            {
              py::gil_scoped_release release;
              r = t.trainer->train(data, resume);
            }
            t.trainer->set_progress_callback(nullptr);
            py::dict d;
            d["steps"] = r.steps;
            d["resumed_from_step"] = r.resumed_from_step;
            d["step_losses"] = r.step_losses;
            d["tokens_per_second"] = r.tokens_per_second;
            d["seconds"] = r.seconds;
            return d;
          },
          py::arg("examples"), py::arg("resume") = false, py::arg("callback") = py::none(),
          "Train; `callback(progress: dict)` after every step (step, total_steps, loss, learning_rate, "
          "tokens_per_second, elapsed_seconds, eta_seconds). Returns a dict with steps and step_losses.")
      .def(
          "evaluate",
          [](PyTrainer& t, const py::iterable& examples) {
            std::vector<TrainingExample> data = to_examples(examples);
            py::gil_scoped_release release;
            return t.trainer->evaluate(data);
          },
          py::arg("examples"), "Mean token loss over the labelled tokens (no gradients, dropout off).")
      .def("total_steps", [](const PyTrainer& t, int64_t n) { return t.trainer->total_steps(n); }, py::arg("num_examples"))
      .def("learning_rate_at", [](const PyTrainer& t, int64_t step, int64_t total) {
        return t.trainer->learning_rate_at(step, total);
      }, py::arg("step"), py::arg("total_steps"));

  m.def(
      "make_lm_examples",
      [](const std::vector<std::vector<int64_t>>& encoded, int64_t eos_token_id, int64_t block_size) {
        return make_lm_examples(encoded, eos_token_id, block_size);
      },
      py::arg("encoded_texts"), py::arg("eos_token_id"), py::arg("block_size"),
      "Language-model examples for training from scratch: texts joined with EOS, cut into blocks.");
}

}  // namespace llm4dsr::bindings
