#include <algorithm>
#include <limits>
#include <set>
#include <vector>

#include "llm4dsr/error.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/generation.h"
#include "llm4dsr/model/llama_model.h"
#include "torch_catch.h"

using llm4dsr::Error;
using llm4dsr::LlamaModel;
using llm4dsr::ModelConfig;

namespace {

LlamaModel tiny_model(uint64_t seed = 3) {
  ModelConfig c = ModelConfig::preset("tiny", 61);
  c.num_hidden_layers = 2;
  c.pad_token_id = 0;
  // Larger initial weights than HF's 0.02 make the logits far apart, so argmax is not decided by
  // rounding differences between a cached and an uncached forward.
  c.initializer_range = 0.2;
  return LlamaModel(c, torch::kCPU, torch::kFloat32, seed);
}

// The reference: no cache, no padding, the whole sequence through the model at every step.
std::vector<int64_t> naive_greedy(LlamaModel& model, std::vector<int64_t> ids, int64_t max_new_tokens,
                                  const std::vector<int64_t>& stops = {}) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> out;
  for (int64_t t = 0; t < max_new_tokens; ++t) {
    auto x = torch::tensor(ids, torch::kInt64).unsqueeze(0);
    auto logits = model->forward(x);
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    ids.push_back(next);
    if (std::find(stops.begin(), stops.end(), next) != stops.end()) break;
  }
  return out;
}

}  // namespace

TEST_CASE("left_pad puts every row's tokens in the last columns", "[generation]") {
  auto b = llm4dsr::left_pad({{5, 6, 7}, {9}}, 0);
  REQUIRE(b.input_ids.sizes() == torch::IntArrayRef({2, 3}));
  CHECK(torch::equal(b.input_ids, torch::tensor({5, 6, 7, 0, 0, 9}, torch::kInt64).view({2, 3})));
  CHECK(torch::equal(b.attention_mask, torch::tensor({1, 1, 1, 0, 0, 1}, torch::kInt64).view({2, 3})));
  CHECK(b.lengths == std::vector<int64_t>{3, 1});
  CHECK_THROWS_AS(llm4dsr::left_pad({{1}, {}}, 0), Error);
  CHECK_THROWS_AS(llm4dsr::left_pad({}, 0), Error);
}

TEST_CASE("greedy generation with the KV cache equals a naive loop of full forwards", "[generation]") {
  auto model = tiny_model();
  const std::vector<int64_t> prompt = {4, 17, 33, 8, 21};
  auto expected = naive_greedy(model, prompt, 12);
  auto got = llm4dsr::generate_greedy(model, {prompt}, 12, {});
  REQUIRE(got.sequences.size() == 1);
  CHECK(got.sequences[0] == expected);
  CHECK_FALSE(got.stopped[0]);
  CHECK(got.steps == 12);  // the prefill plus 11 single-token forwards (the last token is not fed back)
  // Not a degenerate repetition of one token: the comparison exercises different choices.
  CHECK(std::set<int64_t>(expected.begin(), expected.end()).size() > 2);
}

TEST_CASE("rows of a left-padded batch equal their single-row runs", "[generation]") {
  auto model = tiny_model(11);
  const std::vector<std::vector<int64_t>> prompts = {{3, 9, 14, 2, 40, 41, 7}, {12}, {50, 1, 22}, {5, 5, 6, 30}};
  auto batch = llm4dsr::generate_greedy(model, prompts, 10, {});
  REQUIRE(batch.sequences.size() == prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("row " << i);
    auto single = llm4dsr::generate_greedy(model, {prompts[i]}, 10, {});
    CHECK(batch.sequences[i] == single.sequences[0]);
    CHECK(batch.sequences[i] == naive_greedy(model, prompts[i], 10));
  }
}

