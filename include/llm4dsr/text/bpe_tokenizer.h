// Byte-level BPE (GPT-2 style) behind the Tokenizer interface: the vocabularies of SmolLM2, GPT-2,
// Llama-3, Qwen2 and the like, read from a GGUF file (tokenizer.ggml.model == "gpt2") or from a
// HuggingFace tokenizer.json.
//
// Encoding follows HuggingFace `tokenizers` (the tokenizer these models were trained with):
//   1. added tokens (<|im_start|>, ...) are cut out of the text first, leftmost-longest, and never
//      split; those with `normalized == false` before the others, as HF does;
//   2. the rest goes through the pre-tokenizer, a sequence of regex splits (PCRE2 in UTF + UCP mode,
//      the patterns HF / llama.cpp use) and optional prefix spaces;
//   3. each piece is mapped byte by byte to GPT-2's printable code points and merged by BPE, lowest
//      merge rank first, leftmost on ties.
// Byte offsets are tracked through all three steps (encode_with_offsets, encode_in_context).
//
// Decoding maps each token back to its bytes; special added tokens (the vocabulary's control tokens)
// decode to nothing, like HF's decode(skip_special_tokens=True), and invalid UTF-8 in the result is
// replaced by U+FFFD per maximal invalid subsequence, as Rust's from_utf8_lossy (and so HF) does.
//
// Implementation types (PCRE2, caches) stay out of this header (pimpl).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr {

namespace io {
class GGUFFile;
}  // namespace io

// One step of the pre-tokenizer, applied to every piece the previous steps produced.
struct BpePreTokenizerStep {
  enum class Kind {
    Split,        // split each piece on `pattern` (HF pre_tokenizers.Split, llama.cpp regex_exprs)
    PrefixSpace,  // prepend " " to pieces that do not start with one (HF ByteLevel add_prefix_space)
  };
  // What happens to the matches (HF SplitDelimiterBehavior).
  enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

  Kind kind = Kind::Split;
  std::string pattern;  // PCRE2 syntax (UTF, UCP); Split only
  bool literal = false;  // `pattern` is a plain string, not a regex
  Behavior behavior = Behavior::Isolated;
  bool invert = false;  // split on what does not match

  static BpePreTokenizerStep split(std::string pattern, Behavior behavior = Behavior::Isolated, bool invert = false,
                                   bool literal = false);
  static BpePreTokenizerStep prefix_space();
};

// GPT-2's pre-tokenizer regex (HF ByteLevel(use_regex=True)).
extern const char* const kGpt2PreTokenizerPattern;

// The pre-tokenizer llama.cpp uses for the GGUF key tokenizer.ggml.pre = `name` ("" means
// "default"). Known: default; gpt2 / gpt-2 / phi-2 / mpt / olmo / jais / trillion; smollm / starcoder /
// refact / command-r / codeshell / exaone / minerva-7b (digits isolated, then GPT-2's regex); llama3 /
// llama-v3 / llama-bpe / falcon3 / dbrx / smaug-bpe; qwen2 / qwen2.5 / qwen-2.5 / deepseek-r1-qwen /
// stablelm2 / megrez; falcon. Throws Error listing them for any other name.
std::vector<BpePreTokenizerStep> bpe_pre_tokenizer_for(const std::string& name);

// A token matched in the raw text before pre-tokenization (HF added_tokens; GGUF control and
// user-defined tokens).
struct BpeAddedToken {
  TokenId id = -1;
  std::string content;  // the raw text it matches (not byte-level mapped)
  bool special = true;  // decode() drops it
  bool normalized = false;  // matched after the tokens with normalized == false (HF's order)
  bool lstrip = false;  // the match also takes the whitespace on its left
  bool rstrip = false;  // ... and on its right
};

