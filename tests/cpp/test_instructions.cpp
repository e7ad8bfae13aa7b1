// PromptTemplate, ChatFormat and InstructionBuilder: exact renderings written out by hand, the
// self-supervised pairs of LLM4DSR section 3.1, and tokenisation against independent encodes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/error.h"
#include "llm4dsr/text/chat_format.h"
#include "llm4dsr/text/instruction_builder.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"
#include "test_support.h"

using llm4dsr::Catalog;
using llm4dsr::ChatFormat;
using llm4dsr::Error;
using llm4dsr::InstructionBuilder;
using llm4dsr::InstructionOptions;
using llm4dsr::InstructionPair;
using llm4dsr::LossOn;
using llm4dsr::PromptTemplate;
using llm4dsr::Sequence;
using llm4dsr::SequenceSet;
using llm4dsr::SentencePieceTokenizer;
using llm4dsr::TokenId;
using llm4dsr::TokenizedInstruction;
using Catch::Matchers::Contains;
using Titles = std::vector<std::string>;

namespace {

const Titles kThree = {"Alien (1979)", "Toy Story (1995)", "Heat (1995)"};

// Catalogue of `n` items "Item 1".."Item n" (external ids "e1".."en"), with a few real-looking
// titles mixed in so that tokenisation sees varied text.
Catalog make_catalog(int64_t n) {
  static const Titles kWords = {"Haunted Cellar", "Starship Odyssey", "Midnight Jazz", "Desert Heist",
                                "Crimson Tide", "Garden Party", "Frozen Peak", "Neon Alley"};
  Catalog c;
  for (int64_t i = 1; i <= n; ++i) {
    const int64_t id = c.add("e" + std::to_string(i));
    c.set_title(id, kWords[static_cast<size_t>(i) % kWords.size()] + " " + std::to_string(i));
  }
  return c;
}

Sequence window(std::vector<int64_t> items, const std::string& user = "u") {
  Sequence s;
  s.user_id = user;
  s.items = std::move(items);
  return s;
}

// `count` windows of length 2..11 over items 1..num_items, deterministic.
SequenceSet make_windows(size_t count, int64_t num_items) {
  SequenceSet out;
  for (size_t w = 0; w < count; ++w) {
    std::vector<int64_t> items;
    const size_t length = 2 + w % 10;
    for (size_t p = 0; p < length; ++p) items.push_back(1 + static_cast<int64_t>((w * 7 + p * 3) % num_items));
    out.push_back(window(items, "u" + std::to_string(w)));
  }
  return out;
}

std::string llama2_model_path() {
  const std::string dir = llm4dsr::testing::shared_data_dir();
  if (dir.empty()) return {};
  const std::string path = dir + "/llama2-tokenizer/tokenizer.model";
  return std::filesystem::exists(path) ? path : std::string();
}

// A small sentencepiece model trained on rendered prompts of both templates, so that template
// words and titles are in its vocabulary.
std::unique_ptr<SentencePieceTokenizer> trained_tokenizer() {
  const Catalog catalog = make_catalog(60);
  const SequenceSet windows = make_windows(40, 60);
  std::vector<std::string> texts;
  for (const char* name : {"llm4dsr-paper", "llm4dsr-alpaca"}) {
    InstructionOptions o;
    o.template_name = name;
    for (const auto& pair : InstructionBuilder(o).make_pairs(windows, catalog)) {
      texts.push_back(pair.prompt + pair.response);
    }
  }
  llm4dsr::SentencePieceTrainOptions options;
  options.vocab_size = 600;
  return SentencePieceTokenizer::train(texts, options);
}

std::vector<int64_t> widen(const std::vector<TokenId>& ids) { return {ids.begin(), ids.end()}; }
std::vector<TokenId> narrow(std::vector<int64_t>::const_iterator begin, std::vector<int64_t>::const_iterator end) {
  std::vector<TokenId> out;
  for (auto it = begin; it != end; ++it) out.push_back(static_cast<TokenId>(*it));
  return out;
}

}  // namespace

