#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "denoise_fixture.h"
#include "llm4dsr/denoise/generator.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/generation.h"

using namespace denoise_fixture;
using llm4dsr::Error;
using llm4dsr::GenerationRequest;
using llm4dsr::Generator;
using llm4dsr::GeneratorOptions;

namespace {

// log P(tokens | prompt) by full forwards, no cache: the reference score of a hypothesis.
double sequence_log_prob(LlamaModel& model, std::vector<int64_t> ids, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard no_grad;
  double sum = 0.0;
  for (int64_t t : tokens) {
    auto logp = model->forward(torch::tensor(ids, torch::kInt64).unsqueeze(0))[0][-1].log_softmax(-1);
    sum += logp[t].item<double>();
    ids.push_back(t);
  }
  return sum;
}

}  // namespace

TEST_CASE("beam search with enough beams returns the best hypothesis of an exhaustive search", "[generator]") {
  ModelConfig c = ModelConfig::preset("tiny", 5);
  c.num_hidden_layers = 2;
  c.initializer_range = 0.3;
  for (uint64_t seed : {1, 2, 3}) {
    LlamaModel model(c, torch::kCPU, torch::kFloat32, seed);
    const std::vector<int64_t> prompt = {1, 3, 4, 2};
    const int64_t stop = 2, max_new = 3;
    for (double length_penalty : {1.0, 0.0, -0.5}) {
      INFO("seed " << seed << ", length_penalty " << length_penalty);
      // Every sequence that ends at the stop token or at max_new tokens.
      double best = -std::numeric_limits<double>::infinity();
      std::vector<int64_t> best_tokens;
      std::function<void(std::vector<int64_t>)> visit = [&](std::vector<int64_t> tokens) {
        const bool ended = !tokens.empty() && (tokens.back() == stop || static_cast<int64_t>(tokens.size()) == max_new);
        if (ended) {
          const double score = sequence_log_prob(model, prompt, tokens) /
                               std::pow(static_cast<double>(tokens.size()), length_penalty);
          if (score > best) best = score, best_tokens = tokens;
          return;
        }
        for (int64_t t = 0; t < 5; ++t) {
          auto next = tokens;
          next.push_back(t);
          visit(next);
        }
      };
      visit({});
      llm4dsr::BeamOptions options;
      options.num_beams = 25;  // 5^2 prefixes: nothing is ever pruned
      options.length_penalty = length_penalty;
      auto out = llm4dsr::generate_beam(model, {prompt}, max_new, {stop}, options);
      CHECK(out.sequences[0] == best_tokens);
      CHECK(out.scores[0] == Approx(best).margin(1e-4));
      CHECK(out.stopped[0] == (best_tokens.back() == stop));
      CHECK(out.log_probs[0] == Approx(sequence_log_prob(model, prompt, best_tokens)).margin(1e-4));
    }
  }
}

TEST_CASE("beam search: rows of a batch equal their single runs; greedy reports its log-probability", "[generator]") {
  ModelConfig c = ModelConfig::preset("tiny", 40);
  c.num_hidden_layers = 2;
  c.initializer_range = 0.2;
  LlamaModel model(c, torch::kCPU, torch::kFloat32, 7);
  const std::vector<std::vector<int64_t>> prompts = {{3, 9, 14, 2, 30}, {12}, {5, 5, 6}};
  llm4dsr::BeamOptions options;
  options.num_beams = 3;
  auto batch = llm4dsr::generate_beam(model, prompts, 6, {7}, options);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("row " << i);
    auto single = llm4dsr::generate_beam(model, {prompts[i]}, 6, {7}, options);
    CHECK(batch.sequences[i] == single.sequences[0]);
    CHECK(batch.scores[i] == Approx(single.scores[0]).margin(1e-5));
    auto greedy = llm4dsr::generate_greedy(model, {prompts[i]}, 6, {7});
    CHECK(greedy.log_probs[0] == Approx(sequence_log_prob(model, prompts[i], greedy.sequences[0])).margin(1e-4));
  }
  CHECK_THROWS_AS(llm4dsr::generate_beam(model, prompts, 6, {7}, llm4dsr::BeamOptions{0}), Error);
}

