#include "llm4dsr/model/generation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "internal/target_log_prob.h"
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

// Validates the shared arguments of the decoders and returns the pad id to use.
int64_t checked_pad_id(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
                       const std::vector<int64_t>& stop_token_ids, int64_t pad_token_id, const char* who) {
  LLM4DSR_CHECK(model, who << ": the model is empty (a null LlamaModel holder)");
  LLM4DSR_CHECK(max_new_tokens >= 0, who << ": max_new_tokens must be >= 0, got " << max_new_tokens);
  const ModelConfig& config = model->config();
  const int64_t vocab = config.vocab_size;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (size_t j = 0; j < prompts[i].size(); ++j)
      LLM4DSR_CHECK(prompts[i][j] >= 0 && prompts[i][j] < vocab, who << ": prompt " << i << ", token " << j << ": id "
                                                                     << prompts[i][j] << " outside the vocabulary [0, "
                                                                     << vocab << ")");
  for (int64_t s : stop_token_ids)
    LLM4DSR_CHECK(s >= 0 && s < vocab, who << ": stop token id " << s << " outside the vocabulary [0, " << vocab << ")");
  const int64_t pad = pad_token_id >= 0 ? pad_token_id
                                        : (config.pad_token_id >= 0 && config.pad_token_id < vocab ? config.pad_token_id : 0);
  LLM4DSR_CHECK(pad < vocab, who << ": pad_token_id " << pad << " outside the vocabulary [0, " << vocab << ")");
  return pad;
}

GenerationOutput empty_output(int64_t rows) {
  GenerationOutput out;
  out.sequences.assign(static_cast<size_t>(rows), {});
  out.stopped.assign(static_cast<size_t>(rows), false);
  out.log_probs.assign(static_cast<size_t>(rows), 0.0);
  out.scores.assign(static_cast<size_t>(rows), 0.0);
  return out;
}

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
  const int64_t pad = checked_pad_id(model, prompts, max_new_tokens, stop_token_ids, options.pad_token_id, "generate_greedy");
  const torch::Device device = model->device();
  PaddedBatch batch = left_pad(prompts, pad, device);
  const int64_t B = batch.input_ids.size(0), P = batch.input_ids.size(1);

  GenerationOutput out = empty_output(B);
  if (max_new_tokens == 0) return out;

  c10::InferenceMode inference;
  EvalModeGuard eval_mode(model);
  auto long_options = torch::TensorOptions().dtype(torch::kInt64).device(device);

  // The last new token is never fed back, hence - 1.
  KVCache cache = model->make_cache(B, P + max_new_tokens - 1);
  torch::Tensor generated = torch::full({B, max_new_tokens}, pad, long_options);
  torch::Tensor token_log_probs = torch::zeros({B, max_new_tokens}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
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
    // log p(next) = logit - logsumexp, in fp32; rows already stopped contribute 0.
    torch::Tensor chosen = internal::target_log_prob(logits, next);
    token_log_probs.select(1, t).copy_(chosen.masked_fill_(done, 0.0f));
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
  torch::Tensor host_lp = token_log_probs.narrow(1, 0, produced).to(torch::kCPU);
  auto acc = host.accessor<int64_t, 2>();
  auto lp_acc = host_lp.accessor<float, 2>();
  for (int64_t b = 0; b < B; ++b) {
    auto& seq = out.sequences[static_cast<size_t>(b)];
    seq.reserve(static_cast<size_t>(produced));
    for (int64_t t = 0; t < produced; ++t) {
      const int64_t id = acc[b][t];
      seq.push_back(id);
      out.log_probs[static_cast<size_t>(b)] += lp_acc[b][t];
      out.scores[static_cast<size_t>(b)] = out.log_probs[static_cast<size_t>(b)];
      if (std::find(stop_token_ids.begin(), stop_token_ids.end(), id) != stop_token_ids.end()) {
        out.stopped[static_cast<size_t>(b)] = true;
        break;
      }
    }
  }
  return out;
}

void BeamOptions::validate() const {
  LLM4DSR_CHECK(num_beams >= 1, "BeamOptions: num_beams must be >= 1, got " << num_beams);
  LLM4DSR_CHECK(std::isfinite(length_penalty), "BeamOptions: length_penalty must be finite, got " << length_penalty);
}

