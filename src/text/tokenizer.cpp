#include "llm4dsr/text/tokenizer.h"

#include "internal/parallel.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// Titles and prompts take microseconds each; smaller chunks would cost more in scheduling than
// they save.
constexpr int64_t kGrainSize = 32;

}  // namespace

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string>& texts, bool add_bos,
                                                          bool add_eos) const {
  std::vector<std::vector<TokenId>> out(texts.size());
  internal::parallel_over(texts.size(), kGrainSize, [&](size_t i) {
    try {
      out[i] = encode(texts[i], add_bos, add_eos);
    } catch (const Error& e) {
      LLM4DSR_THROW("encode_batch: text " << i << ": " << e.what());
    }
  });
  return out;
}

std::vector<std::string> Tokenizer::decode_batch(const std::vector<std::vector<TokenId>>& ids) const {
  std::vector<std::string> out(ids.size());
  internal::parallel_over(ids.size(), kGrainSize, [&](size_t i) {
    try {
      out[i] = decode(ids[i]);
    } catch (const Error& e) {
      LLM4DSR_THROW("decode_batch: sequence " << i << ": " << e.what());
    }
  });
  return out;
}

}  // namespace llm4dsr
