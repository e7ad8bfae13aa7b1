#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/denoise/thresholds.h"
#include "llm4dsr/denoise/uncertainty_scorer.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"
#include "torch_catch.h"

using llm4dsr::Catalog;
using llm4dsr::Error;
using llm4dsr::LlamaModel;
using llm4dsr::ModelConfig;
using llm4dsr::NoiseScores;
using llm4dsr::PromptTemplate;
using llm4dsr::ScorerOptions;
using llm4dsr::ScoringMode;
using llm4dsr::SentencePieceTokenizer;
using llm4dsr::TokenId;
using llm4dsr::UncertaintyScorer;

#include "denoise_fixture.h"

using namespace denoise_fixture;

namespace {

// The reference, item by item: the whole text through the model, no padding, no cache. The title's
// ids are encode_in_context(prefix, title) (+ delimiter), its context what precedes them in the joint
// encoding; returns the sum of the log-probabilities of the first `count` ids (all when count < 0).
double brute_force(LlamaModel& model, const llm4dsr::Tokenizer& tok, const std::string& prefix,
                   const std::string& title, int64_t count, const std::string& suffix = "") {
  torch::NoGradGuard no_grad;
  const auto joint = widen(tok.encode(prefix + title + suffix, /*add_bos=*/true));
  const auto tail = widen(tok.encode_in_context(prefix, title + suffix));
  REQUIRE(tail.size() < joint.size());
  const size_t context = joint.size() - tail.size();
  const size_t n = count < 0 ? tail.size() : static_cast<size_t>(count);
  auto x = torch::tensor(std::vector<int64_t>(joint.begin(), joint.begin() + static_cast<std::ptrdiff_t>(context + n - 1)),
                         torch::kInt64)
               .unsqueeze(0);
  auto logp = model->forward(x)[0].log_softmax(-1);
  double sum = 0.0;
  for (size_t j = 0; j < n; ++j) sum += logp[static_cast<int64_t>(context + j - 1)][tail[j]].item<double>();
  return sum;
}

std::vector<std::string> titles_of(const std::vector<int64_t>& items) {
  std::vector<std::string> out;
  for (int64_t id : items) out.push_back(kTitles[static_cast<size_t>(id - 1)]);
  return out;
}

}  // namespace

TEST_CASE("first-token scores equal a per-item full forward at the in-context first token", "[scorer]") {
  Fixture f;
  ScorerOptions o;
  o.micro_batch_size = 3;  // a padded batch of three prompts of different lengths, then one alone
  UncertaintyScorer scorer(f.model, f.tok, o);
  const auto scores = scorer.score(kSequences, f.catalog);
  REQUIRE(scores.size() == kSequences.size());
  bool merged = false;
  for (size_t i = 0; i < kSequences.size(); ++i) {
    const auto titles = titles_of(kSequences[i]);
    const std::string prefix = f.t.scoring_prefix(titles);
    const auto plan = scorer.plan(kSequences[i], f.catalog);
    REQUIRE(scores[i].size() == static_cast<int64_t>(titles.size()));
    CHECK(scores[i].items == kSequences[i]);
    for (size_t k = 0; k < titles.size(); ++k) {
      INFO("sequence " << i << " title " << titles[k]);
      CHECK(scores[i].log_prob[k] == Approx(brute_force(f.model, *f.tok, prefix, titles[k], 1)).margin(1e-4));
      CHECK(plan.scored_ids[k].front() == f.tok->encode_in_context(prefix, titles[k]).front());
      merged = merged || plan.context_length[k] < static_cast<int64_t>(plan.prefix_ids.size());
    }
  }
  // The corpus makes '"(' one piece, so the straddling path (an earlier logits position) is covered.
  CHECK(merged);
}

