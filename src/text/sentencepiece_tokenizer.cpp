// SentencePieceTokenizer: a thin, checked wrapper around sentencepiece::SentencePieceProcessor
// (Encode/Decode are const and thread-safe there, so one processor serves every thread).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <regex>
#include <unordered_map>

#include <unistd.h>

#include "internal/text_io.h"
#include "llm4dsr/error.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr {

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

// Loads a serialized ModelProto; `origin` names where it came from for the error message.
void load_processor(sentencepiece::SentencePieceProcessor& processor, const std::string& model_proto,
                    const std::string& origin) {
  LLM4DSR_CHECK(!model_proto.empty(), origin << " is empty: expected a serialized sentencepiece ModelProto");
  const auto status = processor.LoadFromSerializedProto(model_proto);
  LLM4DSR_CHECK(status.ok(), origin << " is not a valid sentencepiece model (" << model_proto.size()
                                    << " bytes): " << status.ToString());
  // A ModelProto parses from many byte strings (every field is optional); one without pieces is
  // not a model anyone meant to load.
  LLM4DSR_CHECK(processor.GetPieceSize() > 0, origin << " is not a valid sentencepiece model: it has no pieces");
}

// Feeds the caller's texts to the trainer without copying them into a file.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& texts) : texts_(texts) {}
  bool done() const override { return index_ >= texts_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return texts_[index_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& texts_;
  size_t index_ = 0;
};

// The trainer reports impossible vocabulary sizes only as a free-text status; turn the two we know
// into messages that say what to do, and pass anything else through.
[[noreturn]] void throw_train_error(const sentencepiece::util::Status& status, const SentencePieceTrainOptions& options,
                                    size_t num_texts) {
  const std::string message = status.ToString();
  std::smatch match;
  if (std::regex_search(message, match, std::regex(R"(Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+))"))) {
    LLM4DSR_THROW("SentencePieceTokenizer::train: vocab_size " << options.vocab_size << " is too large for these "
                  << num_texts << " texts: the " << options.model_type << " trainer can produce at most "
                  << match[1] << " pieces; set vocab_size <= " << match[1]);
  }
  if (std::regex_search(message, match, std::regex(R"(Vocabulary size is smaller than required_chars\. (\d+) vs (\d+))"))) {
    LLM4DSR_THROW("SentencePieceTokenizer::train: vocab_size " << options.vocab_size
                  << " is too small: the special pieces, " << (options.byte_fallback ? "256 byte pieces " : "")
                  << "and the characters of these texts need at least " << match[2]
                  << "; raise vocab_size or lower character_coverage");
  }
  LLM4DSR_THROW("SentencePieceTokenizer::train failed (vocab_size " << options.vocab_size << ", model_type '"
                << options.model_type << "'): " << message);
}

std::string format_double(double value) {
  std::ostringstream os;
  os.precision(17);
  os << value;
  return os.str();
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_file(const std::string& path) {
  LLM4DSR_CHECK(std::filesystem::exists(path), "sentencepiece model file '" << path << "' does not exist");
  LLM4DSR_CHECK(!std::filesystem::is_directory(path),
                "sentencepiece model file '" << path << "' is a folder; expected a tokenizer.model file");
  const std::string bytes = internal::read_file(path, "sentencepiece model file");
  auto impl = std::make_unique<Impl>();
  load_processor(impl->processor, bytes, "sentencepiece model file '" + path + "'");
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl)));
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized(const std::string& model_proto) {
  auto impl = std::make_unique<Impl>();
  load_processor(impl->processor, model_proto, "the serialized sentencepiece model");
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl)));
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::train(const std::vector<std::string>& texts,
                                                                      const SentencePieceTrainOptions& options) {
  LLM4DSR_CHECK(!texts.empty(), "SentencePieceTokenizer::train needs at least one text, got none");
  LLM4DSR_CHECK(options.vocab_size > 4 && options.vocab_size <= std::numeric_limits<int32_t>::max(),
                "SentencePieceTokenizer::train: vocab_size must be > 4 (the four special pieces come first), got "
                    << options.vocab_size);
  LLM4DSR_CHECK(options.model_type == "bpe" || options.model_type == "unigram",
                "SentencePieceTokenizer::train: model_type must be 'bpe' or 'unigram', got '" << options.model_type << "'");
  LLM4DSR_CHECK(options.character_coverage > 0.0 && options.character_coverage <= 1.0,
                "SentencePieceTokenizer::train: character_coverage must be in (0, 1], got " << options.character_coverage);

  // Lines longer than max_sentence_length are dropped by the trainer with only a log line; raise
  // the limit so that every text given is learned from.
  size_t longest = 0;
  for (const auto& text : texts) longest = std::max(longest, text.size());
  const size_t max_sentence_length = std::clamp<size_t>(longest + 1, 4192, 1073741824);

  const std::unordered_map<std::string, std::string> args = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"character_coverage", format_double(options.character_coverage)},
      {"byte_fallback", options.byte_fallback ? "true" : "false"},
      {"hard_vocab_limit", options.hard_vocab_limit ? "true" : "false"},
      // Determinism: one thread, the texts in the order given, all of them.
      {"num_threads", "1"},
      {"shuffle_input_sentence", "false"},
      {"input_sentence_size", "0"},
      {"max_sentence_length", std::to_string(max_sentence_length)},
      // Llama's layout of the special pieces, so that a model trained here and a Llama vocabulary
      // agree on what 0..2 mean.
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "3"},
      // Identity normalisation (as in Llama's tokenizer.model) instead of sentencepiece's default
      // NFKC + whitespace squeezing: decode(encode(x)) == x for every x, so decoded titles can be
      // matched against the catalogue byte for byte.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      // Training logs several hundred lines to stderr otherwise.
      {"minloglevel", "2"},
  };

  // The trainer keeps global state (log level, random generator); one training at a time.
  static std::mutex train_mutex;
  std::lock_guard<std::mutex> lock(train_mutex);
  // Seeds the generator the trainer draws from (unigram seeding); 0xFFFFFFFF is reserved by
  // sentencepiece for "seed from std::random_device", so it is folded away.
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(options.seed % 0xFFFFFFFFull));

  VectorSentenceIterator iterator(texts);
  std::string model_proto;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &model_proto);
  if (!status.ok()) throw_train_error(status, options, texts.size());
  auto impl = std::make_unique<Impl>();
  load_processor(impl->processor, model_proto, "the model sentencepiece trained");
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(impl)));
}

