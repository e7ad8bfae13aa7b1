#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "denoise_fixture.h"
#include "llm4dsr/denoise/denoiser.h"
#include "llm4dsr/error.h"
#include "llm4dsr/evaluation/noise_metrics.h"

using namespace denoise_fixture;
using llm4dsr::Denoiser;
using llm4dsr::DenoiserOptions;
using llm4dsr::DenoisePolicy;
using llm4dsr::Error;
using llm4dsr::NoiseScores;
using llm4dsr::Sequence;
using llm4dsr::SequenceSet;

namespace {

NoiseScores scores_of(const std::vector<int64_t>& items, const std::vector<double>& probs) {
  NoiseScores s;
  s.items = items;
  for (double p : probs) {
    s.log_prob.push_back(static_cast<float>(std::log(p)));
    s.prob.push_back(static_cast<float>(p));
  }
  return s;
}

struct Pipeline {
  Fixture f;
  std::shared_ptr<llm4dsr::UncertaintyScorer> scorer = std::make_shared<llm4dsr::UncertaintyScorer>(f.model, f.tok);
  std::shared_ptr<llm4dsr::Generator> constrained;
  Pipeline() {
    llm4dsr::GeneratorOptions g;
    g.constrained = true;
    constrained = std::make_shared<llm4dsr::Generator>(f.model, f.tok, f.catalog, g);
  }
  Denoiser make(DenoisePolicy policy, int64_t budget = 1) const {
    DenoiserOptions o;
    o.policy = policy;
    o.budget = budget;
    return Denoiser(scorer, constrained, nullptr, nullptr, f.catalog, o);
  }
};

}  // namespace

TEST_CASE("Denoiser.flag: strictly above eta, highest first within the budget, protected positions never", "[denoiser]") {
  Pipeline p;
  const std::vector<NoiseScores> scores = {scores_of({1, 2, 3, 4}, {0.5, 0.05, 0.3, 0.3}),
                                           scores_of({5, 6}, {0.2, 0.2})};
  auto d1 = p.make(DenoisePolicy::kWithoutCompletion, 1);
  CHECK(d1.flag(scores, 0.2) == std::vector<std::vector<int64_t>>{{0}, {}});  // 0.2 is not above 0.2
  auto d2 = p.make(DenoisePolicy::kWithoutCompletion, 2);
  CHECK(d2.flag(scores, 0.1) == std::vector<std::vector<int64_t>>{{0, 2}, {0, 1}});  // the tie at 0.3: earlier first
  CHECK(d2.flag(scores, 0.1, {{true, false, false, true}, {false, false}}) ==
        std::vector<std::vector<int64_t>>{{2}, {0, 1}});
  auto d0 = p.make(DenoisePolicy::kWithoutCompletion, 0);  // no budget
  CHECK(d0.flag(scores, 0.1) == std::vector<std::vector<int64_t>>{{0, 2, 3}, {0, 1}});
  CHECK_THROWS_AS(d0.flag(scores, 0.1, {{true}}), Error);
}