TEST_CASE("batched scoring with padding equals scoring one sequence at a time", "[scorer]") {
  Fixture f;
  for (auto mode : {ScoringMode::kFirstToken, ScoringMode::kExact}) {
    ScorerOptions batched, single;
    batched.mode = single.mode = mode;
    batched.micro_batch_size = 4;
    single.micro_batch_size = 1;
    single.chunk_size = 1;
    const auto a = UncertaintyScorer(f.model, f.tok, batched).score(kSequences, f.catalog);
    const auto b = UncertaintyScorer(f.model, f.tok, single).score(kSequences, f.catalog);
    for (size_t i = 0; i < a.size(); ++i) {
      for (size_t k = 0; k < a[i].log_prob.size(); ++k) {
        CHECK(a[i].log_prob[k] == Approx(b[i].log_prob[k]).margin(1e-4));
        CHECK(a[i].prob[k] == Approx(b[i].prob[k]).margin(1e-5));
      }
      CHECK(a[i].rank == b[i].rank);
    }
  }
}

TEST_CASE("exact scores equal the sum of token log-probabilities of per-item full forwards", "[scorer]") {
  Fixture f;
  for (bool delimiter : {false, true}) {
    ScorerOptions o;
    o.mode = ScoringMode::kExact;
    o.include_closing_delimiter = delimiter;
    o.micro_batch_size = 2;
    UncertaintyScorer scorer(f.model, f.tok, o);
    const auto scores = scorer.score(kSequences, f.catalog);
    bool multi = false;
    for (size_t i = 0; i < kSequences.size(); ++i) {
      const auto titles = titles_of(kSequences[i]);
      const std::string prefix = f.t.scoring_prefix(titles);
      const auto plan = scorer.plan(kSequences[i], f.catalog);
      for (size_t k = 0; k < titles.size(); ++k) {
        INFO("delimiter " << delimiter << " sequence " << i << " title " << titles[k]);
        const double expected = brute_force(f.model, *f.tok, prefix, titles[k], -1, delimiter ? f.t.closing_delimiter() : "");
        CHECK(scores[i].log_prob[k] == Approx(expected).margin(2e-4));
        multi = multi || plan.scored_ids[k].size() > 2;
      }
    }
    CHECK(multi);
  }
}

TEST_CASE("ties: repeated titles share a score, shared first tokens tie only in first-token mode", "[scorer]") {
  Fixture f;
  const std::vector<int64_t>& seq0 = kSequences[0];  // positions 0 and 4 are "Halo Wars"
  const std::vector<int64_t>& seq2 = kSequences[2];  // positions 8, 9: "Halo Wars", "Halo Reach"
  for (auto mode : {ScoringMode::kFirstToken, ScoringMode::kExact}) {
    ScorerOptions o;
    o.mode = mode;
    UncertaintyScorer scorer(f.model, f.tok, o);
    const auto s = scorer.score(std::vector<std::vector<int64_t>>{seq0, seq2}, f.catalog);
    CHECK(s[0].log_prob[0] == s[0].log_prob[4]);
    CHECK(s[0].prob[0] == s[0].prob[4]);
    CHECK(s[0].rank[0] != s[0].rank[4]);
    // Ranks: a permutation, ordered by log_prob, the earlier position first among equals.
    for (const auto& sc : s) {
      std::set<int64_t> ranks(sc.rank.begin(), sc.rank.end());
      CHECK(ranks.size() == sc.rank.size());
      CHECK(*ranks.begin() == 1);
      CHECK(*ranks.rbegin() == sc.size());
      for (size_t a = 0; a < sc.rank.size(); ++a)
        for (size_t b = a + 1; b < sc.rank.size(); ++b)
          CHECK((sc.rank[a] < sc.rank[b]) == (sc.log_prob[a] >= sc.log_prob[b]));
    }
    // prob is exp(log_prob) normalised over distinct events, each counted once.
    for (size_t i = 0; i < s.size(); ++i) {
      const auto plan = scorer.plan(i == 0 ? seq0 : seq2, f.catalog);
      std::map<int64_t, double> events;
      for (size_t k = 0; k < plan.event.size(); ++k) events[plan.event[k]] = s[i].log_prob[k];
      double z = 0.0;
      for (const auto& [e, lp] : events) z += std::exp(lp);
      double sum = 0.0;
      for (const auto& [e, lp] : events) sum += s[i].prob[static_cast<size_t>(std::find(plan.event.begin(), plan.event.end(), e) - plan.event.begin())];
      CHECK(sum == Approx(1.0).margin(1e-5));
      for (size_t k = 0; k < plan.event.size(); ++k) CHECK(s[i].prob[k] == Approx(std::exp(s[i].log_prob[k]) / z).margin(1e-6));
    }
    const auto plan2 = scorer.plan(seq2, f.catalog);
    if (mode == ScoringMode::kFirstToken) {
      REQUIRE(plan2.scored_ids[8] == plan2.scored_ids[9]);  // both start with the piece "Halo"
      CHECK(s[1].log_prob[8] == s[1].log_prob[9]);
      CHECK(plan2.event[8] == plan2.event[9]);
    } else {
      CHECK(plan2.event[8] != plan2.event[9]);
      CHECK(s[1].log_prob[8] != s[1].log_prob[9]);
    }
  }
}