TEST_CASE("built-in templates render a 3-item sequence exactly", "[instructions]") {
  SECTION("llm4dsr-paper") {
    const PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
    CHECK(t.render_prompt(kThree) ==
          "The user has interacted with the following items before: \"Alien (1979)\", \"Toy Story (1995)\", "
          "\"Heat (1995)\"\n");
    CHECK(t.render_response("Toy Story (1995)", "Aliens (1986)") ==
          "Noise Items: \"Toy Story (1995)\"\nSuggested Items: \"Aliens (1986)\"");
    CHECK(t.render_clean_response() == "None");
    CHECK(t.scoring_prefix(kThree) ==
          "The user has interacted with the following items before: \"Alien (1979)\", \"Toy Story (1995)\", "
          "\"Heat (1995)\"\nNoise Items: \"");
    CHECK(t.generation_prompt(kThree, "Toy Story (1995)") ==
          "The user has interacted with the following items before: \"Alien (1979)\", \"Toy Story (1995)\", "
          "\"Heat (1995)\"\nNoise Items: \"Toy Story (1995)\"\nSuggested Items: \"");
    CHECK(t.noise_suffix() == "\"\nSuggested Items: \"");
    CHECK(t.suggestion_suffix() == "\"");
    CHECK(t.closing_delimiter() == "\"");
  }
  SECTION("llm4dsr-alpaca (the authors' released layout)") {
    const PromptTemplate t = PromptTemplate::get("llm4dsr-alpaca");
    const std::string expected_prompt =
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. \n"
        "\n"
        "### Instruction:\n"
        "You are to analyze a list of item titles provided by a user. Your task is to identify any item(s) that do "
        "not align with the main interests reflected by the majority of the items. After identifying these noise "
        "items, suggest alternative items that better match the user's interests.\n"
        "\n"
        "### Input:\n"
        "User Interaction Sequence: \"Alien (1979)\", \"Toy Story (1995)\", \"Heat (1995)\"\n"
        " \n"
        "\n"
        "### Response:\n";
    CHECK(t.render_prompt(kThree) == expected_prompt);
    CHECK(t.render_text(kThree, "Toy Story (1995)", "Aliens (1986)") ==
          expected_prompt + "Noise Items: \"Toy Story (1995)\"\nSuggested Replacements: \"Aliens (1986)\"");
    CHECK(t.scoring_prefix(kThree) == expected_prompt + "Noise Items: \"");
    CHECK(t.generation_prompt(kThree, "Heat (1995)") ==
          expected_prompt + "Noise Items: \"Heat (1995)\"\nSuggested Replacements: \"");
  }
  SECTION("chat formats wrap the prompt; the response follows the opened assistant turn") {
    const PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
    const std::string body =
        "The user has interacted with the following items before: \"Alien (1979)\", \"Toy Story (1995)\", "
        "\"Heat (1995)\"\n";
    CHECK(t.render_prompt(kThree, ChatFormat::get("chatml")) ==
          "<|im_start|>user\n" + body + "<|im_end|>\n<|im_start|>assistant\n");
    CHECK(t.render_prompt(kThree, ChatFormat::get("smollm2")) ==
          "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\n" +
              body + "<|im_end|>\n<|im_start|>assistant\n");
    CHECK(t.render_prompt(kThree, ChatFormat::chatml("Find the odd item.")) ==
          "<|im_start|>system\nFind the odd item.<|im_end|>\n<|im_start|>user\n" + body +
              "<|im_end|>\n<|im_start|>assistant\n");
    CHECK(t.render_prompt(kThree, ChatFormat::get("none")) == body);
    CHECK(t.scoring_prefix(kThree, ChatFormat::get("chatml")) ==
          "<|im_start|>user\n" + body + "<|im_end|>\n<|im_start|>assistant\nNoise Items: \"");
    CHECK(ChatFormat::get("none").is_none());
    CHECK_FALSE(ChatFormat::get("chatml").add_bos);
    CHECK_THROWS_WITH(ChatFormat::get("llama3"), Contains("unknown chat format 'llama3'") && Contains("'smollm2'"));
  }
}

