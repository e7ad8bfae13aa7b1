// Batched greedy and beam-search decoding with a KV cache: the building blocks under the Generator
// (denoise/generator.h), exposed on their own for tests, benchmarks and simple completion.
//
// Prompts of different lengths are left-padded into one batch, so every row's next token sits in the
// last column: one prefill forward over the prompts, then one forward of one token per row and step.
// The cache is allocated once for prompt + max_new_tokens positions and the step buffers are reused,
// so a step allocates only what the libtorch ops themselves need.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/types.h>

#include "llm4dsr/model/kv_cache.h"
#include "llm4dsr/model/llama_model.h"

namespace llm4dsr {

// A left-padded batch of token-id rows.
struct PaddedBatch {
  torch::Tensor input_ids;       // int64 [B, T]; pads hold pad_token_id
  torch::Tensor attention_mask;  // int64 [B, T]; 1 = token, 0 = pad
  std::vector<int64_t> lengths;  // tokens per row (T - pads)
};

// Left-pads `rows` to the longest one. Throws (naming the row) when a row is empty or the batch is.
PaddedBatch left_pad(const std::vector<std::vector<int64_t>>& rows, int64_t pad_token_id,
                     torch::Device device = torch::kCPU);

// Called on every step's next-token logits before the choice, to restrict or reshape it (catalogue
// tries, banned tokens). logits: [rows, vocab] in the model's dtype, modified in place (set a token to
// -inf to forbid it); generated: int64 [rows, step] of the tokens chosen so far on each row (pads
// after a stop); step: 0 for the token after the prompt. Rows are the prompts for greedy decoding and
// prompt * num_beams + beam for beam search. Log-probabilities are taken after the processor, so a
// processor that forbids tokens renormalises the distribution over the allowed ones.
using LogitsProcessor = std::function<void(torch::Tensor& logits, const torch::Tensor& generated, int64_t step)>;

struct GreedyOptions {
  // The id written after a row stops and used for left padding; -1: the model's pad_token_id, else 0.
  // Padded positions are masked, so the value never influences the result.
  int64_t pad_token_id = -1;
  LogitsProcessor logits_processor;
};

struct GenerationOutput {
  // The new tokens of each row, ending with its stop token when it stopped (as HF's generate returns
  // them, without the padding that follows).
  std::vector<std::vector<int64_t>> sequences;
  std::vector<bool> stopped;  // whether the row produced one of stop_token_ids
  // Sum of the log-probabilities (fp32 log-softmax of the processed logits) of each row's tokens.
  std::vector<double> log_probs;
  // Beam search: log_probs / length^length_penalty, the quantity the beams are ranked by; greedy:
  // equal to log_probs.
  std::vector<double> scores;
  int64_t steps = 0;  // forwards run, the prefill included
};

// Greedy (argmax) decoding of up to max_new_tokens tokens after each prompt. A row that produces one
// of stop_token_ids stops there; the batch stops when every row has stopped. Results equal decoding
// each prompt alone without a cache, up to rounding of near-ties. Runs in inference mode and in eval
// mode (no LoRA dropout), restoring the model's train/eval mode afterwards.
GenerationOutput generate_greedy(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                 int64_t max_new_tokens, const std::vector<int64_t>& stop_token_ids,
                                 const GreedyOptions& options = {});

struct BeamOptions {
  int64_t num_beams = 4;
  // Hypotheses are ranked by sum of log-probabilities / length^length_penalty (HF's convention; the
  // length counts the stop token). > 0 favours longer outputs, 0 ranks by the plain sum.
  double length_penalty = 1.0;
  int64_t pad_token_id = -1;  // as GreedyOptions
  LogitsProcessor logits_processor;

  void validate() const;  // Error naming the field
};

// Beam search with num_beams beams per prompt. One prefill over the B prompts; its cache fans out to
// B x num_beams rows (KVCache::assign_rows), and every step runs one token per beam. Each step takes,
// per prompt, the 2 x num_beams best (beam, token) candidates: one ending in a stop token becomes a
// finished hypothesis when it ranks among the first num_beams, the others continue as the new beams.
// A prompt is done when it holds num_beams finished hypotheses and no running beam can still beat
// the worst of them (an exact bound: log-probabilities only fall, and the length factor is bounded
// by max_new_tokens), so with enough beams the search is exhaustive. At max_new_tokens the running
// beams become unfinished hypotheses (stopped = false). Returns the best hypothesis per prompt.
// Runs in inference and eval mode like generate_greedy.
GenerationOutput generate_beam(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                               int64_t max_new_tokens, const std::vector<int64_t>& stop_token_ids,
                               const BeamOptions& options = {});

}  // namespace llm4dsr
