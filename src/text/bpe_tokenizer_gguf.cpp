// BpeTokenizer::from_gguf: the tokenizer.ggml.* keys of a GGUF file to a BpeVocabulary, read as
// llama.cpp reads them (src/llama-vocab.cpp).
#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf.h"
#include "llm4dsr/text/bpe_tokenizer.h"

namespace llm4dsr {

namespace {

// llama.cpp's token types (tokenizer.ggml.token_type).
constexpr int64_t kTokenUnknown = 2;
constexpr int64_t kTokenControl = 3;
constexpr int64_t kTokenUserDefined = 4;

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_gguf(const std::string& path) {
  return from_gguf(io::GGUFFile(path));
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_gguf(const io::GGUFFile& file) {
  const std::string& path = file.path();
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    LLM4DSR_THROW(path << ": tokenizer.ggml.model is \"llama\", a SentencePiece vocabulary; BpeTokenizer reads "
                          "byte-level BPE vocabularies (\"gpt2\") only: use a SentencePieceTokenizer for this model");
  }
  LLM4DSR_CHECK(model == "gpt2", path << ": tokenizer.ggml.model is \"" << model
                                      << "\"; BpeTokenizer reads byte-level BPE vocabularies (\"gpt2\") only");

  BpeVocabulary vocab;
  vocab.source = path;
  vocab.tokens = file.get_string_array("tokenizer.ggml.tokens");
  const auto n = static_cast<int64_t>(vocab.tokens.size());
  LLM4DSR_CHECK(n > 0, path << ": tokenizer.ggml.tokens is empty");

  const std::vector<std::string> merges = file.get_string_array("tokenizer.ggml.merges");
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    // Split at the first space after the first byte, as llama.cpp does.
    const std::string& line = merges[i];
    const size_t space = line.size() > 1 ? line.find(' ', 1) : std::string::npos;
    LLM4DSR_CHECK(space != std::string::npos && space + 1 < line.size(),
                  path << ": tokenizer.ggml.merges[" << i << "] = \"" << line << "\" is not \"left right\"");
    vocab.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }

  const std::string pre = file.get_string("tokenizer.ggml.pre", "default");
  try {
    vocab.pre_tokenizer = bpe_pre_tokenizer_for(pre);
  } catch (const Error& e) {
    LLM4DSR_THROW(path << ": " << e.what());
  }
  // llama.cpp's per-name settings that change ids.
  for (const char* name : {"llama3", "llama-v3", "llama-bpe", "falcon3"}) {
    if (pre == name) {
      vocab.ignore_merges = true;
      vocab.add_bos = true;
    }
  }

  const auto special_id = [&](const char* key) -> TokenId {
    const int64_t id = file.get_int(key, -1);
    LLM4DSR_CHECK(id >= -1 && id < n, path << ": " << key << " = " << id << " is outside the vocabulary 0.." << n - 1);
    return static_cast<TokenId>(id);
  };
  vocab.bos_id = special_id("tokenizer.ggml.bos_token_id");
  vocab.eos_id = special_id("tokenizer.ggml.eos_token_id");
  vocab.unk_id = special_id("tokenizer.ggml.unknown_token_id");
  vocab.pad_id = special_id("tokenizer.ggml.padding_token_id");
  vocab.add_bos = file.get_bool("tokenizer.ggml.add_bos_token", vocab.add_bos);
  vocab.add_eos = file.get_bool("tokenizer.ggml.add_eos_token", vocab.add_eos);
  LLM4DSR_CHECK(!vocab.add_bos || vocab.bos_id >= 0,
                path << ": tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id");
  LLM4DSR_CHECK(!vocab.add_eos || vocab.eos_id >= 0,
                path << ": tokenizer.ggml.add_eos_token is true but there is no tokenizer.ggml.eos_token_id");

  if (file.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = file.get_int_array("tokenizer.ggml.token_type");
    LLM4DSR_CHECK(static_cast<int64_t>(types.size()) == n,
                  path << ": tokenizer.ggml.token_type has " << types.size() << " entries for " << n << " tokens");
    for (int64_t id = 0; id < n; ++id) {
      const int64_t type = types[id];
      if (type != kTokenControl && type != kTokenUserDefined && type != kTokenUnknown) continue;
      if (vocab.tokens[id].empty()) continue;
      BpeAddedToken added;
      added.id = static_cast<TokenId>(id);
      added.content = vocab.tokens[id];
      added.special = type != kTokenUserDefined;
      added.normalized = false;
      vocab.added_tokens.push_back(std::move(added));
    }
  }
  return from_vocabulary(std::move(vocab));
}

}  // namespace llm4dsr