TEST_CASE("scoring prefix + title + closing text reproduce the training text", "[instructions]") {
  const Titles history = {"Frozen Peak", "Say \"Cheese\"", "Neon Alley 2", "Garden Party"};
  for (const auto& name : PromptTemplate::names()) {
    const PromptTemplate t = PromptTemplate::get(name);
    for (const auto& chat : {ChatFormat::get("none"), ChatFormat::get("smollm2")}) {
      INFO(name << " / " << chat.name);
      const std::string text = t.render_text(history, "Say \"Cheese\"", "Midnight Jazz", chat);
      const std::string prefix = t.scoring_prefix(history, chat);
      CHECK(prefix + t.sanitize_title("Say \"Cheese\"") + t.noise_suffix() + "Midnight Jazz" + t.suggestion_suffix() ==
            text);
      CHECK(t.generation_prompt(history, "Say \"Cheese\"", chat) ==
            prefix + t.sanitize_title("Say \"Cheese\"") + t.noise_suffix());
      CHECK(t.render_prompt(history, chat) + t.render_response("Say \"Cheese\"", "Midnight Jazz") == text);
      // The closing delimiter right after the prefix finds the end of the title.
      const size_t end = text.find(t.closing_delimiter(), prefix.size());
      CHECK(text.substr(prefix.size(), end - prefix.size()) == "Say 'Cheese'");
    }
  }
}

TEST_CASE("titles are sanitised for the delimiters", "[instructions]") {
  const PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
  CHECK(t.sanitize_title("Barbie 12\" Doll") == "Barbie 12' Doll");
  CHECK(t.sanitize_title("  Two\nLines\tand\rtabs ") == "Two Lines and tabs");
  CHECK(t.sanitize_title("Amélie (2001)") == "Amélie (2001)");
  CHECK(t.sanitize_title("\"\"") == "''");
  CHECK(t.render_history({"A \"quoted\" word", "B"}) == "\"A 'quoted' word\", \"B\"");
  CHECK_THROWS_WITH(t.render_history({"ok", " \n "}),
                    Contains("history position 1") && Contains("empty after sanitising"));
  CHECK_THROWS_WITH(t.render_history({}), Contains("no titles"));
  CHECK_THROWS_WITH(t.render_response("", "x"), Contains("empty after sanitising"));

  PromptTemplate brackets = t;
  brackets.name = "brackets";
  brackets.quote_open = "[";
  brackets.quote_close = "]";
  brackets.separator = " | ";
  brackets.quote_substitute = ")";
  CHECK(brackets.render_history({"Dune [Part 1]", "Heat"}) == "[Dune [Part 1)] | [Heat]");
  CHECK(brackets.closing_delimiter() == "]");

  PromptTemplate double_close = t;
  double_close.name = "double-close";
  double_close.quote_open = "[[";
  double_close.quote_close = "]]";
  CHECK_THROWS_WITH(double_close.sanitize_title("Ends with ]"), Contains("would seem to end early"));
}

