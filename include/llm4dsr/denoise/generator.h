// Generator: the replacement step of LLM4DSR (paper section 3.3). For an item flagged as noise, the
// fine-tuned model is shown the sequence and the noise item, as in training,
//
//   generation prompt = wrap(prompt(history)) + <response up to {noise}> + "<noise title>" + ...
//                       <response between {noise} and {suggestion}> + quote_open
//
// and decodes the suggested item's title after it (greedy or beam search, with the KV cache),
// batched across flagged items, stopping at the title's closing delimiter or EOS, at most
// max_new_tokens tokens. The free text is grounded to a catalogue item afterwards (Grounder).
//
// Catalogue-constrained decoding (`constrained`, neither paper has it): a trie over the catalogue
// titles, tokenised as they appear after the prompt's opening quote, restricts every step to
// tokens that continue some real title; the output is then always an existing item and needs no
// grounding. Items excluded for a request (those already in the sequence, the one being replaced)
// are pruned from the trie for that request; a title shared by several items resolves to the
// lowest id not excluded. When a title's first token can merge with the opening quote (a BPE '"('
// piece), the quote's token is decoded again as part of the title, so the model sees exactly the
// tokens of the training text.
//
// Without uncertainty (the paper's Table 7 ablation): generate_noise() decodes the model's own
// "Noise Items:" answer after the scoring prefix, for the Denoiser to match to an item of the
// sequence.
//
// Prompts longer than max_prompt_tokens lose their oldest items as in the scorer (the item being
// replaced is named in the response and stays whatever its position).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/text/chat_format.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr {

struct GeneratorOptions {
  // Defaults as in io::ModelCard; take them from the card a model was fine-tuned with.
  std::string template_name = "llm4dsr-paper";
  std::optional<PromptTemplate> prompt_template;  // when set, used instead of template_name
  std::string chat_format = "none";
  std::optional<ChatFormat> chat;  // when set, used instead of chat_format
  int64_t max_prompt_tokens = 512;  // BOS + prompt (without the response head); 0 = no limit
  bool add_bos = true;
  std::string decoding = "greedy";  // "greedy" | "beam"
  int64_t num_beams = 4;            // beam search only
  double length_penalty = 1.0;      // beam search only (HF convention)
  int64_t max_new_tokens = 32;
  bool constrained = false;  // catalogue trie
  int64_t micro_batch_size = 16;  // requests decoded together

  void validate() const;  // Error naming the field and value
};

// One item to replace: the sequence as the model sees it and the position of the flagged item.
struct GenerationRequest {
  std::vector<int64_t> items;
  int64_t position = 0;
  // Items the constrained decoder must not produce (e.g. the sequence's items), ids 1..N; an Error
  // when they are not, or when they leave no title to produce. Unconstrained decoding ignores
  // them (the Grounder excludes them instead).
  std::vector<int64_t> exclude;
};

struct Suggestion {
  std::string text;                // the generated title, closing delimiter and what follows removed
  std::vector<int64_t> token_ids;  // the generated ids, as decoded
  double log_prob = 0.0;           // sum of the generated tokens' log-probabilities
  bool finished = false;           // ended at the closing delimiter / EOS (else cut at max_new_tokens)
  int64_t item_id = 0;             // constrained decoding: the catalogue item produced; else 0
};

class Generator {
 public:
  // Copies the catalogue's titles (so the Generator does not keep the catalogue alive); builds the
  // trie when options.constrained. Throws Error for invalid options, unknown template / chat-format
  // names, or a constrained generator over a catalogue with no title.
  Generator(LlamaModel model, std::shared_ptr<const Tokenizer> tokenizer, const Catalog& catalog,
            GeneratorOptions options = {});
  ~Generator();
  Generator(Generator&&) noexcept;
  Generator& operator=(Generator&&) noexcept;

  // One suggestion per request, in order. Throws Error naming the request for an empty sequence, a
  // position outside it, an id outside the catalogue or an item without a title.
  std::vector<Suggestion> generate(const std::vector<GenerationRequest>& requests) const;

  // The model's own noise answer for each sequence: the text it decodes after the scoring prefix
  // (up to the closing delimiter), unconstrained. "Without uncertainty" ablation.
  std::vector<Suggestion> generate_noise(const std::vector<std::vector<int64_t>>& sequences) const;

  // The token ids generate() feeds the model for a request (BOS, item dropping applied).
  std::vector<int64_t> prompt_ids(const GenerationRequest& request) const;

  const GeneratorOptions& options() const;
  const PromptTemplate& prompt_template() const;
  const ChatFormat& chat_format() const;
  // The tokens that end an unconstrained title: EOS and every token whose text contains the
  // closing delimiter.
  const std::vector<int64_t>& stop_token_ids() const;
  // Number of catalogue titles in the trie (0 when not constrained).
  int64_t trie_titles() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llm4dsr