namespace {

struct Hypothesis {
  std::vector<int64_t> tokens;
  double log_prob = 0.0;
  double score = 0.0;
  bool stopped = false;
};

// The num_beams best hypotheses of one prompt, best first.
class HypothesisSet {
 public:
  HypothesisSet(size_t capacity, double length_penalty) : capacity_(capacity), length_penalty_(length_penalty) {}

  double normalised(double log_prob, int64_t length) const {
    return log_prob / std::pow(static_cast<double>(length), length_penalty_);
  }
  void add(std::vector<int64_t> tokens, double log_prob, bool stopped) {
    const double score = normalised(log_prob, static_cast<int64_t>(tokens.size()));
    if (full() && score <= hyps_.back().score) return;
    Hypothesis h{std::move(tokens), log_prob, score, stopped};
    auto at = std::upper_bound(hyps_.begin(), hyps_.end(), h.score,
                               [](double v, const Hypothesis& x) { return v > x.score; });
    hyps_.insert(at, std::move(h));
    if (hyps_.size() > capacity_) hyps_.pop_back();
  }
  bool full() const { return hyps_.size() >= capacity_; }
  // Whether a running beam with this log-probability, `length` tokens long now, could still end
  // better than the worst kept hypothesis. Its log-probability only falls; its length stays within
  // [length + 1, max_length], so the length factor is bounded by one end of that range.
  bool can_improve(double running_log_prob, int64_t length, int64_t max_length) const {
    if (!full()) return true;
    const int64_t bound_length = length_penalty_ > 0 ? max_length : length + 1;
    return normalised(running_log_prob, bound_length) > hyps_.back().score;
  }
  const std::vector<Hypothesis>& hypotheses() const { return hyps_; }

 private:
  size_t capacity_;
  double length_penalty_;
  std::vector<Hypothesis> hyps_;
};

}  // namespace