TEST_CASE("constrained decoding only ever emits catalogue titles, tokenised as in the training text", "[generator]") {
  Fixture f;
  for (const std::string decoding : {"greedy", "beam"}) {
    GeneratorOptions options;
    options.constrained = true;
    options.decoding = decoding;
    options.num_beams = 3;
    options.micro_batch_size = 3;
    for (uint64_t seed : {5, 6, 7}) {
      LlamaModel model = tiny_model(f.tok->vocab_size(), seed);
      Generator gen(model, f.tok, f.catalog, options);
      CHECK(gen.trie_titles() == 15);  // the untitled item is not in the trie
      std::vector<GenerationRequest> requests;
      for (const auto& s : kSequences)
        for (int64_t k = 0; k < static_cast<int64_t>(s.size()); ++k) requests.push_back({s, k, s});
      const auto out = gen.generate(requests);
      REQUIRE(out.size() == requests.size());
      std::set<int64_t> produced;
      for (size_t i = 0; i < out.size(); ++i) {
        INFO(decoding << ", seed " << seed << ", request " << i << ": '" << out[i].text << "'");
        REQUIRE(out[i].item_id >= 1);
        REQUIRE(out[i].item_id <= 15);
        CHECK(out[i].finished);
        CHECK(std::find(requests[i].exclude.begin(), requests[i].exclude.end(), out[i].item_id) ==
              requests[i].exclude.end());
        CHECK(out[i].text == kTitles[static_cast<size_t>(out[i].item_id - 1)]);
        produced.insert(out[i].item_id);
        // The prompt (less the re-decoded quote) plus the tokens decodes to the training text.
        auto ids = gen.prompt_ids(requests[i]);
        const std::string expected = f.tok->decode(std::vector<TokenId>(ids.begin(), ids.end())) + out[i].text + "\"";
        std::vector<int64_t> tokens = out[i].token_ids;
        REQUIRE(tokens.back() == f.tok->eos_id());
        tokens.pop_back();
        const auto prompt_and_title = f.tok->encode(expected, /*add_bos=*/true);
        REQUIRE(prompt_and_title.size() >= tokens.size());
        CHECK(std::equal(tokens.begin(), tokens.end(), prompt_and_title.end() - static_cast<std::ptrdiff_t>(tokens.size())));
      }
      // A random model spreads its choices: the check covers more than one title.
      CHECK(produced.size() > 1);
    }
  }
}

TEST_CASE("constrained decoding with all but one item excluded produces that item", "[generator]") {
  Fixture f;
  GeneratorOptions options;
  options.constrained = true;
  Generator gen(f.model, f.tok, f.catalog, options);
  for (int64_t keep : {4, 7, 1, 2}) {  // "(Re)..." titles merge with the quote; "Halo ..." share a prefix
    GenerationRequest r{{8, 9, 10}, 1, {}};
    for (int64_t id = 1; id <= 16; ++id)
      if (id != keep) r.exclude.push_back(id);
    const auto out = gen.generate({r});
    CHECK(out[0].item_id == keep);
    CHECK(out[0].text == kTitles[static_cast<size_t>(keep - 1)]);
  }
}

TEST_CASE("unconstrained generation decodes the generation prompt and cuts at the closing quote", "[generator]") {
  Fixture f;
  GeneratorOptions options;
  options.max_new_tokens = 12;
  Generator gen(f.model, f.tok, f.catalog, options);
  const auto& stops = gen.stop_token_ids();
  REQUIRE(std::find(stops.begin(), stops.end(), f.tok->eos_id()) != stops.end());
  for (int64_t id : stops)
    if (id != f.tok->eos_id()) CHECK(f.tok->decode({static_cast<TokenId>(id)}).find('"') != std::string::npos);

  const GenerationRequest r{kSequences[2], 3, {}};
  const auto ids = gen.prompt_ids(r);
  std::vector<std::string> titles;
  for (int64_t id : r.items) titles.push_back(kTitles[static_cast<size_t>(id - 1)]);
  CHECK(f.tok->decode(std::vector<TokenId>(ids.begin(), ids.end())) ==
        f.t.generation_prompt(titles, kTitles[static_cast<size_t>(r.items[3] - 1)]));
  const auto out = gen.generate({r});
  LlamaModel m = f.model;
  auto reference = llm4dsr::generate_greedy(m, {ids}, 12, stops);
  CHECK(out[0].token_ids == reference.sequences[0]);
  CHECK(out[0].finished == reference.stopped[0]);
  std::string text = f.tok->decode(std::vector<TokenId>(reference.sequences[0].begin(), reference.sequences[0].end()));
  text = text.substr(0, text.find('"'));
  while (!text.empty() && text.back() == ' ') text.pop_back();
  while (!text.empty() && text.front() == ' ') text.erase(text.begin());
  CHECK(out[0].text == text);

  // The model's own noise answer follows the scoring prefix.
  const auto noise = gen.generate_noise({kSequences[0]});
  std::vector<std::string> t0;
  for (int64_t id : kSequences[0]) t0.push_back(kTitles[static_cast<size_t>(id - 1)]);
  const auto prefix = f.tok->encode(f.t.scoring_prefix(t0), true);
  auto ref_noise = llm4dsr::generate_greedy(m, {std::vector<int64_t>(prefix.begin(), prefix.end())}, 12, stops);
  CHECK(noise[0].token_ids == ref_noise.sequences[0]);
}

TEST_CASE("Generator rejects bad requests and options naming them", "[generator]") {
  Fixture f;
  Generator gen(f.model, f.tok, f.catalog);
  const auto message = [&](const std::vector<GenerationRequest>& r) {
    try {
      gen.generate(r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message({{{1, 2}, 0, {}}, {{}, 0, {}}}), Catch::Contains("request 1") && Catch::Contains("empty"));
  CHECK_THAT(message({{{1, 2}, 2, {}}}), Catch::Contains("position 2"));
  CHECK_THAT(message({{{1, 99}, 0, {}}}), Catch::Contains("item id 99"));
  CHECK_THAT(message({{{1, 16}, 0, {}}}), Catch::Contains("no title"));
  GeneratorOptions bad;
  bad.decoding = "sampling";
  CHECK_THROWS_WITH(Generator(f.model, f.tok, f.catalog, bad), Catch::Contains("sampling"));
  bad = {};
  bad.num_beams = 0;
  CHECK_THROWS_WITH(Generator(f.model, f.tok, f.catalog, bad), Catch::Contains("num_beams"));
}