TEST_CASE("Denoiser policies: deletion, popularity completion, constrained replacement", "[denoiser]") {
  Pipeline p;
  const std::vector<std::vector<int64_t>> seqs = {{1, 3, 5, 6}, {8, 9, 10}};
  const std::vector<NoiseScores> scores = {scores_of(seqs[0], {0.01, 0.6, 0.02, 0.4}),
                                           scores_of(seqs[1], {0.01, 0.02, 0.03})};

  SECTION("without completion deletes the flagged items") {
    const auto r = p.make(DenoisePolicy::kWithoutCompletion, 2).correct(seqs, scores, 0.1);
    CHECK(r[0].items == std::vector<int64_t>{1, 5});
    CHECK(r[0].flagged == std::vector<int64_t>{1, 3});
    REQUIRE(r[0].corrections.size() == 2);
    CHECK(r[0].corrections[0].replacement_item == 0);
    CHECK(r[0].corrections[0].original_item == 3);
    CHECK(r[0].corrections[0].p_noise == Approx(0.6));
    CHECK(r[1].items == seqs[1]);
    CHECK(r[1].corrections.empty());
  }

  SECTION("popularity completion draws in proportion to popularity, never an item of the sequence") {
    // Popularity only on items 2 (x1), 4 (x3) and 3 (in the sequence, x100): draws are 2 or 4, 1:3.
    Catalog catalog = p.f.catalog;
    catalog.add_popularity(2, 1);
    catalog.add_popularity(4, 3);
    catalog.add_popularity(3, 100);
    DenoiserOptions o;
    o.policy = DenoisePolicy::kPopularityCompletion;
    std::map<int64_t, int> counts;
    std::vector<std::vector<int64_t>> many(4000, seqs[0]);
    std::vector<NoiseScores> many_scores(4000, scores[0]);
    Denoiser d(p.scorer, nullptr, nullptr, nullptr, catalog, o);
    const auto r = d.correct(many, many_scores, 0.1);
    for (const auto& rep : r) {
      REQUIRE(rep.corrections.size() == 1);
      CHECK(rep.corrections[0].position == 1);
      ++counts[rep.corrections[0].replacement_item];
      CHECK(rep.items[1] == rep.corrections[0].replacement_item);
    }
    CHECK(counts.size() == 2);
    const double share4 = counts[4] / 4000.0;
    CHECK(std::abs(share4 - 0.75) < 4 * std::sqrt(0.75 * 0.25 / 4000));
    // Chunked with first_index gives the same draws as one call.
    const auto tail = d.correct({many.begin() + 2000, many.end()}, {many_scores.begin() + 2000, many_scores.end()}, 0.1,
                                {}, 2000);
    for (size_t i = 0; i < tail.size(); ++i) CHECK(tail[i].items == r[2000 + i].items);
  }

  SECTION("full LLM4DSR with the constrained generator replaces by a catalogue item not in the sequence") {
    const auto r = p.make(DenoisePolicy::kFull, 2).correct(seqs, scores, 0.1);
    REQUIRE(r[0].corrections.size() == 2);
    std::vector<int64_t> replaced;
    for (const auto& c : r[0].corrections) {
      CHECK(c.replacement_item >= 1);
      CHECK(c.replacement_item <= 15);
      CHECK(std::find(seqs[0].begin(), seqs[0].end(), c.replacement_item) == seqs[0].end());
      CHECK(c.generated_text == kTitles[static_cast<size_t>(c.replacement_item - 1)]);
      CHECK(r[0].items[static_cast<size_t>(c.position)] == c.replacement_item);
      replaced.push_back(c.replacement_item);
    }
    CHECK(replaced[0] != replaced[1]);  // the second round excludes the first round's choice
    CHECK(r[0].items[0] == 1);
    CHECK(r[0].items[2] == 5);
    CHECK(r[1].items == seqs[1]);
    // The replacement is what the generator itself produces for that request.
    llm4dsr::GenerationRequest q{seqs[0], 1, seqs[0]};
    CHECK(p.constrained->generate({q})[0].item_id == r[0].corrections[0].replacement_item);
  }

  SECTION("without uncertainty flags the item matching the model's own answer") {
    DenoiserOptions o;
    o.policy = DenoisePolicy::kWithoutUncertainty;
    Denoiser d(nullptr, p.constrained, nullptr, nullptr, p.f.catalog, o);
    const auto r = d.correct(seqs, {}, 0.0);
    const auto answers = p.constrained->generate_noise(seqs);
    for (size_t i = 0; i < seqs.size(); ++i) {
      std::vector<std::string> titles;
      for (int64_t id : seqs[i]) titles.push_back(kTitles[static_cast<size_t>(id - 1)]);
      const int64_t k = llm4dsr::match_answer(answers[i].text, titles);
      CHECK(r[i].flagged == (k >= 0 ? std::vector<int64_t>{k} : std::vector<int64_t>{}));
      if (k >= 0) CHECK(std::isnan(r[i].corrections[0].p_noise));
    }
  }

  SECTION("components a policy needs are required") {
    DenoiserOptions o;
    CHECK_THROWS_WITH(Denoiser(p.scorer, nullptr, nullptr, nullptr, p.f.catalog, o), Catch::Contains("Generator"));
    llm4dsr::GeneratorOptions g;
    auto free = std::make_shared<llm4dsr::Generator>(p.f.model, p.f.tok, p.f.catalog, g);
    CHECK_THROWS_WITH(Denoiser(p.scorer, free, nullptr, nullptr, p.f.catalog, o), Catch::Contains("Grounder"));
    o.policy = DenoisePolicy::kWithoutCompletion;
    CHECK_THROWS_WITH(Denoiser(nullptr, nullptr, nullptr, nullptr, p.f.catalog, o), Catch::Contains("UncertaintyScorer"));
  }
}