// Everything a byte-level BPE tokenizer is made of, as plain data.
struct BpeVocabulary {
  std::vector<std::string> tokens;  // id -> piece, in GPT-2's byte-to-unicode form ("Ġthe")
  std::vector<std::pair<std::string, std::string>> merges;  // rank -> (left, right) pieces
  std::vector<BpeAddedToken> added_tokens;
  std::vector<BpePreTokenizerStep> pre_tokenizer;
  TokenId bos_id = -1;
  TokenId eos_id = -1;
  TokenId pad_id = -1;  // -1: pad_id() falls back to eos
  TokenId unk_id = -1;
  // What BPE emits for a byte that has no token (HF's model.unk_token); -1 drops such bytes, as HF
  // does without one and llama.cpp always does (SmolLM2's vocabulary lacks some control bytes).
  TokenId bpe_unk_id = -1;
  bool add_bos = false;  // encode(text, add_bos=true) prepends bos only when this is set
  bool add_eos = false;
  bool ignore_merges = false;  // a piece that is itself a token is not merged (Llama-3)
  std::string source = "<memory>";  // named in error messages
};

// A tokenization with the byte span [first, second) of the input each token covers. Added tokens
// cover their match (with the whitespace lstrip/rstrip took); a synthetic prefix space covers nothing.
struct BpeEncoding {
  std::vector<TokenId> ids;
  std::vector<std::pair<size_t, size_t>> offsets;
};

class BpeTokenizer : public Tokenizer {
 public:
  // Validates the vocabulary (merges and special ids refer to tokens, patterns compile); throws Error
  // naming vocabulary.source and the offending entry.
  static std::unique_ptr<BpeTokenizer> from_vocabulary(BpeVocabulary vocabulary);
  // A HuggingFace tokenizer.json: model (type BPE; vocab; merges as "a b" strings or ["a", "b"]
  // pairs; ignore_merges; unk_token), added_tokens, normalizer (null only), pre_tokenizer (Split,
  // ByteLevel, Digits and Sequences of them; null). Special ids and add_bos/add_eos come from
  // tokenizer_config.json beside it when present (bos_token, eos_token, pad_token, unk_token,
  // add_bos_token, add_eos_token), else from the post_processor's TemplateProcessing. Malformed or
  // unsupported input throws Error naming the file and the JSON key.
  static std::unique_ptr<BpeTokenizer> from_tokenizer_json(const std::string& path);
  // A GGUF vocabulary with tokenizer.ggml.model == "gpt2" (tokens, merges, token_type, pre, special
  // ids, add_bos_token / add_eos_token). A SentencePiece vocabulary ("llama") throws Error saying to
  // use SentencePieceTokenizer. Control (3) and user-defined (4) tokens become added tokens; control
  // ones decode to nothing.
  static std::unique_ptr<BpeTokenizer> from_gguf(const io::GGUFFile& file);
  static std::unique_ptr<BpeTokenizer> from_gguf(const std::string& path);

  // Writes the vocabulary as a HuggingFace tokenizer.json at `path` and tokenizer_config.json beside
  // it (special tokens, add_bos_token / add_eos_token), both atomically, so that HF `tokenizers` /
  // transformers and from_tokenizer_json reproduce our ids. Throws Error for a pre-tokenizer HF cannot
  // express (a prefix space anywhere but first).
  void save_tokenizer_json(const std::string& path) const;

  ~BpeTokenizer() override;

  // add_bos / add_eos ask for the tokens the vocabulary adds (add_bos_token() / add_eos_token()): a
  // vocabulary that adds none (SmolLM2) gives the same ids either way, as HF's add_special_tokens.
  std::vector<TokenId> encode(std::string_view text, bool add_bos = false, bool add_eos = false) const override;
  BpeEncoding encode_with_offsets(std::string_view text) const;
  std::string decode(const std::vector<TokenId>& ids) const override;
  std::vector<TokenId> encode_in_context(std::string_view prefix, std::string_view text) const override;
  int64_t vocab_size() const override;
  TokenId bos_id() const override;
  TokenId eos_id() const override;
  TokenId pad_id() const override;
  TokenId unk_id() const override;
  std::string id_to_piece(TokenId id) const override;
  TokenId piece_to_id(std::string_view piece) const override;
  std::string kind() const override { return "bpe"; }

  bool add_bos_token() const;
  bool add_eos_token() const;
  // True for added tokens marked special (they decode to nothing); Error when out of range.
  bool is_special(TokenId id) const;
  const BpeVocabulary& vocabulary() const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llm4dsr
