// InstructionBuilder: the self-supervised instruction data of LLM4DSR (paper section 3.1).
//
// From each training window one position is chosen uniformly and its item is replaced by a
// uniformly drawn different item; the prompt x lists the corrupted window and the response z names
// the inserted (noise) item and the original one. tokenize() turns the pairs into token ids and
// labels for the loss of Eq. 1 (response tokens only) or, as the authors' code did, every token.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/text/chat_format.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"
#include "llm4dsr/train/ignore_index.h"

namespace llm4dsr {

// Which tokens the training loss covers.
enum class LossOn {
  kResponse,  // the response z and EOS: paper Eq. 1
  kAll,       // every token, prompt included: what the authors' released code trained on
};
std::string to_string(LossOn loss_on);
LossOn parse_loss_on(std::string_view name);  // "response" | "all"

struct InstructionOptions {
  std::string template_name = "llm4dsr-paper";
  std::optional<PromptTemplate> prompt_template;  // when set, used instead of template_name
  std::string chat_format = "none";               // ChatFormat::get name
  std::optional<ChatFormat> chat;                 // when set, used instead of chat_format
  // The most tokens a prompt may take (BOS included; the response is not counted and never cut).
  // Longer prompts lose their oldest whole items. 0 = no limit. The authors cut the whole text at
  // 512 tokens (which could cut the response).
  int64_t max_prompt_tokens = 512;
  LossOn loss_on = LossOn::kResponse;
  double clean_fraction = 0.0;  // share of examples left uncorrupted with the clean response ("None")
  int64_t max_pairs = 0;        // 0 = one pair per window; the paper samples 5,000
  uint64_t seed = 42;
  bool add_bos = true;  // BOS first when the tokenizer has one and the chat format wants it
  bool add_eos = true;  // EOS after the response (in the loss) when the tokenizer has one
};

struct InstructionPair {
  int64_t window_index = 0;      // index into the windows given to make_pairs
  int64_t position = -1;         // the replaced position in the window; -1 for a clean example
  int64_t noise_item = 0;        // the inserted item; 0 for a clean example
  int64_t original_item = 0;     // the item it replaced; 0 for a clean example
  std::vector<int64_t> items;    // the window as shown to the model (items[position] == noise_item)
  std::vector<std::string> titles;  // catalogue titles of `items`, as in the catalogue (unsanitised)
  std::string noise_title;       // "" for a clean example
  std::string original_title;    // "" for a clean example
  std::string prompt;            // x, chat-wrapped, with every item (tokenize may drop the oldest)
  std::string response;          // z

  bool is_clean() const { return position < 0; }
};

struct TokenizedInstruction {
  std::vector<int64_t> input_ids;  // [BOS] prompt response [EOS]
  std::vector<int64_t> labels;     // input_ids where in the loss, kIgnoreIndex elsewhere (not shifted)
  std::vector<int64_t> loss_mask;  // 1 where labels != kIgnoreIndex
  int64_t prompt_length = 0;       // tokens of [BOS] prompt: input_ids[0, prompt_length)
  int64_t dropped_items = 0;       // oldest items dropped to fit max_prompt_tokens
  std::string prompt;              // the prompt text tokenised (after dropping)
};

using TokenBatch = std::vector<TokenizedInstruction>;

class InstructionBuilder {
 public:
  // Resolves the template and chat format; throws Error for unknown names, an invalid template,
  // clean_fraction outside [0, 1], or negative max_pairs / max_prompt_tokens.
  explicit InstructionBuilder(InstructionOptions options = {});

  const InstructionOptions& options() const { return options_; }
  const PromptTemplate& prompt_template() const { return template_; }
  const ChatFormat& chat_format() const { return chat_; }

  // One pair per window (or max_pairs windows drawn uniformly without replacement, returned in
  // window order). Each window is used whole, target included, as in the authors' code, which
  // corrupts and renders the whole window. The position is uniform over the window; the noise item
  // is uniform over the catalogue's titled items other than the original (the authors' code could
  // draw the original itself, a pair with nothing to find); it may equal another item of the window.
  // The "original" is the window's item as observed, so with artificial noise in the data it may
  // itself be noise. round(clean_fraction * pairs) of the pairs, drawn uniformly, stay clean.
  // Same seed, same pairs; a window's pair depends only on the seed and its index.
  // Throws Error for an empty window set, an empty window, an item id outside the catalogue, an
  // item without a title, or fewer than two titled items.
  std::vector<InstructionPair> make_pairs(const SequenceSet& train_windows, const Catalog& catalog) const;

  // Token ids and labels, one per pair, in parallel. Prompt and response are rendered from the
  // pair's titles with this builder's template and chat format. The prompt is encoded with BOS (see
  // InstructionOptions::add_bos); the response is encoded in context after it
  // (Tokenizer::encode_in_context) and followed by EOS. When the prompt exceeds max_prompt_tokens,
  // the fewest oldest whole items that make it fit are dropped and the prompt re-rendered; the
  // replaced item is never dropped (it is what the response names). Throws Error when even the
  // shortest history does not fit, or when the prompt's last token would merge with the response's
  // first (a prompt ending in a space, e.g.), since the pair would then not split into x and z.
  TokenBatch tokenize(const std::vector<InstructionPair>& pairs, const Tokenizer& tokenizer) const;
  TokenizedInstruction tokenize_one(const InstructionPair& pair, const Tokenizer& tokenizer) const;

  // The prompt of `pair` with its `dropped` oldest droppable items left out.
  std::string render_prompt(const InstructionPair& pair, int64_t dropped) const;

 private:
  InstructionOptions options_;
  PromptTemplate template_;
  ChatFormat chat_;
};

}  // namespace llm4dsr
