// UncertaintyScorer: P_noise(s_k) of LLM4DSR (paper section 3.2, Eq. 2), the probability that the
// fine-tuned model names item s_k right after "Noise Items:" when shown the sequence.
//
// For each sequence the scoring prefix of the template (PromptTemplate::scoring_prefix: the chat-
// wrapped prompt listing the sanitised titles, then the response up to the noise title's opening
// quote) is tokenised once, with BOS as training had it. Each title is scored in context: the ids
// the model saw in training are those of encode(prefix + title), and a title's tokens are the tail
// of that joint encoding after its common part with encode(prefix). Usually that common part is the
// whole prefix; when the title's first token merges with the prefix's last bytes (a BPE ' "(' or a
// sentencepiece '"(' piece for a title starting with punctuation), the title is scored from the
// shorter common part, i.e. from the logits at an earlier position of the same forward pass.
//
// Modes:
//  - "first-token" (default; the paper's practical simplification): log P(first token | prefix).
//    One forward pass per sequence over the prefix, batched across sequences (left padding,
//    micro-batches of similar length), lm_head only at the positions read.
//  - "exact": Eq. 2, the sum over every token of the title of log P(T_kj | x, T_k,<j), optionally
//    followed by the closing delimiter (include_closing_delimiter). Without it (the paper's Eq. 2) a
//    title that is a prefix of another ("Halo" / "Halo 2") scores at least as high as the longer
//    one; with it, the scores are the probabilities of distinct complete titles. One prefix pass
//    (batched across sequences, keeping its KV cache) plus one teacher-forced pass over the rest of
//    all the micro-batch's distinct titles, packed one after another in their sequence's row: each
//    title's tokens attend to the cached prefix up to the title's context and to the title's own
//    earlier tokens, at the positions that follow that context (LlamaModel::forward_hidden_packed),
//    so the prefix's keys/values are read in place, never copied per title.
//
// Shared prompt head (share_prefix): every prompt starts with the same tokens (BOS, the chat
// header, the template's opening words up to the first title). Their keys and values are computed
// once per chunk and every micro-batch continues from them, so the forward runs over the rest of
// each prompt only (the head is about 15% of a ten-item prompt with the paper's template and
// ChatML). The positions and masks are those of the full prompt, so the scores are unchanged up to
// float rounding. Off for models with "dynamic" RoPE scaling (its frequencies depend on the
// forward's length).
//
// Memory: a micro-batch holds its KV cache, rows x (prompt + title tokens), and in exact mode the
// title pass's attention pattern, rows x title tokens x (prompt + title tokens) booleans; both
// bounded through micro_batch_size and max_prompt_tokens.
//
// first_token_context:
//  - "in-context" (default): the first token as tokenised after the prefix (what the model sees).
//  - "standalone": the first token of encode(title) alone, what the authors' released code read
//    (generate_noise_prob_data.py). With sentencepiece that is "▁The" where the model saw "The",
//    and with BPE "The" where it saw " The" after a space: the wrong token for most titles. Kept
//    to reproduce their numbers; first-token mode only.
//
// Ties and duplicates. The probability is that of naming a TITLE (or, in first-token mode, of the
// first token): a title appearing at two positions gets the same log_prob at both, and two titles
// sharing their first token get the same log_prob in first-token mode (exact mode separates them).
// `prob` normalises over the distinct scored events of the sequence (distinct first tokens in
// first-token mode, distinct token sequences in exact mode), each counted once: prob[k] =
// exp(log_prob[k]) / sum over distinct events, so the probs of the first occurrence of each event
// sum to 1, and every position reports its event's prob. `rank` is an ordinal ranking by log_prob
// (1 = most likely noise), ties broken by position (earlier first), so it is a permutation of 1..n.
//
// Long prompts: when BOS + prompt (without the response head, counted as InstructionBuilder does)
// exceeds max_prompt_tokens, the fewest oldest items that make it fit are left out of the prompt.
// They are still reported, with log_prob = -inf, prob = 0 and the last ranks (dropped_items says
// how many; they are positions 0 .. dropped_items-1).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/text/chat_format.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr {

enum class ScoringMode { kFirstToken, kExact };
std::string to_string(ScoringMode mode);
ScoringMode parse_scoring_mode(std::string_view name);  // "first-token" | "exact"

enum class FirstTokenContext { kInContext, kStandalone };
std::string to_string(FirstTokenContext context);
FirstTokenContext parse_first_token_context(std::string_view name);  // "in-context" | "standalone"