TEST_CASE("user templates: placeholders, validation, registry and JSON", "[instructions]") {
  PromptTemplate t;
  t.name = "test-custom";
  t.version = 3;
  t.prompt = "History {{{history}}} ->\n";
  t.response = "odd one: {noise}; better: {suggestion}.";
  t.quote_open = "<";
  t.quote_close = ">";
  t.separator = " ";
  t.quote_substitute = "}";
  REQUIRE_NOTHROW(t.validate());
  CHECK(t.render_text({"a>b", "c"}, "c", "d") == "History {<a}b> <c>} ->\nodd one: <c>; better: <d>.");
  CHECK(t.scoring_prefix({"x"}) == "History {<x>} ->\nodd one: <");
  CHECK(t.noise_suffix() == ">; better: <");
  CHECK(t.suggestion_suffix() == ">.");

  SECTION("placeholder errors") {
    PromptTemplate bad = t;
    bad.prompt = "no history here";
    CHECK_THROWS_WITH(bad.validate(), Contains("'test-custom'") && Contains("field 'prompt'") &&
                                          Contains("exactly one {history}"));
    bad = t;
    bad.prompt = "{history} and again {history}";
    CHECK_THROWS_WITH(bad.validate(), Contains("found {history}, {history}"));
    bad = t;
    bad.response = "{suggestion} before {noise}";
    CHECK_THROWS_WITH(bad.validate(), Contains("{noise} then {suggestion}") && Contains("found {suggestion}, {noise}"));
    bad = t;
    bad.response = "{noise} {suggestion} {user}";
    CHECK_THROWS_WITH(bad.validate(), Contains("unknown placeholder {user}"));
    bad = t;
    bad.prompt = "{history";
    CHECK_THROWS_WITH(bad.validate(), Contains("no closing '}'"));
    bad = t;
    bad.prompt = "{history} }";
    CHECK_THROWS_WITH(bad.validate(), Contains("lone '}'"));
    bad = t;
    bad.quote_substitute = "x>";
    CHECK_THROWS_WITH(bad.validate(), Contains("quote_substitute 'x>' contains quote_close '>'"));
    bad = t;
    bad.quote_open = bad.quote_close = "";
    bad.response = "{noise}{suggestion}";
    CHECK_THROWS_WITH(bad.validate(), Contains("nothing separates {noise}"));
  }

  SECTION("unquoted titles end at the literal text that follows the noise") {
    PromptTemplate plain = t;
    plain.quote_open = plain.quote_close = "";
    plain.separator = "; ";
    CHECK(plain.closing_delimiter() == "; better: ");
    CHECK(plain.render_history({"a>b", "c"}) == "a>b; c");
  }

  SECTION("registry") {
    const auto names = PromptTemplate::names();
    CHECK(std::count(names.begin(), names.end(), "llm4dsr-paper") == 1);
    CHECK(std::count(names.begin(), names.end(), "llm4dsr-alpaca") == 1);
    CHECK_THROWS_WITH(PromptTemplate::get("llm4dsr-nope"),
                      Contains("unknown prompt template 'llm4dsr-nope'") && Contains("'llm4dsr-alpaca'"));
    PromptTemplate::register_template(t, /*replace=*/true);
    CHECK(PromptTemplate::get("test-custom").version == 3);
    CHECK_THROWS_WITH(PromptTemplate::register_template(t), Contains("already registered"));
    PromptTemplate builtin = PromptTemplate::get("llm4dsr-paper");
    CHECK_THROWS_WITH(PromptTemplate::register_template(builtin, true), Contains("built-in"));
    PromptTemplate invalid = t;
    invalid.name = "test-invalid";
    invalid.response = "{noise}";
    CHECK_THROWS_AS(PromptTemplate::register_template(invalid), Error);
    CHECK_THROWS(PromptTemplate::get("test-invalid"));
  }

  SECTION("JSON round trip and errors") {
    const PromptTemplate back = PromptTemplate::from_json(t.to_json());
    CHECK(back.name == t.name);
    CHECK(back.version == 3);
    CHECK(back.prompt == t.prompt);
    CHECK(back.response == t.response);
    CHECK(back.quote_open == "<");
    CHECK(back.quote_substitute == "}");
    CHECK(back.render_text({"a"}, "a", "b") == t.render_text({"a"}, "a", "b"));
    const PromptTemplate alpaca = PromptTemplate::get("llm4dsr-alpaca");
    CHECK(PromptTemplate::from_json(alpaca.to_json()).render_prompt(kThree) == alpaca.render_prompt(kThree));
    CHECK_THROWS_WITH(PromptTemplate::from_json(R"({"name": "x", "prompt": "{history}"})"),
                      Contains("missing required key 'response'"));
    CHECK_THROWS_WITH(
        PromptTemplate::from_json(R"({"name": "x", "prompt": "{history}", "response": "{noise}{suggestion}", "q": 1})"),
        Contains("unknown key 'q'"));
    CHECK_THROWS_WITH(PromptTemplate::from_json(R"({"name": "x", "prompt": 3, "response": "{noise}{suggestion}"})"),
                      Contains("'prompt' must be a string"));
    CHECK_THROWS_WITH(PromptTemplate::from_json("[1, 2"), Contains("prompt template JSON"));
  }
}

