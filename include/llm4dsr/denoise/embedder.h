// Embedder: text -> one vector per text from a LlamaModel's final hidden states, the f(., .) of
// LLM4DSR's grounding step (paper section 3.3, Eq. 4).
//
// As in the authors' code (BIGRec's grounding), a text is embedded by the final hidden state (after
// the last RMSNorm) of its last token, computed by the base model; "mean" pooling averages the
// hidden states of the text's tokens instead. Texts are tokenised, sorted by length and run in
// left-padded micro-batches; a left-padded row gives the same hidden states as the text alone
// (see LlamaModel), so a text's embedding does not depend on what it was batched with.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr {

// Row-major float32 matrix [N, D]: row i is the i-th text / item.
using EmbeddingMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct EmbedderOptions {
  std::string pooling = "last";  // "last" (authors) or "mean" (over the text's tokens, pads excluded)
  // false: adapters of the model are switched off while embedding (LoraBypassGuard), so catalogue and
  // generated texts are embedded by the same base model whatever adapters are attached.
  bool use_lora = false;
  int64_t micro_batch_size = 32;  // texts per forward
  int64_t max_tokens = 128;       // longer texts keep their first max_tokens tokens (BOS included)
  // Prepend the vocabulary's BOS when it has one (HF Llama tokenizers do; no-op without a BOS).
  bool add_bos = true;
  bool normalize = false;  // L2-normalise each row (the Grounder normalises in any case)

  void validate() const;  // Error naming the field and value
};

class Embedder {
 public:
  Embedder(LlamaModel model, std::shared_ptr<const Tokenizer> tokenizer, EmbedderOptions options = {});

  // [texts.size(), hidden_size] float32, rows in input order. An empty text without a BOS to
  // prepend has no token to embed: Error naming its index. Runs without gradients, in eval mode
  // (the model's training flag is restored afterwards). Not to be called concurrently with other
  // uses of the same model (adapters are detached for the call when use_lora is false).
  EmbeddingMatrix embed(const std::vector<std::string>& texts) const;

  // The token ids embed() runs for a text (BOS, truncation applied).
  std::vector<int64_t> token_ids(const std::string& text) const;

  int64_t dim() const;
  const EmbedderOptions& options() const { return options_; }
  LlamaModel model() const { return model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  LlamaModel model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  EmbedderOptions options_;
};

}  // namespace llm4dsr