TEST_CASE("generation stops each row at its first stop token and goes on with the others", "[generation]") {
  auto model = tiny_model(5);
  const std::vector<std::vector<int64_t>> prompts = {{7, 8, 9, 10}, {20, 21}, {33, 34, 35}};
  const int64_t n = 10;
  std::vector<std::vector<int64_t>> free_runs;
  for (auto& p : prompts) free_runs.push_back(naive_greedy(model, p, n));
  // Row 0's third token becomes the stop token; it must not occur earlier in row 0.
  const int64_t stop = free_runs[0][2];
  REQUIRE(free_runs[0][0] != stop);
  REQUIRE(free_runs[0][1] != stop);

  auto got = llm4dsr::generate_greedy(model, prompts, n, {stop});
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("row " << i);
    auto expected = naive_greedy(model, prompts[i], n, {stop});
    CHECK(got.sequences[i] == expected);
    const bool hit = std::find(free_runs[i].begin(), free_runs[i].end(), stop) != free_runs[i].end();
    CHECK(got.stopped[i] == hit);
  }
  CHECK(got.sequences[0].size() == 3);
  CHECK(got.sequences[0].back() == stop);
  CHECK(got.stopped[0]);

  // Every row stopping ends the batch early: one stop token per row's first choice.
  std::vector<int64_t> firsts;
  for (auto& r : free_runs) firsts.push_back(r[0]);
  auto early = llm4dsr::generate_greedy(model, prompts, n, firsts);
  CHECK(early.steps == 1);
  for (size_t i = 0; i < prompts.size(); ++i) {
    CHECK(early.sequences[i] == std::vector<int64_t>{free_runs[i][0]});
    CHECK(early.stopped[i]);
  }
}

TEST_CASE("the logits processor steers the choice and sees the tokens so far", "[generation]") {
  auto model = tiny_model(7);
  const std::vector<int64_t> prompt = {2, 3, 4};
  std::vector<int64_t> seen_lengths;
  llm4dsr::GreedyOptions options;
  // Allows only token 9 at odd steps: the output alternates free choices and 9.
  options.logits_processor = [&](torch::Tensor& logits, const torch::Tensor& generated, int64_t step) {
    seen_lengths.push_back(generated.size(1));
    if (step % 2 == 1) {
      auto keep = logits.select(1, 9).clone();
      logits.fill_(-std::numeric_limits<float>::infinity());
      logits.select(1, 9).copy_(keep);
    }
  };
  auto got = llm4dsr::generate_greedy(model, {prompt}, 6, {}, options);
  REQUIRE(got.sequences[0].size() == 6);
  CHECK(seen_lengths == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  // The reference: the same constraint applied to full forwards.
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids = prompt;
  for (int64_t t = 0; t < 6; ++t) {
    auto logits = model->forward(torch::tensor(ids, torch::kInt64).unsqueeze(0))[0][-1];
    const int64_t next = t % 2 == 1 ? 9 : logits.argmax().item<int64_t>();
    CHECK(got.sequences[0][static_cast<size_t>(t)] == next);
    ids.push_back(next);
  }
}

TEST_CASE("generate_greedy restores the training mode and rejects bad input", "[generation]") {
  auto model = tiny_model();
  model->train(true);
  llm4dsr::generate_greedy(model, {{1, 2}}, 2, {});
  CHECK(model->is_training());
  model->eval();
  CHECK(llm4dsr::generate_greedy(model, {{1, 2}}, 0, {}).sequences == std::vector<std::vector<int64_t>>{{}});
  CHECK_THROWS_AS(llm4dsr::generate_greedy(model, {{1, 61}}, 2, {}), Error);
  CHECK_THROWS_AS(llm4dsr::generate_greedy(model, {{1, -1}}, 2, {}), Error);
  CHECK_THROWS_AS(llm4dsr::generate_greedy(model, {{1}, {}}, 2, {}), Error);
  CHECK_THROWS_AS(llm4dsr::generate_greedy(model, {{1}}, -1, {}), Error);
  CHECK_THROWS_AS(llm4dsr::generate_greedy(model, {{1}}, 2, {99}), Error);
}

TEST_CASE("bf16 greedy generation matches the bf16 naive loop", "[generation]") {
  auto model = tiny_model(3);
  model->to_device_dtype(torch::kCPU, torch::kBFloat16);
  const std::vector<int64_t> prompt = {4, 17, 33};
  auto got = llm4dsr::generate_greedy(model, {prompt, {9, 9, 9, 9, 9, 9}}, 6, {});
  CHECK(got.sequences[0] == naive_greedy(model, prompt, 6));
}