TEST_CASE("standalone first tokens are the titles' own first pieces, not what the model sees", "[scorer]") {
  Fixture f;
  ScorerOptions o;
  o.first_token_context = llm4dsr::FirstTokenContext::kStandalone;
  UncertaintyScorer standalone(f.model, f.tok, o);
  UncertaintyScorer in_context(f.model, f.tok, {});
  const auto& seq = kSequences[2];
  const auto a = standalone.score(std::vector<std::vector<int64_t>>{seq}, f.catalog)[0];
  const auto b = in_context.score(std::vector<std::vector<int64_t>>{seq}, f.catalog)[0];
  const auto titles = titles_of(seq);
  const std::string prefix = f.t.scoring_prefix(titles);
  const auto prefix_ids = widen(f.tok->encode(prefix, true));
  torch::NoGradGuard no_grad;
  auto last = f.model->forward(torch::tensor(prefix_ids, torch::kInt64).unsqueeze(0))[0][-1].log_softmax(-1);
  int64_t differing = 0;
  for (size_t k = 0; k < titles.size(); ++k) {
    const TokenId alone = f.tok->encode(titles[k]).front();
    const TokenId seen = f.tok->encode_in_context(prefix, titles[k]).front();
    // sentencepiece: "▁Halo" alone, "Halo" after the opening quote.
    CHECK(f.tok->id_to_piece(alone).rfind("\xE2\x96\x81", 0) == 0);
    CHECK(a.log_prob[k] == Approx(last[alone].item<double>()).margin(1e-4));
    if (alone != seen) {
      ++differing;
      CHECK(a.log_prob[k] != Approx(b.log_prob[k]).margin(1e-3));
    }
  }
  CHECK(differing == static_cast<int64_t>(titles.size()));
  ScorerOptions bad;
  bad.mode = ScoringMode::kExact;
  bad.first_token_context = llm4dsr::FirstTokenContext::kStandalone;
  CHECK_THROWS_AS(UncertaintyScorer(f.model, f.tok, bad), Error);
}