TEST_CASE("make_pairs: one replaced position per window, noise differs from the original", "[instructions]") {
  const Catalog catalog = make_catalog(50);
  const SequenceSet windows = make_windows(300, 50);
  const InstructionBuilder builder;  // llm4dsr-paper, no cap, no clean examples
  const PromptTemplate& t = builder.prompt_template();
  const auto pairs = builder.make_pairs(windows, catalog);
  REQUIRE(pairs.size() == windows.size());
  std::map<int64_t, int64_t> position_counts_len5;
  for (size_t k = 0; k < pairs.size(); ++k) {
    const InstructionPair& p = pairs[k];
    const Sequence& w = windows[static_cast<size_t>(p.window_index)];
    INFO("pair " << k);
    CHECK(p.window_index == static_cast<int64_t>(k));
    REQUIRE_FALSE(p.is_clean());
    REQUIRE(p.items.size() == w.items.size());
    size_t changed = 0;
    for (size_t i = 0; i < w.items.size(); ++i) changed += p.items[i] != w.items[i];
    CHECK(changed == 1);
    CHECK(p.items[static_cast<size_t>(p.position)] == p.noise_item);
    CHECK(w.items[static_cast<size_t>(p.position)] == p.original_item);
    CHECK(p.noise_item != p.original_item);
    CHECK(p.noise_item >= 1);
    CHECK(p.noise_item <= catalog.size());
    CHECK(p.noise_title == catalog.title(p.noise_item));
    CHECK(p.original_title == catalog.title(p.original_item));
    for (size_t i = 0; i < p.items.size(); ++i) CHECK(p.titles[i] == catalog.title(p.items[i]));
    CHECK(p.response == "Noise Items: \"" + p.noise_title + "\"\nSuggested Items: \"" + p.original_title + "\"");
    CHECK(p.prompt == t.render_prompt(p.titles));
    if (w.items.size() == 5) ++position_counts_len5[p.position];
  }
  // 30 windows of length 5: every position is drawn at least once (P(miss) < 5 * 0.8^30 ~ 0.6%;
  // fixed seed, so this is deterministic).
  CHECK(position_counts_len5.size() == 5);
}

TEST_CASE("make_pairs: seeded, capped, clean fraction", "[instructions]") {
  const Catalog catalog = make_catalog(40);
  const SequenceSet windows = make_windows(200, 40);

  SECTION("same seed, same pairs; another seed, other pairs") {
    InstructionOptions o;
    o.seed = 7;
    const auto a = InstructionBuilder(o).make_pairs(windows, catalog);
    const auto b = InstructionBuilder(o).make_pairs(windows, catalog);
    o.seed = 8;
    const auto c = InstructionBuilder(o).make_pairs(windows, catalog);
    size_t same_ab = 0, same_ac = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      same_ab += a[i].position == b[i].position && a[i].noise_item == b[i].noise_item && a[i].prompt == b[i].prompt;
      same_ac += a[i].position == c[i].position && a[i].noise_item == c[i].noise_item;
    }
    CHECK(same_ab == a.size());
    CHECK(same_ac < a.size() / 4);
  }

  SECTION("max_pairs samples distinct windows; a window's pair does not depend on the cap") {
    InstructionOptions o;
    o.max_pairs = 37;
    const auto capped = InstructionBuilder(o).make_pairs(windows, catalog);
    REQUIRE(capped.size() == 37);
    std::set<int64_t> seen;
    for (size_t i = 0; i < capped.size(); ++i) {
      seen.insert(capped[i].window_index);
      if (i) CHECK(capped[i - 1].window_index < capped[i].window_index);
    }
    CHECK(seen.size() == 37);
    CHECK(*seen.rbegin() > 100);  // not simply the first windows
    o.max_pairs = 0;
    const auto all = InstructionBuilder(o).make_pairs(windows, catalog);
    for (const auto& p : capped) {
      const auto& q = all[static_cast<size_t>(p.window_index)];
      CHECK(p.position == q.position);
      CHECK(p.noise_item == q.noise_item);
    }
    o.max_pairs = 5000;  // above the number of windows: every window once
    CHECK(InstructionBuilder(o).make_pairs(windows, catalog).size() == windows.size());
    o.max_pairs = 37;
    o.seed = 43;
    const auto other = InstructionBuilder(o).make_pairs(windows, catalog);
    std::set<int64_t> other_seen;
    for (const auto& p : other) other_seen.insert(p.window_index);
    CHECK(other_seen != seen);
  }

  SECTION("clean_fraction leaves round(f * pairs) windows as they are, answered 'None'") {
    InstructionOptions o;
    o.clean_fraction = 0.25;
    o.max_pairs = 90;
    const auto pairs = InstructionBuilder(o).make_pairs(windows, catalog);
    REQUIRE(pairs.size() == 90);
    size_t clean = 0;
    for (const auto& p : pairs) {
      if (!p.is_clean()) continue;
      ++clean;
      CHECK(p.response == "None");
      CHECK(p.items == windows[static_cast<size_t>(p.window_index)].items);
      CHECK(p.noise_item == 0);
      CHECK(p.original_item == 0);
      CHECK(p.noise_title.empty());
    }
    CHECK(clean == 23);  // round(0.25 * 90) = 22.5 -> 23 (half away from zero)
    o.clean_fraction = 1.0;
    for (const auto& p : InstructionBuilder(o).make_pairs(windows, catalog)) CHECK(p.is_clean());
  }

  SECTION("noise is never an untitled item") {
    Catalog partly = make_catalog(40);
    for (int64_t id = 21; id <= 40; ++id) partly.set_title(id, "");
    const SequenceSet low = make_windows(200, 20);  // windows use items 1..20 only
    for (const auto& p : InstructionBuilder().make_pairs(low, partly)) {
      CHECK(p.noise_item <= 20);
      CHECK(p.noise_item != p.original_item);
    }
  }
}