GenerationOutput generate_beam(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                               int64_t max_new_tokens, const std::vector<int64_t>& stop_token_ids,
                               const BeamOptions& options) {
  options.validate();
  const int64_t pad = checked_pad_id(model, prompts, max_new_tokens, stop_token_ids, options.pad_token_id, "generate_beam");
  const torch::Device device = model->device();
  PaddedBatch batch = left_pad(prompts, pad, device);
  const int64_t B = batch.input_ids.size(0), P = batch.input_ids.size(1);
  const int64_t nb = options.num_beams, R = B * nb;

  GenerationOutput out = empty_output(B);
  if (max_new_tokens == 0) return out;

  c10::InferenceMode inference;
  EvalModeGuard eval_mode(model);
  auto long_options = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const std::vector<int64_t>& stops = stop_token_ids;
  const auto is_stop = [&](int64_t id) { return std::find(stops.begin(), stops.end(), id) != stops.end(); };

  torch::Tensor logits;
  KVCache cache = model->make_cache(R, P + max_new_tokens - 1);
  {
    // The prompts run once; their cache is copied to every beam of their prompt.
    KVCache prompt_cache = model->make_cache(B, P);
    torch::Tensor last = torch::full({1}, -1, long_options);
    logits = model->forward(batch.input_ids, batch.attention_mask, &prompt_cache, last).select(1, 0);
    torch::Tensor fan_out = torch::arange(B, long_options).repeat_interleave(nb);
    cache.assign_rows(prompt_cache, fan_out);
    logits = logits.index_select(0, fan_out);
  }
  out.steps = 1;

  std::vector<HypothesisSet> finished(static_cast<size_t>(B), HypothesisSet(static_cast<size_t>(nb), options.length_penalty));
  std::vector<bool> done(static_cast<size_t>(B), false);
  // Only beam 0 of each prompt is live at the start: the others would repeat its candidates.
  std::vector<double> beam_log_prob(static_cast<size_t>(R), -std::numeric_limits<double>::infinity());
  for (int64_t b = 0; b < B; ++b) beam_log_prob[static_cast<size_t>(b * nb)] = 0.0;
  std::vector<std::vector<int64_t>> beam_tokens(static_cast<size_t>(R));
  torch::Tensor generated = torch::full({R, max_new_tokens}, pad, long_options);
  torch::Tensor step_ids = torch::empty({R, 1}, long_options);
  torch::Tensor step_mask = torch::ones({R, 1}, long_options);
  const int64_t candidates = std::min<int64_t>(2 * nb, nb * logits.size(1));

  for (int64_t t = 0; t < max_new_tokens; ++t) {
    if (options.logits_processor) options.logits_processor(logits, generated.narrow(1, 0, t), t);
    torch::Tensor logp = logits.to(torch::kFloat32).log_softmax(-1);  // [R, V]
    // A row whose every token was forbidden gives NaN (-inf - -inf), which topk would rank first.
    logp.masked_fill_(logp.isnan(), -std::numeric_limits<float>::infinity());
    const int64_t V = logp.size(1);
    torch::Tensor prior = torch::tensor(beam_log_prob, torch::kFloat64).to(device, torch::kFloat32).unsqueeze(1);
    auto [top_values, top_indices] = (logp + prior).view({B, nb * V}).topk(candidates, 1);
    top_values = top_values.to(torch::kCPU, torch::kFloat64);
    top_indices = top_indices.to(torch::kCPU);
    auto va = top_values.accessor<double, 2>();
    auto ia = top_indices.accessor<int64_t, 2>();

    std::vector<int64_t> source_row(static_cast<size_t>(R));
    std::vector<int64_t> next_token(static_cast<size_t>(R), pad);
    std::vector<double> next_log_prob(static_cast<size_t>(R), -std::numeric_limits<double>::infinity());
    const bool last_step = t + 1 == max_new_tokens;
    for (int64_t b = 0; b < B; ++b) {
      int64_t kept = 0;
      if (!done[static_cast<size_t>(b)]) {
        for (int64_t j = 0; j < candidates && kept < nb; ++j) {
          const double v = va[b][j];
          if (!std::isfinite(v)) break;  // forbidden or dead: every later candidate is too
          const int64_t beam = ia[b][j] / V, token = ia[b][j] % V;
          const int64_t row = b * nb + beam;
          std::vector<int64_t> tokens = beam_tokens[static_cast<size_t>(row)];
          tokens.push_back(token);
          if (is_stop(token)) {
            if (j < nb) finished[static_cast<size_t>(b)].add(std::move(tokens), v, true);
            continue;
          }
          if (last_step) finished[static_cast<size_t>(b)].add(std::move(tokens), v, false);
          const auto slot = static_cast<size_t>(b * nb + kept);
          source_row[slot] = row;
          next_token[slot] = token;
          next_log_prob[slot] = v;
          ++kept;
        }
        const double best_running = kept > 0 ? next_log_prob[static_cast<size_t>(b * nb)] : -std::numeric_limits<double>::infinity();
        if (kept == 0 || !finished[static_cast<size_t>(b)].can_improve(best_running, t + 1, max_new_tokens))
          done[static_cast<size_t>(b)] = true;
      }
      // Dead slots (a done prompt, or fewer live candidates than beams) keep stepping on their own
      // row with -inf, so they are never chosen again.
      for (int64_t k = kept; k < nb; ++k) {
        const auto slot = static_cast<size_t>(b * nb + k);
        source_row[slot] = b * nb + k;
        next_token[slot] = pad;
        next_log_prob[slot] = -std::numeric_limits<double>::infinity();
      }
    }
    if (last_step || std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;

    std::vector<std::vector<int64_t>> tokens(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) {
      tokens[static_cast<size_t>(r)] = beam_tokens[static_cast<size_t>(source_row[static_cast<size_t>(r)])];
      tokens[static_cast<size_t>(r)].push_back(next_token[static_cast<size_t>(r)]);
    }
    beam_tokens = std::move(tokens);
    beam_log_prob = next_log_prob;
    torch::Tensor index = torch::tensor(source_row, torch::kInt64).to(device);
    cache.reorder(index);
    generated = generated.index_select(0, index);
    torch::Tensor chosen = torch::tensor(next_token, torch::kInt64).to(device);
    generated.select(1, t).copy_(chosen);
    step_ids.select(1, 0).copy_(chosen);
    logits = model->forward(step_ids, step_mask, &cache).select(1, 0);
    ++out.steps;
  }

  for (int64_t b = 0; b < B; ++b) {
    const auto& hyps = finished[static_cast<size_t>(b)].hypotheses();
    if (hyps.empty()) continue;  // every token forbidden from the first step on
    const Hypothesis& best = hyps.front();
    out.sequences[static_cast<size_t>(b)] = best.tokens;
    out.stopped[static_cast<size_t>(b)] = best.stopped;
    out.log_probs[static_cast<size_t>(b)] = best.log_prob;
    out.scores[static_cast<size_t>(b)] = best.score;
  }
  return out;
}

}  // namespace llm4dsr