TEST_CASE("prompts over max_prompt_tokens drop the fewest oldest items, which get no score", "[scorer]") {
  Fixture f;
  const auto& seq = kSequences[2];
  const auto titles = titles_of(seq);
  const auto tokens = [&](size_t dropped) {
    return f.tok->encode(f.t.render_prompt(std::vector<std::string>(titles.begin() + static_cast<std::ptrdiff_t>(dropped), titles.end())), true).size();
  };
  ScorerOptions o;
  o.max_prompt_tokens = static_cast<int64_t>(tokens(3));
  REQUIRE(tokens(2) > tokens(3));
  UncertaintyScorer scorer(f.model, f.tok, o);
  const auto s = scorer.score(std::vector<std::vector<int64_t>>{seq}, f.catalog)[0];
  REQUIRE(s.dropped_items == 3);
  const std::string prefix = f.t.scoring_prefix(std::vector<std::string>(titles.begin() + 3, titles.end()));
  for (size_t k = 0; k < titles.size(); ++k) {
    if (k < 3) {
      CHECK(std::isinf(s.log_prob[k]));
      CHECK(s.prob[k] == 0.0f);
      CHECK(s.rank[k] == static_cast<int64_t>(titles.size() - 3 + k + 1));
    } else {
      CHECK(s.log_prob[k] == Approx(brute_force(f.model, *f.tok, prefix, titles[k], 1)).margin(1e-4));
    }
  }
  const auto flags = llm4dsr::flag_noise(std::vector<NoiseScores>{s}, -1.0, 0);
  CHECK(flags[0] == std::vector<int64_t>{3, 4, 5, 6, 7, 8, 9});
  // Exact mode, the truncated sequence in one micro-batch with the others (shared head, packed titles).
  ScorerOptions exact = o;
  exact.mode = ScoringMode::kExact;
  exact.micro_batch_size = 4;
  const auto all = UncertaintyScorer(f.model, f.tok, exact).score(kSequences, f.catalog);
  REQUIRE(all[2].dropped_items == 3);
  for (size_t k = 0; k < titles.size(); ++k) {
    INFO("exact, position " << k);
    if (k < 3) CHECK(std::isinf(all[2].log_prob[k]));
    else CHECK(all[2].log_prob[k] == Approx(brute_force(f.model, *f.tok, prefix, titles[k], -1)).margin(2e-4));
  }
  ScorerOptions tight;
  tight.max_prompt_tokens = 5;
  CHECK_THROWS_AS(UncertaintyScorer(f.model, f.tok, tight).score(std::vector<std::vector<int64_t>>{seq}, f.catalog), Error);
}