std::vector<TokenId> SentencePieceTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int> pieces;
  const auto status = impl_->processor.Encode(text, &pieces);
  LLM4DSR_CHECK(status.ok(), "sentencepiece could not encode a text of " << text.size() << " bytes: " << status.ToString());
  std::vector<TokenId> ids;
  ids.reserve(pieces.size() + 2);
  if (add_bos) {
    LLM4DSR_CHECK(bos_id() >= 0, "add_bos requested but this sentencepiece model has no <s> piece");
    ids.push_back(bos_id());
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_eos) {
    LLM4DSR_CHECK(eos_id() >= 0, "add_eos requested but this sentencepiece model has no </s> piece");
    ids.push_back(eos_id());
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<TokenId>& ids) const {
  const int64_t size = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    LLM4DSR_CHECK(ids[i] >= 0 && ids[i] < size, "cannot decode token id " << ids[i] << " at position " << i
                                                    << ": valid ids are 0.." << size - 1);
  }
  std::string text;
  const auto status = impl_->processor.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  LLM4DSR_CHECK(status.ok(), "sentencepiece could not decode " << ids.size() << " ids: " << status.ToString());
  return text;
}

std::vector<TokenId> SentencePieceTokenizer::encode_in_context(std::string_view prefix, std::string_view text) const {
  std::string joined;
  joined.reserve(prefix.size() + text.size());
  joined.append(prefix).append(text);
  sentencepiece::ImmutableSentencePieceText spt;
  const auto status = impl_->processor.Encode(joined, spt.mutable_proto());
  LLM4DSR_CHECK(status.ok(), "sentencepiece could not encode a text of " << joined.size() << " bytes: " << status.ToString());
  // begin()/end() are byte offsets into `joined` (the input, not the normalised text). The first
  // piece whose end lies past the prefix is the one covering the text's first byte; it may also
  // cover the prefix's last bytes (see the header). Pieces with an empty span sit at the start of
  // the character they belong to: the dummy-prefix "▁" at 0, and all but the last byte-fallback
  // piece of a character. Those at prefix.size() are the text's, so the start moves back over them.
  const size_t n = spt.pieces_size();
  const auto piece = [&spt](size_t i) { return spt.pieces(static_cast<int>(i)); };
  size_t first = 0;
  while (first < n && piece(first).end() <= prefix.size()) ++first;
  while (first > 0 && piece(first - 1).begin() == piece(first - 1).end() && piece(first - 1).begin() >= prefix.size()) {
    --first;
  }
  std::vector<TokenId> ids;
  ids.reserve(n - first);
  for (size_t i = first; i < n; ++i) ids.push_back(static_cast<TokenId>(piece(i).id()));
  return ids;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }
TokenId SentencePieceTokenizer::bos_id() const { return impl_->processor.bos_id(); }
TokenId SentencePieceTokenizer::eos_id() const { return impl_->processor.eos_id(); }
TokenId SentencePieceTokenizer::pad_id() const {
  const int pad = impl_->processor.pad_id();
  return pad >= 0 ? pad : eos_id();
}
TokenId SentencePieceTokenizer::unk_id() const { return impl_->processor.unk_id(); }

std::string SentencePieceTokenizer::id_to_piece(TokenId id) const {
  LLM4DSR_CHECK(id >= 0 && id < vocab_size(),
                "token id " << id << " is out of range: this sentencepiece model has ids 0.." << vocab_size() - 1);
  return impl_->processor.IdToPiece(id);
}

TokenId SentencePieceTokenizer::piece_to_id(std::string_view piece) const { return impl_->processor.PieceToId(piece); }

std::string SentencePieceTokenizer::serialized() const { return impl_->processor.serialized_model_proto(); }

void SentencePieceTokenizer::save(const std::string& path) const {
  const std::string bytes = serialized();
  // Written beside the target and renamed over it, so a reader never sees half a model and a
  // crash leaves the old file intact.
  static std::atomic<uint64_t> counter{0};
  const std::string temp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    LLM4DSR_CHECK(out.good(), "cannot write sentencepiece model '" << path << "': cannot create '" << temp << "'");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out.good()) {
      out.close();
      std::remove(temp.c_str());
      LLM4DSR_THROW("cannot write sentencepiece model '" << path << "': writing " << bytes.size() << " bytes to '"
                                                          << temp << "' failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    std::remove(temp.c_str());
    LLM4DSR_THROW("cannot write sentencepiece model '" << path << "': renaming '" << temp << "' failed: " << ec.message());
  }
}

}  // namespace llm4dsr