TEST_CASE("make_pairs and options: errors", "[instructions]") {
  const Catalog catalog = make_catalog(10);
  const InstructionBuilder builder;
  CHECK_THROWS_WITH(builder.make_pairs({}, catalog), Contains("no windows"));
  CHECK_THROWS_WITH(builder.make_pairs({window({1, 2}), window({}, "bob")}, catalog),
                    Contains("window 1 (user 'bob') is empty"));
  CHECK_THROWS_WITH(builder.make_pairs({window({1, 11}, "amy")}, catalog),
                    Contains("window 0 (user 'amy'), position 1: item id 11 is not in the catalogue (ids 1..10)"));
  CHECK_THROWS_WITH(builder.make_pairs({window({0, 1})}, catalog), Contains("item id 0 is not in the catalogue"));
  Catalog untitled = make_catalog(10);
  untitled.set_title(3, "");
  CHECK_THROWS_WITH(builder.make_pairs({window({1, 2}), window({3, 4, 5})}, untitled),
                    Contains("window 1") && Contains("item 3 (external id 'e3') has no title"));
  Catalog one;
  one.set_title(one.add("only"), "The Only One");
  CHECK_THROWS_WITH(builder.make_pairs({window({1})}, one), Contains("at least 2"));

  InstructionOptions o;
  o.template_name = "nope";
  CHECK_THROWS_WITH(InstructionBuilder(o), Contains("unknown prompt template 'nope'"));
  o = {};
  o.chat_format = "nope";
  CHECK_THROWS_WITH(InstructionBuilder(o), Contains("unknown chat format 'nope'"));
  o = {};
  o.clean_fraction = 1.5;
  CHECK_THROWS_WITH(InstructionBuilder(o), Contains("clean_fraction must be in [0, 1], got 1.5"));
  o = {};
  o.max_pairs = -1;
  CHECK_THROWS_WITH(InstructionBuilder(o), Contains("max_pairs must be >= 0"));
  o = {};
  o.max_prompt_tokens = -5;
  CHECK_THROWS_WITH(InstructionBuilder(o), Contains("max_prompt_tokens"));
  CHECK(llm4dsr::parse_loss_on("all") == LossOn::kAll);
  CHECK(llm4dsr::to_string(LossOn::kResponse) == "response");
  CHECK_THROWS_WITH(llm4dsr::parse_loss_on("prompt"), Contains("unknown loss_on 'prompt'"));
}

