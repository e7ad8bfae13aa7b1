#include "llm4dsr/text/tokenizer.h"

#include <ATen/Parallel.h>

#include <exception>
#include <limits>
#include <mutex>

#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// Titles and prompts take microseconds each; smaller chunks would cost more in scheduling than
// they save.
constexpr int64_t kGrainSize = 32;

// Runs body(i) for i in [0, n) on libtorch's intra-op pool. An exception thrown by any body is
// carried back to the caller; when several fail, the one with the lowest index wins, so the error
// a user sees does not depend on thread scheduling.
template <typename Body>
void parallel_over(size_t n, Body&& body) {
  std::mutex mutex;
  std::exception_ptr first_error;
  size_t first_error_index = std::numeric_limits<size_t>::max();
  at::parallel_for(0, static_cast<int64_t>(n), kGrainSize, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        body(static_cast<size_t>(i));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (static_cast<size_t>(i) < first_error_index) {
          first_error_index = static_cast<size_t>(i);
          first_error = std::current_exception();
        }
        return;  // the rest of this chunk is wasted work
      }
    }
  });
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string>& texts, bool add_bos,
                                                          bool add_eos) const {
  std::vector<std::vector<TokenId>> out(texts.size());
  parallel_over(texts.size(), [&](size_t i) {
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
  parallel_over(ids.size(), [&](size_t i) {
    try {
      out[i] = decode(ids[i]);
    } catch (const Error& e) {
      LLM4DSR_THROW("decode_batch: sequence " << i << ": " << e.what());
    }
  });
  return out;
}

}  // namespace llm4dsr