TEST_CASE("match_answer: exact title up to case and spaces, else the largest word overlap", "[denoiser]") {
  const std::vector<std::string> titles = {"Halo Wars", "Halo Reach", "Mario Kart 8", "Tetris"};
  CHECK(llm4dsr::match_answer("halo  REACH", titles) == 1);
  CHECK(llm4dsr::match_answer("Mario Kart", titles) == 2);  // 2 of 3 words
  CHECK(llm4dsr::match_answer("Zelda", titles) == -1);
  CHECK(llm4dsr::match_answer("Halo", titles) == 0);  // ties: the first
  // "Halo Reach" protected: "Halo Wars" shares 1 of 3 words, below the default 0.5.
  CHECK(llm4dsr::match_answer("halo reach", titles, {false, true, false, false}) == -1);
  CHECK(llm4dsr::match_answer("halo reach", titles, {false, true, false, false}, 0.3) == 0);
  CHECK(llm4dsr::match_answer("", titles) == -1);
}

TEST_CASE("per-user chunks score each position once and corrections reach every window", "[denoiser]") {
  // One user, positions 0..6, windows of 4 (history 3 + target) ending at 3..6.
  const std::vector<int64_t> user = {11, 12, 13, 14, 15, 16, 17};
  SequenceSet windows;
  for (int64_t end = 3; end <= 6; ++end) {
    Sequence w;
    w.user_id = "u";
    w.offset = end - 3;
    w.items.assign(user.begin() + (end - 3), user.begin() + end + 1);
    w.labels.assign(4, 0);
    w.original_items = w.items;
    windows.push_back(w);
  }
  const auto chunks = llm4dsr::user_chunks(windows, 3, /*protect_targets=*/true);
  // History positions are 0..5; chunks [0,3) and [3,6).
  REQUIRE(chunks.sequences.size() == 2);
  CHECK(chunks.sequences[0] == std::vector<int64_t>{11, 12, 13});
  CHECK(chunks.sequences[1] == std::vector<int64_t>{14, 15, 16});
  CHECK(chunks.start == std::vector<int64_t>{0, 3});
  CHECK(chunks.protect[0] == std::vector<bool>{false, false, false});
  CHECK(chunks.protect[1] == std::vector<bool>{true, true, true});  // targets of windows 0..2
  const auto unprotected = llm4dsr::user_chunks(windows, 3, false);
  CHECK(unprotected.protect[1] == std::vector<bool>{false, false, false});

  // Replace position 1 by 99 and delete position 4.
  llm4dsr::SequenceReport a, b;
  a.corrections.push_back({1, 12, 0.9, "", 99, 1.0f, true});
  b.corrections.push_back({1, 15, 0.9, "", 0, 0.0f, false});
  const auto out = llm4dsr::apply_user_corrections(windows, unprotected, {a, b});
  REQUIRE(out.size() == 4);
  CHECK(out[0].items == std::vector<int64_t>{11, 99, 13, 14});
  CHECK(out[0].labels == std::vector<uint8_t>{0, 1, 0, 0});  // a clean item replaced now differs from the original
  CHECK(out[0].original_items == std::vector<int64_t>{11, 12, 13, 14});
  CHECK(out[1].items == std::vector<int64_t>{99, 13, 14, 15});  // position 4 is this window's target: kept
  CHECK(out[2].items == std::vector<int64_t>{13, 14, 16});      // deleted from the history
  CHECK(out[2].labels.size() == 3);
  CHECK(out[3].items == std::vector<int64_t>{14, 16, 17});

  // Per window: histories, and corrections written back with the target untouched.
  const auto histories = llm4dsr::window_histories(windows);
  CHECK(histories[1] == std::vector<int64_t>{12, 13, 14});
  llm4dsr::SequenceReport w;
  w.corrections.push_back({0, 12, 0.9, "", 0, 0.0f, false});
  const auto per_window = llm4dsr::apply_window_corrections({windows[1]}, {w});
  CHECK(per_window[0].items == std::vector<int64_t>{13, 14, 15});
  llm4dsr::SequenceReport bad;
  bad.corrections.push_back({3, 15, 0.9, "", 0, 0.0f, false});  // the target
  CHECK_THROWS_AS(llm4dsr::apply_window_corrections({windows[1]}, {bad}), Error);

  // Windows that disagree on a position are an error naming it.
  windows[1].items[0] = 42;
  CHECK_THROWS_WITH(llm4dsr::user_chunks(windows, 3, false), Catch::Contains("position 1"));
}