namespace {

// The checks every tokenised pair must pass, against independent encodes of its texts.
void check_tokenized(const TokenizedInstruction& x, const InstructionPair& pair, const llm4dsr::Tokenizer& tok,
                     LossOn loss_on, bool bos, bool eos) {
  const size_t n = x.input_ids.size();
  REQUIRE(x.labels.size() == n);
  REQUIRE(x.loss_mask.size() == n);
  const auto p = static_cast<size_t>(x.prompt_length);
  const std::vector<TokenId> prompt_ids = tok.encode(x.prompt, bos, false);
  REQUIRE(p == prompt_ids.size());
  CHECK(std::vector<int64_t>(x.input_ids.begin(), x.input_ids.begin() + static_cast<std::ptrdiff_t>(p)) ==
        widen(prompt_ids));
  std::vector<TokenId> response_ids = tok.encode_in_context(x.prompt, pair.response);
  if (eos) response_ids.push_back(tok.eos_id());
  CHECK(std::vector<int64_t>(x.input_ids.begin() + static_cast<std::ptrdiff_t>(p), x.input_ids.end()) ==
        widen(response_ids));
  if (bos) CHECK(x.input_ids.front() == tok.bos_id());
  if (eos) CHECK(x.input_ids.back() == tok.eos_id());
  // The ids decode to the texts: no title is cut, the response is whole.
  CHECK(tok.decode(narrow(x.input_ids.begin(), x.input_ids.begin() + static_cast<std::ptrdiff_t>(p))) == x.prompt);
  CHECK(tok.decode(narrow(x.input_ids.begin() + static_cast<std::ptrdiff_t>(p), x.input_ids.end())) == pair.response);
  for (size_t i = 0; i < n; ++i) {
    const bool in_loss = loss_on == LossOn::kAll || i >= p;
    CHECK(x.labels[i] == (in_loss ? x.input_ids[i] : llm4dsr::kIgnoreIndex));
    CHECK(x.loss_mask[i] == (in_loss ? 1 : 0));
  }
}

void tokenization_suite(const llm4dsr::Tokenizer& tok) {
  const Catalog catalog = make_catalog(60);
  const SequenceSet windows = make_windows(30, 60);
  for (const char* name : {"llm4dsr-paper", "llm4dsr-alpaca"}) {
    for (const LossOn loss_on : {LossOn::kResponse, LossOn::kAll}) {
      INFO(name << " loss_on=" << llm4dsr::to_string(loss_on));
      InstructionOptions o;
      o.template_name = name;
      o.loss_on = loss_on;
      o.max_prompt_tokens = 0;
      o.clean_fraction = 0.2;
      const InstructionBuilder builder(o);
      const auto pairs = builder.make_pairs(windows, catalog);
      const auto batch = builder.tokenize(pairs, tok);
      REQUIRE(batch.size() == pairs.size());
      for (size_t i = 0; i < pairs.size(); ++i) {
        INFO("pair " << i);
        CHECK(batch[i].dropped_items == 0);
        CHECK(batch[i].prompt == pairs[i].prompt);
        check_tokenized(batch[i], pairs[i], tok, loss_on, true, true);
        if (loss_on == LossOn::kAll) {
          CHECK(std::count(batch[i].labels.begin(), batch[i].labels.end(), llm4dsr::kIgnoreIndex) == 0);
        }
      }
    }
  }

  SECTION("no BOS / EOS when asked, and none for ChatML") {
    InstructionOptions o;
    o.add_bos = false;
    o.add_eos = false;
    const InstructionBuilder builder(o);
    const auto pairs = builder.make_pairs(windows, catalog);
    check_tokenized(builder.tokenize_one(pairs[3], tok), pairs[3], tok, LossOn::kResponse, false, false);
    InstructionOptions chat;
    chat.chat_format = "chatml";
    const InstructionBuilder chat_builder(chat);
    const auto chat_pairs = chat_builder.make_pairs(windows, catalog);
    check_tokenized(chat_builder.tokenize_one(chat_pairs[3], tok), chat_pairs[3], tok, LossOn::kResponse, false, true);
  }

  SECTION("texts are rendered by the tokenizing builder, not taken from the pair") {
    InstructionOptions alpaca;
    alpaca.template_name = "llm4dsr-alpaca";
    const auto pairs = InstructionBuilder(alpaca).make_pairs(windows, catalog);
    const InstructionBuilder paper;
    const auto x = paper.tokenize_one(pairs[1], tok);
    const PromptTemplate& t = paper.prompt_template();
    CHECK(x.prompt == t.render_prompt(pairs[1].titles));
    CHECK(tok.decode(narrow(x.input_ids.begin() + x.prompt_length, x.input_ids.end())) ==
          t.render_response(pairs[1].noise_title, pairs[1].original_title));
  }

  SECTION("truncation drops the oldest whole items, never the replaced one, never the response") {
    // A 10-item window whose 3rd item (position 2) gets replaced.
    InstructionPair pair;
    {
      SequenceSet ten = {window({1, 2, 3, 4, 5, 6, 7, 8, 9, 10})};
      InstructionOptions o;
      o.max_prompt_tokens = 0;
      for (uint64_t seed = 0;; ++seed) {
        o.seed = seed;
        pair = InstructionBuilder(o).make_pairs(ten, catalog)[0];
        if (pair.position == 2) break;
      }
    }
    InstructionOptions o;
    o.max_prompt_tokens = 0;
    const auto full = InstructionBuilder(o).tokenize_one(pair, tok);
    const auto whole = static_cast<int64_t>(full.prompt_length);
    const PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
    const auto shortest = static_cast<int64_t>(tok.encode(t.render_prompt({pair.noise_title}), true).size());
    REQUIRE(shortest < whole / 2);
    for (const int64_t limit : {whole, whole - 1, whole / 2, shortest}) {
      INFO("limit " << limit);
      o.max_prompt_tokens = limit;
      const InstructionBuilder builder(o);
      const auto x = builder.tokenize_one(pair, tok);
      check_tokenized(x, pair, tok, LossOn::kResponse, true, true);
      CHECK(x.prompt_length <= limit);
      const int64_t k = x.dropped_items;
      // The fewest: one item fewer dropped does not fit (computed independently).
      if (k > 0) CHECK(static_cast<int64_t>(tok.encode(builder.render_prompt(pair, k - 1), true).size()) > limit);
      // Which titles remain: positions 0, 1, 3, 4, ... are dropped oldest first; position 2 stays.
      std::vector<size_t> droppable = {0, 1, 3, 4, 5, 6, 7, 8, 9};
      std::set<size_t> dropped(droppable.begin(), droppable.begin() + k);
      Titles kept;
      for (size_t i = 0; i < pair.titles.size(); ++i) {
        if (!dropped.count(i)) kept.push_back(pair.titles[i]);
      }
      CHECK(x.prompt == builder.prompt_template().render_prompt(kept));
      CHECK_THAT(x.prompt, Contains("\"" + pair.noise_title + "\""));
    }
    o.max_prompt_tokens = whole - 1;
    CHECK(InstructionBuilder(o).tokenize_one(pair, tok).dropped_items >= 1);
    // A limit below the shortest prompt (only the replaced item left).
    o.max_prompt_tokens = shortest - 1;
    CHECK_THROWS_WITH(InstructionBuilder(o).tokenize_one(pair, tok),
                      Contains("window 0") && Contains("only 1 item(s) left") && Contains("raise max_prompt_tokens"));
    CHECK_THROWS_WITH(InstructionBuilder(o).tokenize({pair, pair}, tok), Contains("pair 0: "));
  }

}

}  // namespace