struct ScorerOptions {
  // Defaults as in io::ModelCard; take them from the card a model was fine-tuned with.
  std::string template_name = "llm4dsr-paper";
  std::optional<PromptTemplate> prompt_template;  // when set, used instead of template_name
  std::string chat_format = "none";
  std::optional<ChatFormat> chat;  // when set, used instead of chat_format
  int64_t max_prompt_tokens = 512;  // BOS + prompt; 0 = no limit
  ScoringMode mode = ScoringMode::kFirstToken;
  FirstTokenContext first_token_context = FirstTokenContext::kInContext;
  bool include_closing_delimiter = false;  // exact mode only
  int64_t micro_batch_size = 32;           // sequences per prefix forward (pads are not computed, so wider is faster)
  // Sequences tokenised, scored and returned per chunk by score_chunks (bounds host memory).
  int64_t chunk_size = 1024;
  bool add_bos = true;  // BOS first when the tokenizer has one and the chat format wants it
  // Run the prompt head shared by a chunk's sequences once and reuse its keys/values (see above;
  // ignored with "dynamic" RoPE).
  bool share_prefix = true;
};

struct NoiseScores {
  std::vector<int64_t> items;    // the sequence's items, as given
  std::vector<float> log_prob;   // log P_noise per position (-inf for dropped positions)
  std::vector<float> prob;       // normalised over the sequence's distinct events (see above)
  std::vector<int64_t> rank;     // 1 = most likely noise; a permutation of 1..n
  int64_t dropped_items = 0;     // oldest positions left out of the prompt
  int64_t size() const { return static_cast<int64_t>(items.size()); }
};

// What the scorer feeds the model for one sequence (exposed for tests and inspection).
struct ScoringPlan {
  std::vector<int64_t> prefix_ids;  // [BOS] + encode(scoring prefix)
  int64_t dropped_items = 0;
  // Per position: the length of the prefix part the title is conditioned on (== prefix_ids.size()
  // unless the title's first token merges with the prefix), and the ids scored after it.
  std::vector<int64_t> context_length;
  std::vector<std::vector<int64_t>> scored_ids;
  std::vector<int64_t> event;  // per position: index of its distinct event (first occurrence order)
};

class UncertaintyScorer {
 public:
  // Throws Error for unknown template or chat-format names, a non-positive micro_batch_size or
  // chunk_size, a negative max_prompt_tokens, "standalone" with "exact", or include_closing_delimiter
  // outside exact mode.
  UncertaintyScorer(LlamaModel model, std::shared_ptr<const Tokenizer> tokenizer, ScorerOptions options = {});

  const ScorerOptions& options() const { return options_; }
  const PromptTemplate& prompt_template() const { return template_; }
  const ChatFormat& chat_format() const { return chat_; }

  // Scores every sequence (results in input order). Throws Error naming the sequence index and the
  // item for an empty sequence, an id outside the catalogue or an item without a title.
  std::vector<NoiseScores> score(const SequenceSet& sequences, const Catalog& catalog) const;
  std::vector<NoiseScores> score(const std::vector<std::vector<int64_t>>& sequences, const Catalog& catalog) const;

  // Streams a big split: scores chunk_size sequences at a time and hands each chunk's results to
  // `sink` (first index of the chunk, its scores) before the next chunk is tokenised.
  void score_chunks(const std::vector<std::vector<int64_t>>& sequences, const Catalog& catalog,
                    const std::function<void(size_t first, std::vector<NoiseScores>&& scores)>& sink) const;

  // The token plan of one sequence (what score() feeds the model).
  ScoringPlan plan(const std::vector<int64_t>& items, const Catalog& catalog) const;

  // How many leading prompt tokens the plans share and share_prefix runs once: the longest common
  // prefix of their prefix_ids, short of every position's read (each title's context keeps at least
  // one token after it, whose logits are computed per sequence). 0 for no plans.
  static int64_t shared_prefix_length(const std::vector<ScoringPlan>& plans);

 private:
  std::vector<NoiseScores> score_plans(const std::vector<std::vector<int64_t>>& items,
                                       std::vector<ScoringPlan>& plans) const;
  std::vector<std::string> titles_of(const std::vector<int64_t>& items, const Catalog& catalog) const;

  LlamaModel model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ScorerOptions options_;
  PromptTemplate template_;
  ChatFormat chat_;
  bool add_bos_ = false;
};

}  // namespace llm4dsr
