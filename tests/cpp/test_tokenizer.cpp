// SentencePieceTokenizer against Llama-2's tokenizer.model (expected ids computed with the Python
// sentencepiece package) and against models trained in the test.
#include <catch2/catch.hpp>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "llm4dsr/error.h"
#include "llm4dsr/text/tokenizer.h"
#include "test_support.h"

using llm4dsr::Error;
using llm4dsr::SentencePieceTokenizer;
using llm4dsr::SentencePieceTrainOptions;
using llm4dsr::TokenId;
using Catch::Matchers::Contains;
using Ids = std::vector<TokenId>;

namespace {

std::string llama2_model_path() {
  const std::string dir = llm4dsr::testing::shared_data_dir();
  if (dir.empty()) return {};
  const std::string path = dir + "/llama2-tokenizer/tokenizer.model";
  return std::filesystem::exists(path) ? path : std::string();
}

// Titles in the style of the catalogues, ASCII plus a few Latin-1 letters.
std::vector<std::string> small_corpus() {
  std::vector<std::string> titles = {
      "Toy Story (1995)",           "GoldenEye (1995)",        "Four Rooms (1995)",
      "Get Shorty (1995)",          "Copycat (1995)",          "Twelve Monkeys (1995)",
      "Babe (1995)",                "Dead Man Walking (1995)", "Richard III (1995)",
      "Seven (Se7en) (1995)",       "The Usual Suspects (1995)", "Mighty Aphrodite (1995)",
      "Postino, Il (1994)",         "Mr. Holland's Opus (1995)", "French Twist (Gazon maudit) (1995)",
      "From Dusk Till Dawn (1996)", "White Balloon, The (1995)", "Antonia's Line (1995)",
      "Angels and Insects (1995)",  "Muppet Treasure Island (1996)", "Braveheart (1995)",
      "Taxi Driver (1976)",         "Rumble in the Bronx (1995)", "Birdcage, The (1996)",
      "Brothers McMullen, The (1995)", "Bad Boys (1995)",     "Apollo 13 (1995)",
      "Batman Forever (1995)",      "Belle de jour (1967)",    "Crimson Tide (1995)",
      "Amélie (2001)",              "Léon (1994)",             "Crème brûlée gift set",
      "Hydrating face cream, 50 ml", "Nail polish remover pads", "Shampoo and conditioner duo",
  };
  return titles;
}

SentencePieceTrainOptions small_options(int64_t vocab_size = 400) {
  SentencePieceTrainOptions options;
  options.vocab_size = vocab_size;
  return options;
}

}  // namespace

