// Tokenizer interface and the sentencepiece implementation (a byte-level BPE implementation comes
// behind the same interface). Implementation types stay out of this header (pimpl).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llm4dsr {

using TokenId = int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Throws Error when add_bos/add_eos is asked of a vocabulary without that piece.
  virtual std::vector<TokenId> encode(std::string_view text, bool add_bos = false, bool add_eos = false) const = 0;
  // Control ids (<s>, </s>, <pad>) decode to nothing; an id outside 0..vocab_size()-1 throws Error
  // naming it and its position.
  virtual std::string decode(const std::vector<TokenId>& ids) const = 0;

  // The ids of `text` as it is tokenised right after `prefix`, i.e. the tail of
  // encode(prefix + text) starting at the token that covers the first byte of `text`: the first
  // token whose byte span ends after prefix.size(), preceded by any zero-width tokens at
  // prefix.size() (sentencepiece gives the dummy-prefix "▁" and all but the last byte-fallback
  // piece of a character an empty span at the character's start; those belong to the text). This
  // is what a model actually sees and scores: with Llama's vocabulary "Items: '" + "The" gives
  // "The" (1576) where encode("The") gives "▁The" (450). `prefix` is encoded without BOS.
  //
  // When a token straddles the boundary (Llama: "foo" + "bar" is "▁fo" "obar"), the returned ids
  // start with it, so they also cover the prefix's last bytes, and encode(prefix) followed by them is
  // not encode(prefix + text); callers that need the exact joint encoding split encode(prefix + text)
  // themselves. An empty `prefix` gives encode(text); an empty `text` gives no ids.
  virtual std::vector<TokenId> encode_in_context(std::string_view prefix, std::string_view text) const = 0;

  virtual int64_t vocab_size() const = 0;
  virtual TokenId bos_id() const = 0;   // -1 when the vocabulary has none
  virtual TokenId eos_id() const = 0;
  virtual TokenId pad_id() const = 0;   // falls back to eos when the model defines no pad
  virtual TokenId unk_id() const = 0;
  virtual std::string id_to_piece(TokenId id) const = 0;  // Error naming the id when out of range
  virtual TokenId piece_to_id(std::string_view piece) const = 0;  // unk_id() when absent
  virtual std::string kind() const = 0;  // "sentencepiece", "bpe"

  // Batch forms; parallel over texts (libtorch's intra-op threads), results in input order. When
  // some items fail, the Error of the lowest index is rethrown, prefixed with that index.
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string>& texts, bool add_bos = false,
                                                 bool add_eos = false) const;
  std::vector<std::string> decode_batch(const std::vector<std::vector<TokenId>>& ids) const;
};

struct SentencePieceTrainOptions {
  int64_t vocab_size = 2000;
  std::string model_type = "bpe";       // "bpe" or "unigram"
  double character_coverage = 1.0;
  uint64_t seed = 0;                    // training is single-threaded and unshuffled: deterministic
  bool byte_fallback = true;            // unknown characters become byte pieces, never <unk>
  // false: vocab_size is an upper bound (small corpora give fewer pieces instead of an Error).
  bool hard_vocab_limit = true;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Loads a sentencepiece .model file; throws Error naming the file when it is missing or invalid.
  // Encoding and decoding are thread-safe.
  static std::unique_ptr<SentencePieceTokenizer> from_file(const std::string& path);
  // From the bytes of a serialized ModelProto (e.g. read from a checkpoint).
  static std::unique_ptr<SentencePieceTokenizer> from_serialized(const std::string& model_proto);
  // Trains a new model on `texts` (e.g. catalogue titles and training sequences), in memory.
  // Deterministic for the same texts and options (one thread, no shuffling, every text used).
  // Ids: 0 <unk>, 1 <s>, 2 </s>, 3 <pad>. Normalisation is the identity (as in Llama's model), so
  // decode(encode(x)) == x. A vocab_size the texts cannot fill, or too small for their characters,
  // throws Error with the bound the trainer reported. Trainings are serialised process-wide
  // (sentencepiece's trainer has global state).
  static std::unique_ptr<SentencePieceTokenizer> train(const std::vector<std::string>& texts,
                                                       const SentencePieceTrainOptions& options = {});

  ~SentencePieceTokenizer() override;

  std::vector<TokenId> encode(std::string_view text, bool add_bos = false, bool add_eos = false) const override;
  std::string decode(const std::vector<TokenId>& ids) const override;
  std::vector<TokenId> encode_in_context(std::string_view prefix, std::string_view text) const override;
  int64_t vocab_size() const override;
  TokenId bos_id() const override;
  TokenId eos_id() const override;
  TokenId pad_id() const override;
  TokenId unk_id() const override;
  std::string id_to_piece(TokenId id) const override;
  TokenId piece_to_id(std::string_view piece) const override;
  std::string kind() const override { return "sentencepiece"; }

  // The serialized ModelProto; save() writes it atomically (temporary file beside `path`, then
  // rename) as a .model file that from_file and the sentencepiece package read.
  std::string serialized() const;
  void save(const std::string& path) const;

 private:
  struct Impl;
  explicit SentencePieceTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llm4dsr
