// Trainer: instruction tuning (LoRA) and from-scratch language-model training of a LlamaModel.
//
// AdamW on the parameters that require grad (the LoRA adapters after add_lora, or every parameter of
// a model trained from scratch), linear warm-up then cosine (or constant) learning rate, global
// gradient-norm clipping, gradient accumulation, micro-batches bucketed by length, optional bf16
// autocast. The loss of an optimiser step is the mean token cross-entropy over every labelled token
// of the step (labels == -100 are ignored, as in HF), independent of how the step is cut into
// micro-batches.
//
// Checkpoints (trainable parameters, optimiser state, RNG state, progress) are written atomically to
// `output_dir/checkpoint` every `save_steps` steps; train(..., resume = true) continues a killed run
// from there and ends with the same parameters as an uninterrupted run with the same seed. The RNG
// state is the CPU generator's and, for a model on a GPU, that device's (which draws its dropout
// masks); both are seeded from `seed`. A checkpoint is read onto the model's device, so a run started
// on a GPU can resume on the CPU and the other way round.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/train/ignore_index.h"

namespace llm4dsr {

// One training sequence: token ids and per-token labels (kIgnoreIndex = -100: not in the loss). labels[t] is the
// token the model should produce AT position t (HF convention: the trainer shifts).
struct TrainingExample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
};

struct TrainerOptions {
  double learning_rate = 3e-4;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;          // <= 0 disables clipping
  std::string lr_scheduler = "cosine"; // "cosine" | "linear" | "constant" (all after warm-up)
  double warmup_ratio = 0.05;          // share of total steps; warmup_steps > 0 overrides
  int64_t warmup_steps = 0;
  int64_t num_epochs = 1;
  int64_t max_steps = 0;               // > 0 caps the number of optimiser steps
  int64_t micro_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  bool bf16 = false;                   // bf16 autocast for the forward/backward
  int64_t pad_token_id = 0;            // any token of the vocabulary: padded positions are masked out
  uint64_t seed = 0;                   // data order and dropout
  std::string output_dir;              // empty: no checkpoints
  int64_t save_steps = 0;              // checkpoint every N steps (0: only at the end when output_dir is set)
  bool progress = true;                // progress line on stderr (loss, tokens/s, ETA)
};

struct TrainerProgress {
  int64_t step = 0;          // optimiser steps done
  int64_t total_steps = 0;
  double loss = 0.0;         // mean token loss of the last step
  double learning_rate = 0.0;
  double tokens_per_second = 0.0;  // tokens processed (incl. prompt) per wall second, this run
  double elapsed_seconds = 0.0;
  double eta_seconds = 0.0;
};

struct TrainResult {
  int64_t steps = 0;                 // total optimiser steps (including ones done before a resume)
  int64_t resumed_from_step = 0;     // 0 when not resumed
  std::vector<double> step_losses;   // loss of every step run in this call
  double tokens_per_second = 0.0;
  double seconds = 0.0;
};

class Trainer {
 public:
  Trainer(LlamaModel model, TrainerOptions options);
  ~Trainer();

  // Runs the optimisation. With resume = true and a checkpoint in output_dir, restores it (the data
  // and options must be the same) and continues; without a checkpoint it starts from scratch.
  TrainResult train(const std::vector<TrainingExample>& examples, bool resume = false);

  // Mean token loss over `examples` (no gradients, dropout off), in micro-batches.
  double evaluate(const std::vector<TrainingExample>& examples) const;

  // Called after every optimiser step (besides the stderr progress line when options.progress).
  void set_progress_callback(std::function<void(const TrainerProgress&)> callback);

  const TrainerOptions& options() const { return options_; }
  // Number of optimiser steps train() would run on `num_examples` examples.
  int64_t total_steps(int64_t num_examples) const;
  // Learning rate at optimiser step `step` (0-based) of `total_steps`.
  double learning_rate_at(int64_t step, int64_t total_steps) const;

 private:
  LlamaModel model_;
  TrainerOptions options_;
  std::function<void(const TrainerProgress&)> callback_;
};

// Summed token cross-entropy and number of labelled tokens of one padded batch (HF shift: position t
// predicts labels[t + 1]); the lm_head runs only at labelled positions, fused with the loss: the
// [tokens, vocab] logits are formed loss_chunk_rows rows at a time (0: as many as fit in 8M
// elements) and never held whole; the gradient of the sum is formed in the same pass when autograd
// records it.
struct LossSum {
  torch::Tensor sum;  // scalar fp32, differentiable
  int64_t tokens = 0;
};
LossSum causal_lm_loss_sum(LlamaModel& model, const std::vector<const TrainingExample*>& batch, int64_t pad_token_id,
                           int64_t loss_chunk_rows = 0);

// Plain-text language-model examples for training from scratch: every text is encoded, joined with
// EOS and cut into blocks of block_size tokens (the last partial block kept when >= 2 tokens); labels
// equal the inputs.
std::vector<TrainingExample> make_lm_examples(const std::vector<std::vector<int64_t>>& encoded_texts,
                                              int64_t eos_token_id, int64_t block_size);

}  // namespace llm4dsr
