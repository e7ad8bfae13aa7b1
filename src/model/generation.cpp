#include "llm4dsr/model/generation.h"

#include <algorithm>

#include <torch/torch.h>

#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// Dropout in LoRA adapters would make decoding random: decode in eval mode, then restore the mode the
// caller had (a training loop may call this between steps).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(LlamaModel& model) : model_(model), was_training_(model->is_training()) {
    if (was_training_) model_->eval();
  }
  ~EvalModeGuard() {
    if (was_training_) model_->train(true);
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  LlamaModel& model_;
  bool was_training_;
};

}  // namespace

PaddedBatch left_pad(const std::vector<std::vector<int64_t>>& rows, int64_t pad_token_id, torch::Device device) {
  LLM4DSR_CHECK(!rows.empty(), "left_pad: expected at least one row, got an empty batch");
  size_t width = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    LLM4DSR_CHECK(!rows[i].empty(), "left_pad: row " << i << " is empty; every prompt needs at least one token");
    width = std::max(width, rows[i].size());
  }
  const auto B = static_cast<int64_t>(rows.size()), T = static_cast<int64_t>(width);
  PaddedBatch out;
  // Filled on the CPU and moved once: element-wise writes into a device tensor would copy per element.
  auto ids = torch::full({B, T}, pad_token_id, torch::kInt64);
  auto mask = torch::zeros({B, T}, torch::kInt64);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  out.lengths.reserve(rows.size());
  for (int64_t b = 0; b < B; ++b) {
    const auto& row = rows[static_cast<size_t>(b)];
    const int64_t offset = T - static_cast<int64_t>(row.size());
    for (size_t j = 0; j < row.size(); ++j) {
      ids_a[b][offset + static_cast<int64_t>(j)] = row[j];
      mask_a[b][offset + static_cast<int64_t>(j)] = 1;
    }
    out.lengths.push_back(static_cast<int64_t>(row.size()));
  }
  out.input_ids = ids.to(device);
  out.attention_mask = mask.to(device);
  return out;
}

GenerationOutput generate_greedy(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                 int64_t max_new_tokens, const std::vector<int64_t>& stop_token_ids,
                                 const GreedyOptions& options) {
  LLM4DSR_CHECK(model, "generate_greedy: the model is empty (a null LlamaModel holder)");
  LLM4DSR_CHECK(max_new_tokens >= 0, "generate_greedy: max_new_tokens must be >= 0, got " << max_new_tokens);
  const ModelConfig& config = model->config();
  const int64_t vocab = config.vocab_size;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (size_t j = 0; j < prompts[i].size(); ++j)
      LLM4DSR_CHECK(prompts[i][j] >= 0 && prompts[i][j] < vocab, "generate_greedy: prompt " << i << ", token " << j
                                                                     << ": id " << prompts[i][j] << " outside the vocabulary [0, "
                                                                     << vocab << ")");
  for (int64_t s : stop_token_ids)
    LLM4DSR_CHECK(s >= 0 && s < vocab, "generate_greedy: stop token id " << s << " outside the vocabulary [0, " << vocab << ")");
  const int64_t pad = options.pad_token_id >= 0 ? options.pad_token_id
                                                : (config.pad_token_id >= 0 && config.pad_token_id < vocab ? config.pad_token_id : 0);
  LLM4DSR_CHECK(pad < vocab, "generate_greedy: pad_token_id " << pad << " outside the vocabulary [0, " << vocab << ")");

  const torch::Device device = model->device();
  PaddedBatch batch = left_pad(prompts, pad, device);
  const int64_t B = batch.input_ids.size(0), P = batch.input_ids.size(1);

  GenerationOutput out;
  out.sequences.assign(static_cast<size_t>(B), {});
  out.stopped.assign(static_cast<size_t>(B), false);
  if (max_new_tokens == 0) return out;

  c10::InferenceMode inference;
  EvalModeGuard eval_mode(model);
  auto long_options = torch::TensorOptions().dtype(torch::kInt64).device(device);

  // The last new token is never fed back, hence - 1.
  KVCache cache = model->make_cache(B, P + max_new_tokens - 1);
  torch::Tensor generated = torch::full({B, max_new_tokens}, pad, long_options);
  torch::Tensor step_ids = torch::empty({B, 1}, long_options);
  torch::Tensor step_mask = torch::ones({B, 1}, long_options);
  torch::Tensor done = torch::zeros({B}, torch::TensorOptions().dtype(torch::kBool).device(device));
  torch::Tensor not_done = torch::ones({B}, torch::TensorOptions().dtype(torch::kBool).device(device));
  torch::Tensor stop_ids = torch::tensor(stop_token_ids, torch::kInt64).to(device);
  const bool has_stops = !stop_token_ids.empty();

  // Left padding puts every row's last prompt token in the last column: its logits are the only ones needed.
  torch::Tensor last = torch::full({1}, -1, long_options);
  torch::Tensor logits = model->forward(batch.input_ids, batch.attention_mask, &cache, last).select(1, 0);
  out.steps = 1;

  int64_t produced = 0;
  for (int64_t t = 0; t < max_new_tokens; ++t) {
    if (options.logits_processor) options.logits_processor(logits, generated.narrow(1, 0, t), t);
    torch::Tensor next = logits.argmax(-1);
    next.masked_fill_(done, pad);
    generated.select(1, t).copy_(next);
    produced = t + 1;
    if (has_stops) done.logical_or_(torch::isin(next, stop_ids));
    if (t + 1 == max_new_tokens) break;
    if (has_stops && done.all().item<bool>()) break;
    // Stopped rows keep stepping (the batch stays rectangular) on masked pads, so they change nothing.
    step_ids.select(1, 0).copy_(next);
    if (has_stops) {
      torch::logical_not_out(not_done, done);
      step_mask.select(1, 0).copy_(not_done);
    }
    logits = model->forward(step_ids, step_mask, &cache).select(1, 0);
    ++out.steps;
  }

  torch::Tensor host = generated.narrow(1, 0, produced).to(torch::kCPU);
  auto acc = host.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    auto& seq = out.sequences[static_cast<size_t>(b)];
    seq.reserve(static_cast<size_t>(produced));
    for (int64_t t = 0; t < produced; ++t) {
      const int64_t id = acc[b][t];
      seq.push_back(id);
      if (std::find(stop_token_ids.begin(), stop_token_ids.end(), id) != stop_token_ids.end()) {
        out.stopped[static_cast<size_t>(b)] = true;
        break;
      }
    }
  }
  return out;
}

}  // namespace llm4dsr