TEST_CASE("tokenize with a trained sentencepiece model", "[instructions]") {
  const auto tok = trained_tokenizer();
  tokenization_suite(*tok);
}

TEST_CASE("tokenize with Llama-2's tokenizer.model", "[instructions]") {
  const std::string path = llama2_model_path();
  if (path.empty()) {
    WARN("../shared/data/llama2-tokenizer absent: skipped");
    return;
  }
  const auto tok = SentencePieceTokenizer::from_file(path);
  tokenization_suite(*tok);
  // Hand-checked boundary: after the opening quote the title's first word has no "▁" (Llama id
  // 1576 "The", not 450 "▁The"), which is what a scorer must read.
  const PromptTemplate t = PromptTemplate::get("llm4dsr-paper");
  const std::string prefix = t.scoring_prefix({"The Rock (1996)", "Heat (1995)"});
  CHECK(tok->encode_in_context(prefix, "The Rock (1996)").front() == 1576);

  // A prompt ending in a space: Llama encodes "Answer: " alone as ... ":" "▁" but "Answer: Noise"
  // as ... ":" "▁No" "ise", so the pair does not split into x and z.
  PromptTemplate spaced;
  spaced.name = "test-space";
  spaced.prompt = "Items: {history}. Answer: ";
  spaced.response = "Noise Items: {noise} Suggested Items: {suggestion}";
  InstructionOptions o;
  o.prompt_template = spaced;
  const InstructionBuilder builder(o);
  const auto pairs = builder.make_pairs(make_windows(3, 60), make_catalog(60));
  CHECK_THROWS_WITH(builder.tokenize_one(pairs[0], *tok),
                    Contains("window 0") && Contains("merges with the response") && Contains("'test-space'"));
}