TEST_CASE("llama2 tokenizer.model encodes as the sentencepiece package does", "[tokenizer]") {
  const std::string path = llama2_model_path();
  if (path.empty()) {
    WARN("../shared/data/llama2-tokenizer absent: skipped");
    return;
  }
  const auto tok = SentencePieceTokenizer::from_file(path);

  SECTION("ids, BOS and EOS") {
    CHECK(tok->encode("Hello world!", true) == Ids{1, 15043, 3186, 29991});
    CHECK(tok->encode("Hello world!") == Ids{15043, 3186, 29991});
    CHECK(tok->encode("Hello world!", true, true) == Ids{1, 15043, 3186, 29991, 2});
    // Python: sp.encode("日本語 café") == [29871, 30325, 30346, 30968, 274, 28059]
    CHECK(tok->encode("日本語 café") == Ids{29871, 30325, 30346, 30968, 274, 28059});
    CHECK(tok->encode("").empty());
  }

  SECTION("decode round trip") {
    for (const std::string text : {"Hello world!", "Toy Story (1995)", "Amélie (2001)", "日本語 café",
                                   "  two  spaces ", "tab\tand\nnewline", "emoji 🙂 and \xc3\xa9"}) {
      CHECK(tok->decode(tok->encode(text)) == text);
      // Control pieces decode to nothing.
      CHECK(tok->decode(tok->encode(text, true, true)) == text);
      CHECK(tok->encode_in_context("", text) == tok->encode(text));
    }
    CHECK(tok->decode({1, 15043, 3186, 29991}) == "Hello world!");
  }

  SECTION("special ids and pieces") {
    CHECK(tok->vocab_size() == 32000);
    CHECK(tok->unk_id() == 0);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
    CHECK(tok->pad_id() == 2);  // Llama-2 has no <pad>: falls back to </s>
    CHECK(tok->kind() == "sentencepiece");
    CHECK(tok->id_to_piece(15043) == "\xe2\x96\x81Hello");
    CHECK(tok->id_to_piece(0) == "<unk>");
    CHECK(tok->id_to_piece(1) == "<s>");
    CHECK(tok->id_to_piece(31999) == "\xe7\xbb\x99");  // 给, the last piece
    CHECK(tok->piece_to_id("\xe2\x96\x81Hello") == 15043);
    CHECK(tok->piece_to_id("</s>") == 2);
    CHECK(tok->piece_to_id("no such piece") == 0);
  }

  SECTION("encode_in_context") {
    // Python: pieces of "Items: 'The Godfather" are ▁Items : ▁' The ▁God father; alone "The" is ▁The.
    CHECK(tok->encode("The Godfather") == Ids{450, 4177, 22212});
    CHECK(tok->encode_in_context("Items: '", "The Godfather") == Ids{1576, 4177, 22212});
    CHECK(tok->encode_in_context("Items:", "The Godfather") == Ids{1576, 4177, 22212});
    CHECK(tok->encode_in_context("Items: ", "The Godfather") == Ids{450, 4177, 22212});
    CHECK(tok->encode_in_context("watched \"", "Toy Story") == Ids{1762, 29891, 13740});
    // "foo" + "bar" is ▁fo(0,2) obar(2,6): the straddling piece starts the tail.
    CHECK(tok->encode_in_context("foo", "bar") == Ids{22872});
    CHECK(tok->encode("bar") == Ids{2594});
    // A leading space of the text is its own: "Items: " + " Toy" is ▁Items : ▁ ▁Toy.
    CHECK(tok->encode_in_context("Items: ", " Toy") == Ids{29411});
    CHECK(tok->encode_in_context("", "日本") == tok->encode("日本"));
    CHECK(tok->encode_in_context("a", "日本") == Ids{30325, 30346});
    CHECK(tok->encode_in_context("Items: ", "").empty());
    CHECK(tok->encode_in_context("", "").empty());
    // Byte fallback: U+20000 is <0xF0>(0,0) <0xA0>(0,0) <0x80>(0,0) <0x80>(0,4) after "▁"(0,0);
    // "Babe" + it: ▁B abe <0xF0>(4,4) <0xA0>(4,4) <0x80>(4,4) <0x80>(4,8).
    const std::string rare = "\xf0\xa0\x80\x80";
    CHECK(tok->encode(rare) == Ids{29871, 243, 163, 131, 131});
    CHECK(tok->encode_in_context("", rare) == Ids{29871, 243, 163, 131, 131});
    CHECK(tok->encode_in_context("Babe", rare + rare) == Ids{243, 163, 131, 131, 243, 163, 131, 131});
    CHECK(tok->encode_in_context("a ", rare) == Ids{243, 163, 131, 131});

    // Whatever the split, the result is a suffix of the joint encoding.
    for (const auto& [prefix, text] : std::vector<std::pair<std::string, std::string>>{
             {"User watched: ", "Babe (1995)"}, {"1. ", "Crème brûlée"}, {"\"", "Léon"}, {"x", "y"}}) {
      const Ids joint = tok->encode(prefix + text);
      const Ids tail = tok->encode_in_context(prefix, text);
      REQUIRE(tail.size() <= joint.size());
      CHECK(Ids(joint.end() - static_cast<std::ptrdiff_t>(tail.size()), joint.end()) == tail);
      CHECK(!tail.empty());
    }
  }

  SECTION("batch forms keep order and match single calls") {
    std::vector<std::string> texts;
    for (int i = 0; i < 500; ++i) texts.push_back("Item " + std::to_string(i * 7919) + (i % 3 ? " café" : " (1995)"));
    const auto batch = tok->encode_batch(texts, true, false);
    REQUIRE(batch.size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i) REQUIRE(batch[i] == tok->encode(texts[i], true));
    CHECK(tok->decode_batch(batch) == texts);
    CHECK(tok->encode_batch({}).empty());

    auto bad = batch;
    bad[137].push_back(32000);
    bad[400].push_back(-1);
    CHECK_THROWS_WITH(tok->decode_batch(bad), Contains("sequence 137") && Contains("32000"));
  }

  SECTION("out-of-range ids") {
    CHECK_THROWS_AS(tok->id_to_piece(32000), Error);
    CHECK_THROWS_WITH(tok->id_to_piece(32000), Contains("32000") && Contains("0..31999"));
    CHECK_THROWS_WITH(tok->id_to_piece(-1), Contains("-1"));
    CHECK_THROWS_WITH(tok->decode({15043, 40000}), Contains("40000") && Contains("position 1"));
  }

  SECTION("serialized / from_serialized / save") {
    const std::string bytes = tok->serialized();
    CHECK(bytes.size() == std::filesystem::file_size(path));
    const auto copy = SentencePieceTokenizer::from_serialized(bytes);
    CHECK(copy->encode("Hello world!", true) == Ids{1, 15043, 3186, 29991});
    llm4dsr::testing::TempDir dir;
    tok->save(dir.file("tokenizer.model"));
    CHECK(SentencePieceTokenizer::from_file(dir.file("tokenizer.model"))->serialized() == bytes);
    // Only the model is left behind, no temporary file.
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()) == 1);
  }
}

