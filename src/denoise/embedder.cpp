#include "llm4dsr/denoise/embedder.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <utility>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "llm4dsr/model/lora_guard.h"

namespace llm4dsr {

void EmbedderOptions::validate() const {
  LLM4DSR_CHECK(pooling == "last" || pooling == "mean",
                "EmbedderOptions.pooling must be \"last\" or \"mean\", got \"" << pooling << "\"");
  LLM4DSR_CHECK(micro_batch_size >= 1, "EmbedderOptions.micro_batch_size must be >= 1, got " << micro_batch_size);
  LLM4DSR_CHECK(max_tokens >= 1, "EmbedderOptions.max_tokens must be >= 1, got " << max_tokens);
}

Embedder::Embedder(LlamaModel model, std::shared_ptr<const Tokenizer> tokenizer, EmbedderOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  LLM4DSR_CHECK(model_, "Embedder: model is null");
  LLM4DSR_CHECK(tokenizer_, "Embedder: tokenizer is null");
  options_.validate();
  LLM4DSR_CHECK(tokenizer_->vocab_size() <= model_->config().vocab_size,
                "Embedder: the tokenizer's vocabulary (" << tokenizer_->vocab_size() << " ids) exceeds the model's ("
                                                         << model_->config().vocab_size << ")");
}

int64_t Embedder::dim() const { return model_->config().hidden_size; }

std::vector<int64_t> Embedder::token_ids(const std::string& text) const {
  const bool bos = options_.add_bos && tokenizer_->bos_id() >= 0;
  const std::vector<TokenId> ids = tokenizer_->encode(text, bos, false);
  const size_t n = std::min<size_t>(ids.size(), static_cast<size_t>(options_.max_tokens));
  return std::vector<int64_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
}

namespace {

// Sets the module's training flag for one scope (LoRA dropout is active in training mode).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(LlamaModel model) : model_(std::move(model)), was_training_(model_->is_training()) {
    if (was_training_) model_->eval();
  }
  ~EvalModeGuard() {
    if (was_training_) model_->train(true);
  }

 private:
  LlamaModel model_;
  bool was_training_;
};

}  // namespace

EmbeddingMatrix Embedder::embed(const std::vector<std::string>& texts) const {
  const int64_t n = static_cast<int64_t>(texts.size());
  const int64_t hidden = dim();
  EmbeddingMatrix out(n, hidden);
  if (n == 0) return out;

  const bool bos = options_.add_bos && tokenizer_->bos_id() >= 0;
  std::vector<std::vector<TokenId>> encoded = tokenizer_->encode_batch(texts, bos, false);
  for (int64_t i = 0; i < n; ++i) {
    auto& ids = encoded[static_cast<size_t>(i)];
    LLM4DSR_CHECK(!ids.empty(), "Embedder: text " << i << " is empty and the vocabulary has no BOS to embed instead");
    if (static_cast<int64_t>(ids.size()) > options_.max_tokens) ids.resize(static_cast<size_t>(options_.max_tokens));
  }
  // Longest first: similar lengths share a micro-batch (little padding) and the first forward
  // allocates the largest buffers.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return encoded[static_cast<size_t>(a)].size() > encoded[static_cast<size_t>(b)].size();
  });

  // embed() is const for callers; running the model needs the non-const handle (same module).
  LlamaModel model = model_;
  torch::NoGradGuard no_grad;
  EvalModeGuard eval(model);
  std::optional<LoraBypassGuard> bypass;
  if (!options_.use_lora) bypass.emplace(model);

  const torch::Device device = model->device();
  const TokenId pad = std::max<TokenId>(tokenizer_->pad_id(), 0);  // masked out: any valid id
  const bool mean = options_.pooling == "mean";
  for (int64_t begin = 0; begin < n; begin += options_.micro_batch_size) {
    const int64_t b = std::min(options_.micro_batch_size, n - begin);
    const int64_t t = static_cast<int64_t>(encoded[static_cast<size_t>(order[static_cast<size_t>(begin)])].size());
    torch::Tensor ids = torch::full({b, t}, static_cast<int64_t>(pad), torch::kInt64);
    torch::Tensor mask = torch::zeros({b, t}, torch::kInt64);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    bool padded = false;
    for (int64_t r = 0; r < b; ++r) {
      const auto& row = encoded[static_cast<size_t>(order[static_cast<size_t>(begin + r)])];
      const int64_t len = static_cast<int64_t>(row.size());
      padded |= len < t;
      for (int64_t j = 0; j < len; ++j) {
        ids_a[r][t - len + j] = row[static_cast<size_t>(j)];
        mask_a[r][t - len + j] = 1;
      }
    }
    torch::Tensor mask_dev = mask.to(device);
    torch::Tensor hidden_states = model->forward_hidden(ids.to(device), padded ? mask_dev : torch::Tensor());
    torch::Tensor pooled;
    if (mean) {
      // Sum in fp32 over the tokens only; pads contribute nothing.
      torch::Tensor m = mask_dev.to(torch::kFloat32).unsqueeze(-1);
      pooled = (hidden_states.to(torch::kFloat32) * m).sum(1) / m.sum(1);
    } else {
      // Left padding puts every row's last token at position T - 1.
      pooled = hidden_states.select(1, t - 1).to(torch::kFloat32);
    }
    pooled = pooled.to(torch::kCPU).contiguous();
    const float* src = pooled.data_ptr<float>();
    for (int64_t r = 0; r < b; ++r)
      std::copy(src + r * hidden, src + (r + 1) * hidden, out.row(order[static_cast<size_t>(begin + r)]).data());
  }
  if (options_.normalize) {
    for (int64_t i = 0; i < n; ++i) {
      const float norm = out.row(i).norm();
      if (norm > 0.0f) out.row(i) /= norm;
    }
  }
  return out;
}

}  // namespace llm4dsr
