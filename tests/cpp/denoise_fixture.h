// Shared fixture of the denoising-stage tests (scorer, generator, denoiser): a small catalogue whose
// titles exercise the tokenisation corner cases, a sentencepiece tokenizer trained on the paper's
// template over them, and a tiny random Llama.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"
#include "torch_catch.h"

namespace denoise_fixture {

using llm4dsr::Catalog;
using llm4dsr::LlamaModel;
using llm4dsr::ModelConfig;
using llm4dsr::PromptTemplate;
using llm4dsr::SentencePieceTokenizer;
using llm4dsr::TokenId;

// Titles chosen for the cases under test: two sharing their first word ("Halo ..."), some starting
// with punctuation (whose first piece may merge with the opening quote), one repeated in a sequence.
const std::vector<std::string> kTitles = {
    "Halo Wars",        "Halo Reach",      "Zelda Breath",  "(Re)Union Saga", "Mario Kart",
    "Doom Eternal",     "(Re)Born Again",  "Tetris Effect", "Portal Two",     "Celeste",
    "Hades",            "Stardew Valley",  "Minecraft",     "Terraria",       "Fez",
};

inline Catalog make_catalog() {
  Catalog c;
  for (size_t i = 0; i < kTitles.size(); ++i) {
    const int64_t id = c.add(std::to_string(i + 1));
    c.set_title(id, kTitles[i]);
  }
  c.add("untitled");  // id 16, no title
  return c;
}

inline std::shared_ptr<SentencePieceTokenizer> make_tokenizer() {
  const PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
  std::vector<std::string> texts;
  for (size_t i = 0; i < kTitles.size(); ++i) {
    std::vector<std::string> history;
    for (size_t j = 0; j < 4; ++j) history.push_back(kTitles[(i + j) % kTitles.size()]);
    const std::string text = t.render_text(history, kTitles[i], kTitles[(i + 7) % kTitles.size()]);
    // Repeated so that the quote + "(" pair becomes a piece of its own.
    for (int r = 0; r < 3; ++r) texts.push_back(text);
  }
  llm4dsr::SentencePieceTrainOptions options;
  options.vocab_size = 400;
  options.hard_vocab_limit = false;
  return std::shared_ptr<SentencePieceTokenizer>(SentencePieceTokenizer::train(texts, options).release());
}

inline LlamaModel tiny_model(int64_t vocab, uint64_t seed = 5) {
  ModelConfig c = ModelConfig::preset("tiny", vocab);
  c.num_hidden_layers = 2;
  c.initializer_range = 0.2;  // logits far apart: scores that differ differ clearly
  return LlamaModel(c, torch::kCPU, torch::kFloat32, seed);
}

inline std::vector<int64_t> widen(const std::vector<TokenId>& ids) { return {ids.begin(), ids.end()}; }

const std::vector<std::vector<int64_t>> kSequences = {
    {1, 3, 4, 5, 1},        // "Halo Wars" twice; "(Re)Union Saga"
    {2, 6, 7},              // "(Re)Born Again"
    {8, 9, 10, 11, 12, 13, 14, 15, 1, 2},  // "Halo Wars" and "Halo Reach": same first word
    {11},
};

struct Fixture {
  std::shared_ptr<SentencePieceTokenizer> tok = make_tokenizer();
  Catalog catalog = make_catalog();
  LlamaModel model = tiny_model(tok->vocab_size());
  PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
};

}  // namespace denoise_fixture