TEST_CASE("SentencePieceTokenizer::train", "[tokenizer]") {
  const auto corpus = small_corpus();

  SECTION("deterministic, Llama's special ids, exact round trip") {
    const auto a = SentencePieceTokenizer::train(corpus, small_options());
    const auto b = SentencePieceTokenizer::train(corpus, small_options());
    CHECK(a->serialized() == b->serialized());
    CHECK(a->vocab_size() == 400);
    CHECK(a->unk_id() == 0);
    CHECK(a->bos_id() == 1);
    CHECK(a->eos_id() == 2);
    CHECK(a->pad_id() == 3);
    CHECK(a->id_to_piece(0) == "<unk>");
    CHECK(a->id_to_piece(1) == "<s>");
    CHECK(a->id_to_piece(2) == "</s>");
    CHECK(a->id_to_piece(3) == "<pad>");
    for (const auto& text : corpus) {
      const Ids ids = a->encode(text);
      CHECK(std::find(ids.begin(), ids.end(), a->unk_id()) == ids.end());
      CHECK(a->decode(ids) == text);
    }
    // Identity normalisation: repeated and trailing spaces survive.
    CHECK(a->decode(a->encode("Toy  Story (1995) ")) == "Toy  Story (1995) ");
    // BPE learned something: a frequent word is one piece.
    CHECK(a->encode("(1995)").size() < 6);

    // A different corpus gives a different model (the comparison above is not vacuous).
    auto other = corpus;
    other.push_back("Zzyzx Road (2006) zzyzx zzyzx");
    CHECK(SentencePieceTokenizer::train(other, small_options())->serialized() != a->serialized());
  }

  SECTION("byte fallback encodes unseen characters as bytes, never <unk>") {
    const auto tok = SentencePieceTokenizer::train(corpus, small_options());
    const std::string cjk = "\xe6\xbc\xa2";  // 漢, not in the corpus
    const Ids ids = tok->encode(cjk);
    std::vector<std::string> pieces;
    for (TokenId id : ids) pieces.push_back(tok->id_to_piece(id));
    // Possibly a leading "▁" (dummy prefix), then the three UTF-8 bytes.
    REQUIRE(pieces.size() >= 3);
    CHECK(std::vector<std::string>(pieces.end() - 3, pieces.end()) ==
          std::vector<std::string>{"<0xE6>", "<0xBC>", "<0xA2>"});
    CHECK(std::find(ids.begin(), ids.end(), tok->unk_id()) == ids.end());
    CHECK(tok->decode(ids) == cjk);
    // The byte pieces of a character right after the prefix all belong to the text.
    const Ids tail = tok->encode_in_context("Babe", cjk + cjk);
    CHECK(tail.size() == 6);
    CHECK(tok->decode(tail) == cjk + cjk);

    auto no_fallback = small_options(100);
    no_fallback.byte_fallback = false;
    const auto plain = SentencePieceTokenizer::train(corpus, no_fallback);
    const Ids plain_ids = plain->encode(cjk);
    CHECK(std::find(plain_ids.begin(), plain_ids.end(), plain->unk_id()) != plain_ids.end());
  }

  SECTION("unigram") {
    auto options = small_options(120);
    options.byte_fallback = false;
    options.model_type = "unigram";
    const auto tok = SentencePieceTokenizer::train(corpus, options);
    CHECK(tok->vocab_size() == 120);
    CHECK(tok->pad_id() == 3);
    for (const auto& text : corpus) CHECK(tok->decode(tok->encode(text)) == text);
    CHECK(SentencePieceTokenizer::train(corpus, options)->serialized() == tok->serialized());
  }

  SECTION("save and load a trained model") {
    const auto tok = SentencePieceTokenizer::train(corpus, small_options());
    llm4dsr::testing::TempDir dir;
    const std::string path = dir.file("trained.model");
    tok->save(path);
    tok->save(path);  // overwriting an existing file is fine
    const auto loaded = SentencePieceTokenizer::from_file(path);
    CHECK(loaded->serialized() == tok->serialized());
    for (const auto& text : corpus) CHECK(loaded->encode(text) == tok->encode(text));
  }

  SECTION("a vocabulary the texts cannot fill reports the trainer's maximum") {
    std::string message;
    try {
      SentencePieceTokenizer::train(corpus, small_options(20000));
      FAIL("expected an Error");
    } catch (const Error& e) {
      message = e.what();
    }
    CHECK_THAT(message, Contains("vocab_size 20000 is too large"));
    std::smatch match;
    REQUIRE(std::regex_search(message, match, std::regex(R"(at most (\d+) pieces)")));
    const int64_t maximum = std::stoll(match[1]);
    CHECK(maximum > 300);
    CHECK(maximum < 20000);
    // The reported maximum is exactly attainable, one more is not.
    CHECK(SentencePieceTokenizer::train(corpus, small_options(maximum))->vocab_size() == maximum);
    CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus, small_options(maximum + 1)), Contains("too large"));
  }

  SECTION("argument errors") {
    CHECK_THROWS_WITH(SentencePieceTokenizer::train({}, small_options()), Contains("at least one text"));
    // 4 specials + 256 bytes + the corpus' characters do not fit in 100.
    CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus, small_options(100)),
                      Contains("vocab_size 100 is too small") && Contains("at least"));
    auto bad_type = small_options();
    bad_type.model_type = "wordpiece";
    CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus, bad_type), Contains("wordpiece"));
    auto bad_coverage = small_options();
    bad_coverage.character_coverage = 1.5;
    CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus, bad_coverage), Contains("character_coverage"));
  }
}

TEST_CASE("SentencePieceTokenizer load errors name the file", "[tokenizer]") {
  llm4dsr::testing::TempDir dir;
  const std::string missing = dir.file("no_such.model");
  CHECK_THROWS_AS(SentencePieceTokenizer::from_file(missing), Error);
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_file(missing), Contains(missing) && Contains("does not exist"));

  const std::string garbage = dir.write("garbage.model", "this is not a sentencepiece model\n");
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_file(garbage), Contains(garbage) && Contains("not a valid"));
  const std::string json = dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\"}}");
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_file(json), Contains(json) && Contains("not a valid"));
  const std::string empty = dir.write("empty.model", "");
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_file(empty), Contains(empty) && Contains("empty"));
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_file(dir.path()), Contains("folder"));
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_serialized(std::string("\x0a\x05hello", 7)), Contains("not a valid"));

  const auto tok = SentencePieceTokenizer::train(small_corpus(), small_options());
  CHECK_THROWS_WITH(tok->save(dir.file("no_such_folder/x.model")), Contains("no_such_folder/x.model"));
  CHECK_THROWS_WITH(tok->id_to_piece(400), Contains("400") && Contains("0..399"));
}