TEST_CASE("noise metrics: precision, recall, F1 and average precision on hand-computed cases", "[metrics]") {
  const std::vector<bool> noise = {true, false, true, false, false, true};
  const auto m = llm4dsr::detection_metrics({true, true, false, false, false, true}, noise);
  CHECK(m.true_positives == 2);
  CHECK(m.false_positives == 1);
  CHECK(m.false_negatives == 1);
  CHECK(m.precision == Approx(2.0 / 3));
  CHECK(m.recall == Approx(2.0 / 3));
  CHECK(m.f1 == Approx(2.0 / 3));
  CHECK(llm4dsr::detection_metrics({false, false}, {false, true}).f1 == 0.0);
  CHECK_THROWS_AS(llm4dsr::detection_metrics({true}, {true, false}), Error);

  // Ranking: 0.9 (noise), 0.8 (clean), 0.7 (noise), 0.3 (clean), 0.2 (noise), 0.1 (clean):
  // AP = (1/1 + 2/3 + 3/5) / 3.
  const std::vector<double> scores = {0.9, 0.8, 0.7, 0.3, 0.1, 0.2};
  CHECK(llm4dsr::average_precision(scores, {true, false, true, false, false, true}) ==
        Approx((1.0 + 2.0 / 3 + 3.0 / 5) / 3));
  // Ties form one step: both at 0.5, one of them noise: precision 1/2 at recall 1.
  CHECK(llm4dsr::average_precision({0.5, 0.5}, {true, false}) == Approx(0.5));
  CHECK(llm4dsr::average_precision({0.5, 0.1}, {false, false}) == 0.0);
  CHECK_THROWS_AS(llm4dsr::average_precision({std::nan("")}, {true}), Error);

  const auto h = llm4dsr::score_histogram({1.0, 0.1, 0.01, 0.0}, {true, false, true, false}, 2);
  CHECK(h.edges == std::vector<double>{-2.0, -1.0, 0.0});
  CHECK(h.noise_counts == std::vector<int64_t>{1, 1});  // 0.01 -> first bin, 1.0 -> last
  CHECK(h.clean_counts == std::vector<int64_t>{1, 1});  // 0 -> first bin, 0.1 -> second
}