TEST_CASE("malformed input and options throw Error naming the sequence and position", "[scorer]") {
  Fixture f;
  UncertaintyScorer scorer(f.model, f.tok, {});
  const auto message = [&](const std::vector<std::vector<int64_t>>& seqs) {
    try {
      scorer.score(seqs, f.catalog);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message({{1, 2}, {1, 99}}), Catch::Contains("sequence 1") && Catch::Contains("item id 99"));
  CHECK_THAT(message({{1}, {2}, {3, 16}}), Catch::Contains("sequence 2") && Catch::Contains("no title"));
  CHECK_THAT(message({{1}, {}}), Catch::Contains("sequence 1") && Catch::Contains("empty"));
  ScorerOptions o;
  o.micro_batch_size = 0;
  CHECK_THROWS_AS(UncertaintyScorer(f.model, f.tok, o), Error);
  o = {};
  o.include_closing_delimiter = true;  // first-token mode
  CHECK_THROWS_AS(UncertaintyScorer(f.model, f.tok, o), Error);
  o = {};
  o.template_name = "nope";
  CHECK_THROWS_AS(UncertaintyScorer(f.model, f.tok, o), Error);
  CHECK_THROWS_AS(llm4dsr::parse_scoring_mode("first"), Error);
  CHECK(llm4dsr::parse_first_token_context("standalone") == llm4dsr::FirstTokenContext::kStandalone);
}

TEST_CASE("score_chunks streams chunk by chunk with the same results", "[scorer]") {
  Fixture f;
  ScorerOptions o;
  o.chunk_size = 3;
  UncertaintyScorer scorer(f.model, f.tok, o);
  std::vector<size_t> firsts;
  std::vector<NoiseScores> streamed;
  scorer.score_chunks(kSequences, f.catalog, [&](size_t first, std::vector<NoiseScores>&& s) {
    firsts.push_back(first);
    CHECK(s.size() == std::min<size_t>(3, kSequences.size() - first));
    for (auto& x : s) streamed.push_back(std::move(x));
  });
  CHECK(firsts == std::vector<size_t>{0, 3});
  const auto whole = UncertaintyScorer(f.model, f.tok, {}).score(kSequences, f.catalog);
  for (size_t i = 0; i < whole.size(); ++i)
    for (size_t k = 0; k < whole[i].log_prob.size(); ++k)
      CHECK(streamed[i].log_prob[k] == Approx(whole[i].log_prob[k]).margin(1e-4));
}

TEST_CASE("the shared prompt head runs once and leaves every score unchanged", "[scorer]") {
  // Hand-made plans: the common prefix is {1, 2, 3}, but the second plan reads a title's logits at
  // its position 2 (context 3), so only two tokens can be shared; dropped positions (event -1) do not
  // count.
  llm4dsr::ScoringPlan a, b;
  a.prefix_ids = {1, 2, 3, 4, 5};
  a.context_length = {0, 5, 5};
  a.event = {-1, 0, 1};
  b.prefix_ids = {1, 2, 3, 9};
  b.context_length = {4, 3};
  b.event = {0, 1};
  CHECK(UncertaintyScorer::shared_prefix_length({a, b}) == 2);
  CHECK(UncertaintyScorer::shared_prefix_length({a}) == 4);
  CHECK(UncertaintyScorer::shared_prefix_length({}) == 0);

  Fixture f;
  for (auto mode : {ScoringMode::kFirstToken, ScoringMode::kExact}) {
    ScorerOptions shared, unshared;
    shared.mode = unshared.mode = mode;
    shared.micro_batch_size = unshared.micro_batch_size = 3;
    unshared.share_prefix = false;
    const UncertaintyScorer scorer(f.model, f.tok, shared);
    std::vector<llm4dsr::ScoringPlan> plans;
    for (const auto& s : kSequences) plans.push_back(scorer.plan(s, f.catalog));
    // BOS and the template's opening words: the fixture's prompts do share a head.
    CHECK(UncertaintyScorer::shared_prefix_length(plans) >= 5);
    const auto x = scorer.score(kSequences, f.catalog);
    const auto y = UncertaintyScorer(f.model, f.tok, unshared).score(kSequences, f.catalog);
    for (size_t i = 0; i < x.size(); ++i) {
      for (size_t k = 0; k < x[i].log_prob.size(); ++k) {
        INFO("mode " << llm4dsr::to_string(mode) << " sequence " << i << " position " << k);
        CHECK(x[i].log_prob[k] == Approx(y[i].log_prob[k]).margin(1e-4));
      }
      CHECK(x[i].rank == y[i].rank);
    }
  }
}

// ---- thresholds -------------------------------------------------------------------------------

namespace {
NoiseScores from_probs(const std::vector<double>& p, int64_t dropped = 0) {
  NoiseScores s;
  for (double v : p) {
    s.items.push_back(1);
    s.log_prob.push_back(v > 0 ? static_cast<float>(std::log(v)) : -std::numeric_limits<float>::infinity());
    s.prob.push_back(static_cast<float>(v));
  }
  s.dropped_items = dropped;
  return s;
}
}  // namespace

TEST_CASE("quantile thresholds follow the inverted CDF", "[scorer]") {
  std::vector<double> v;
  for (int i = 20; i >= 1; --i) v.push_back(i / 20.0);  // 0.05 .. 1.0, unsorted order
  CHECK(std::isinf(llm4dsr::quantile_threshold(v, 0.0)));
  CHECK(llm4dsr::quantile_threshold(v, 0.05) == Approx(0.05));
  CHECK(llm4dsr::quantile_threshold(v, 0.7) == Approx(0.70));  // 14 of 20 values <= 0.70
  CHECK(llm4dsr::quantile_threshold(v, 0.71) == Approx(0.75));
  CHECK(llm4dsr::quantile_threshold(v, 1.0) == Approx(1.0));
  CHECK(llm4dsr::quantile_threshold({0.3, 0.3, 0.3}, 0.5) == Approx(0.3));
  CHECK_THROWS_AS(llm4dsr::quantile_threshold(v, 1.5), Error);
  CHECK_THROWS_AS(llm4dsr::quantile_threshold({}, 0.5), Error);
  CHECK_THROWS_AS(llm4dsr::quantile_threshold({0.1, std::nan("")}, 0.5), Error);
  const auto grid = llm4dsr::default_quantile_grid();
  REQUIRE(grid.size() == 21);
  CHECK(grid[14] == 0.7);
  // Over NoiseScores: raw P_noise of the scored positions only.
  const std::vector<NoiseScores> s = {from_probs({0.9, 0.1, 0.2}), from_probs({0.99, 0.4}, 1)};
  CHECK(llm4dsr::all_scores(s).size() == 4);
  CHECK(llm4dsr::noise_threshold(s, 0.5) == Approx(0.2));
  CHECK(llm4dsr::noise_threshold(s, 0.75) == Approx(0.4));
}

TEST_CASE("flag_noise: strictly above eta, at most budget per sequence, highest first", "[scorer]") {
  const std::vector<std::vector<double>> v = {{0.1, 0.5, 0.3, 0.9, 0.5}, {0.05, 0.02}};
  using P = std::vector<std::vector<int64_t>>;
  CHECK(llm4dsr::flag_noise(v, 0.3, 0) == P{{1, 3, 4}, {}});  // 0.3 itself is not above 0.3
  CHECK(llm4dsr::flag_noise(v, 0.3, 1) == P{{3}, {}});
  CHECK(llm4dsr::flag_noise(v, 0.3, 2) == P{{1, 3}, {}});  // tie at 0.5: the earlier position
  CHECK(llm4dsr::flag_noise(v, 0.3, 3) == P{{1, 3, 4}, {}});
  CHECK(llm4dsr::flag_noise(v, -std::numeric_limits<double>::infinity(), 2) == P{{1, 3}, {0, 1}});
  CHECK(llm4dsr::flag_noise(v, 1.0, 0) == P{{}, {}});
  // All equal scores: everything or nothing, the budget keeps the earliest.
  const std::vector<std::vector<double>> eq = {{0.2, 0.2, 0.2, 0.2}};
  CHECK(llm4dsr::flag_noise(eq, 0.2, 0) == P{{}});
  CHECK(llm4dsr::flag_noise(eq, 0.1, 0) == P{{0, 1, 2, 3}});
  CHECK(llm4dsr::flag_noise(eq, 0.1, 3) == P{{0, 1, 2}});
  CHECK(llm4dsr::flag_noise(eq, llm4dsr::quantile_threshold(eq[0], 0.7), 0) == P{{}});
  CHECK_THROWS_AS(llm4dsr::flag_noise(v, 0.3, -1), Error);
  // Absolute probability on NoiseScores, raw vs normalised.
  NoiseScores s = from_probs({0.9, 0.1, 0.2});
  s.prob = {0.2f, 0.7f, 0.1f};
  CHECK(llm4dsr::flag_noise({s}, 0.15, 0) == P{{0, 2}});
  CHECK(llm4dsr::flag_noise({s}, 0.15, 0, llm4dsr::NoiseScore::kNormalised) == P{{0, 1}});
}

TEST_CASE("search_eta scans the quantile grid on validation scores and keeps the best", "[scorer]") {
  // Noise at the two highest scores of four sequences; F1 of the flags against it.
  const std::vector<NoiseScores> val = {from_probs({0.9, 0.1, 0.2}), from_probs({0.3, 0.8}),
                                        from_probs({0.05, 0.15}), from_probs({0.25})};
  const std::set<std::pair<size_t, int64_t>> noise = {{0, 0}, {1, 1}};
  const auto f1 = [&](double, const std::vector<std::vector<int64_t>>& flags) {
    double tp = 0, fp = 0;
    for (size_t i = 0; i < flags.size(); ++i)
      for (int64_t k : flags[i]) (noise.count({i, k}) ? tp : fp) += 1;
    const double fn = static_cast<double>(noise.size()) - tp;
    return tp == 0 ? 0.0 : 2 * tp / (2 * tp + fp + fn);
  };
  const auto result = llm4dsr::search_eta(val, f1, 1);
  REQUIRE(result.candidates.size() == 21);
  // 8 scores: q in (0.5, 0.75] puts eta at 0.25 or 0.3, and budget 1 then flags exactly 0.9 and 0.8.
  CHECK(result.best.objective == Approx(1.0));
  CHECK(result.best.quantile == Approx(0.75));  // the highest such quantile
  CHECK(result.best.eta == Approx(0.3));
  CHECK(result.candidates.back().objective == 0.0);  // q = 1 flags nothing
  CHECK_THROWS_AS(llm4dsr::search_eta(val, f1, 1, llm4dsr::NoiseScore::kRaw, {}), Error);
}
