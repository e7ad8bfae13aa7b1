// BpeTokenizer on a hand-made vocabulary whose encodings are worked out by hand below (the real
// SmolLM2 vocabulary is checked against HuggingFace in tests/python/test_bpe_tokenizer.py).
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "llm4dsr/error.h"
#include "llm4dsr/text/bpe_tokenizer.h"
#include "test_support.h"

using llm4dsr::BpeAddedToken;
using llm4dsr::BpePreTokenizerStep;
using llm4dsr::BpeTokenizer;
using llm4dsr::BpeVocabulary;
using llm4dsr::Error;
using llm4dsr::TokenId;
using Catch::Matchers::Contains;
using Ids = std::vector<TokenId>;
using Spans = std::vector<std::pair<size_t, size_t>>;

namespace {

// GPT-2's byte-to-unicode map, written out independently of the library: printable Latin-1 bytes
// stand for themselves, the others take U+0100.. in byte order.
std::string byte_piece(int b) {
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int c = 0; c < b; ++c) {
      if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

const std::string G = byte_piece(' ');  // "Ġ"

// Ids 0..255: the byte pieces in byte order (so id == byte value), then
//   256 he, 257 ll, 258 hell, 259 hello, 260 Ġw, 261 or, 262 Ġwor, 263 aa, 264 el,
//   265 <a> (special), 266 <a>b (special), 267 [X] (user-defined: matched whole, decoded as text).
// Merge ranks: (h e) (l l) (he ll) (hell o) (Ġ w) (o r) (Ġw or) (a a) (e l).
BpeVocabulary tiny_vocabulary() {
  BpeVocabulary v;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(byte_piece(b));
  for (const char* t : {"he", "ll", "hell", "hello"}) v.tokens.push_back(t);
  v.tokens.push_back(G + "w");
  v.tokens.push_back("or");
  v.tokens.push_back(G + "wor");
  v.tokens.push_back("aa");
  v.tokens.push_back("el");
  v.tokens.push_back("<a>");
  v.tokens.push_back("<a>b");
  v.tokens.push_back("[X]");
  v.merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {G, "w"},
              {"o", "r"}, {G + "w", "or"}, {"a", "a"}, {"e", "l"}};
  v.added_tokens.push_back(BpeAddedToken{265, "<a>", true, false, false, false});
  v.added_tokens.push_back(BpeAddedToken{266, "<a>b", true, false, false, false});
  v.added_tokens.push_back(BpeAddedToken{267, "[X]", false, false, false, false});
  v.pre_tokenizer = {BpePreTokenizerStep::split(llm4dsr::kGpt2PreTokenizerPattern)};
  v.bos_id = 265;
  v.eos_id = 266;
  v.source = "tiny";
  return v;
}

std::string tokenizer_json(const std::string& merges_json, const std::string& extra = "") {
  // The tiny vocabulary as HF writes it; JSON escapes for the non-ASCII byte pieces come from
  // nlohmann-free hand formatting: every piece here is valid UTF-8 and needs only '"' and '\\' escaped.
  std::string vocab = "{";
  const BpeVocabulary v = tiny_vocabulary();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    std::string piece;
    for (char c : v.tokens[i]) {
      if (c == '"' || c == '\\') piece += '\\';
      piece += c;
    }
    vocab += (i ? ", \"" : "\"") + piece + "\": " + std::to_string(i);
  }
  vocab += "}";
  return R"({"version": "1.0", "normalizer": null,
    "added_tokens": [
      {"id": 265, "content": "<a>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
      {"id": 266, "content": "<a>b", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
      {"id": 267, "content": "[X]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},)" +
         extra + R"("model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
      "vocab": )" + vocab + ", \"merges\": " + merges_json + "}}";
}

const char* kStringMerges = R"(["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "a a", "e l"])";
const char* kPairMerges =
    R"([["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"], ["o", "r"], ["Ġw", "or"], ["a", "a"], ["e", "l"]])";

}  // namespace

TEST_CASE("bpe: hand-computed encodings of a tiny vocabulary", "[bpe]") {
  const auto tok = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  CHECK(tok->kind() == "bpe");
  CHECK(tok->vocab_size() == 268);
  // "hello" merges all the way (ranks 0, 1, 2, 3); " world" gets Ġw, or, Ġwor and leaves l, d.
  CHECK(tok->encode("hello world") == Ids{259, 262, 'l', 'd'});
  // Lower rank first: in "hel" (h e) beats (e l); alone, "el" merges.
  CHECK(tok->encode("hel") == Ids{256, 'l'});
  CHECK(tok->encode("el") == Ids{264});
  // Ties go to the leftmost pair.
  CHECK(tok->encode("aaa") == Ids{263, 'a'});
  CHECK(tok->encode("aaaa") == Ids{263, 263});
  // The regex splits "he's" into "he" and "'s"; digits and punctuation are pieces of their own.
  CHECK(tok->encode("he's") == Ids{256, '\'', 's'});
  CHECK(tok->encode("hello  world!") == Ids{259, ' ', 262, 'l', 'd', '!'});
  CHECK(tok->encode("").empty());
}

TEST_CASE("bpe: the offsets of each token", "[bpe]") {
  const auto tok = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  const auto e = tok->encode_with_offsets("hello world");
  CHECK(e.ids == Ids{259, 262, 'l', 'd'});
  CHECK(e.offsets == Spans{{0, 5}, {5, 9}, {9, 10}, {10, 11}});
  const auto s = tok->encode_with_offsets("x<a>b");
  CHECK(s.ids == Ids{'x', 266});
  CHECK(s.offsets == Spans{{0, 1}, {1, 5}});
}

TEST_CASE("bpe: added tokens are matched first, leftmost-longest, and never split", "[bpe]") {
  const auto tok = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  CHECK(tok->encode("x<a>bc<a>c") == Ids{'x', 266, 'c', 265, 'c'});
  CHECK(tok->encode("<a><a>b") == Ids{265, 266});
  CHECK(tok->encode("hello<a>hello") == Ids{259, 265, 259});
  // Text either side of an added token is pre-tokenized separately: no merge across it.
  CHECK(tok->encode("h<a>e") == Ids{'h', 265, 'e'});
  CHECK(tok->encode("a[X]a") == Ids{'a', 267, 'a'});
  // Special tokens decode to nothing, user-defined ones to their text.
  CHECK(tok->decode({'x', 266, 'c', 265, 'c'}) == "xcc");
  CHECK(tok->decode({'a', 267, 'a'}) == "a[X]a");
  CHECK(tok->is_special(265));
  CHECK_FALSE(tok->is_special(267));
  CHECK_FALSE(tok->is_special('a'));
}

TEST_CASE("bpe: lstrip and rstrip take the whitespace beside an added token", "[bpe]") {
  BpeVocabulary v = tiny_vocabulary();
  v.added_tokens[0].lstrip = true;
  v.added_tokens[0].rstrip = true;
  const auto tok = BpeTokenizer::from_vocabulary(v);
  const auto e = tok->encode_with_offsets("x \t<a>\xE3\x80\x80y");  // U+3000 IDEOGRAPHIC SPACE on the right
  CHECK(e.ids == Ids{'x', 265, 'y'});
  CHECK(e.offsets == Spans{{0, 1}, {1, 9}, {9, 10}});
}

TEST_CASE("bpe: bytes without merges fall back to byte tokens; decode repairs broken UTF-8", "[bpe]") {
  const auto tok = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  // é is C3 A9, € is E2 82 AC: one token per byte, ids equal to the bytes.
  CHECK(tok->encode("\xC3\xA9") == Ids{0xC3, 0xA9});
  CHECK(tok->encode("\xE2\x82\xAC") == Ids{0xE2, 0x82, 0xAC});
  CHECK(tok->decode({0xE2, 0x82, 0xAC}) == "\xE2\x82\xAC");
  // Input that is not UTF-8 still encodes, byte by byte; decode gives U+FFFD per maximal invalid
  // subsequence, as from_utf8_lossy does.
  CHECK(tok->encode("a\xFF" "b") == Ids{'a', 0xFF, 'b'});
  CHECK(tok->decode({'a', 0xFF, 'b'}) == "a\xEF\xBF\xBD" "b");
  CHECK(tok->decode({0xE2, 0x82}) == "\xEF\xBF\xBD");               // a truncated character: one U+FFFD
  CHECK(tok->decode({0xE2, 0x82, 'a'}) == "\xEF\xBF\xBD" "a");
  CHECK(tok->decode({0xC0, 0x80}) == "\xEF\xBF\xBD\xEF\xBF\xBD");   // C0 never starts a sequence
  CHECK(tok->decode({0xED, 0xA0, 0x80}) == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  // Every byte value round-trips through encode/decode when the text is valid UTF-8.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> cp_dist(1, 0x10FFFF);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    for (int k = 0; k < 20; ++k) {
      int cp = cp_dist(rng);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'z';
      if (trial % 2) cp = cp % 0x80 ? cp % 0x80 : 'q';  // ASCII-only half, controls included
      if (cp < 0x80) text += static_cast<char>(cp);
      else if (cp < 0x800) text += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      else if (cp < 0x10000)
        text += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                 static_cast<char>(0x80 | (cp & 0x3F))};
      else
        text += {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                 static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    const Ids ids = tok->encode(text);
    CHECK(tok->decode(ids) == text);
    // Without added tokens in the text, the ids are its bytes wherever no merge applies: the total
    // of their spans is the text.
    const auto e = tok->encode_with_offsets(text);
    REQUIRE(!e.offsets.empty());
    CHECK(e.offsets.front().first == 0);
    CHECK(e.offsets.back().second == text.size());
    for (size_t i = 1; i < e.offsets.size(); ++i) CHECK(e.offsets[i].first == e.offsets[i - 1].second);
  }
}

TEST_CASE("bpe: a byte without a token is dropped, or becomes the BPE unk", "[bpe]") {
  // SmolLM2's vocabulary lacks some control bytes; HF's BPE (unk_token null) and llama.cpp drop them.
  BpeVocabulary v = tiny_vocabulary();
  v.tokens[4] = "<no byte 4>";
  const auto dropping = BpeTokenizer::from_vocabulary(v);
  const auto e = dropping->encode_with_offsets("a\x04" "b");
  CHECK(e.ids == Ids{'a', 'b'});
  CHECK(e.offsets == Spans{{0, 1}, {2, 3}});
  CHECK(dropping->decode(e.ids) == "ab");
  v.bpe_unk_id = 'u';
  CHECK(BpeTokenizer::from_vocabulary(v)->encode("a\x04" "b") == Ids{'a', 'u', 'b'});
}

TEST_CASE("bpe: special ids, pieces, add_bos / add_eos and range errors", "[bpe]") {
  BpeVocabulary v = tiny_vocabulary();
  const auto plain = BpeTokenizer::from_vocabulary(v);
  CHECK(plain->bos_id() == 265);
  CHECK(plain->eos_id() == 266);
  CHECK(plain->pad_id() == 266);  // no pad: falls back to eos
  CHECK(plain->unk_id() == -1);
  CHECK(plain->id_to_piece(260) == G + "w");
  CHECK(plain->piece_to_id(G + "wor") == 262);
  CHECK(plain->piece_to_id("absent") == -1);
  // The vocabulary adds no bos / eos: asking changes nothing (HF's add_special_tokens).
  CHECK(plain->encode("hello", true, true) == Ids{259});
  CHECK_THROWS_WITH(plain->id_to_piece(268), Contains("268"));
  CHECK_THROWS_WITH(plain->decode({'a', -1}), Contains("-1") && Contains("position 1"));

  v.add_bos = true;
  v.add_eos = true;
  v.pad_id = 'p';
  const auto adding = BpeTokenizer::from_vocabulary(v);
  CHECK(adding->encode("hello", true, true) == Ids{265, 259, 266});
  CHECK(adding->encode("hello", false, true) == Ids{259, 266});
  CHECK(adding->encode("hello") == Ids{259});
  CHECK(adding->pad_id() == 'p');

  BpeVocabulary none = tiny_vocabulary();
  none.bos_id = none.eos_id = -1;
  const auto without = BpeTokenizer::from_vocabulary(none);
  CHECK_THROWS_WITH(without->encode("hello", true), Contains("bos"));
  CHECK_THROWS_WITH(without->encode("hello", false, true), Contains("eos"));
}

TEST_CASE("bpe: encode_in_context is the tail of the joint encoding", "[bpe]") {
  const auto tok = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  CHECK(tok->encode_in_context("hello", " world") == Ids{262, 'l', 'd'});
  // "hel" + "lo" is one token "hello" that straddles the boundary: it is returned.
  CHECK(tok->encode_in_context("hel", "lo") == Ids{259});
  CHECK(tok->encode_in_context("x", "<a>b") == Ids{266});
  CHECK(tok->encode_in_context("", "hello") == tok->encode("hello"));
  CHECK(tok->encode_in_context("hello", "").empty());

  // With a prefix space, the synthetic "Ġ" of a piece that starts at the boundary belongs to the text.
  BpeVocabulary v = tiny_vocabulary();
  v.pre_tokenizer.insert(v.pre_tokenizer.begin(), BpePreTokenizerStep::prefix_space());
  const auto spaced = BpeTokenizer::from_vocabulary(v);
  CHECK(spaced->encode("world") == Ids{262, 'l', 'd'});
  const auto e = spaced->encode_with_offsets("world");
  CHECK(e.offsets == Spans{{0, 3}, {3, 4}, {4, 5}});
  // Pieces after an added token get their own prefix space, as in HF's ByteLevel.
  CHECK(spaced->encode("<a>world") == Ids{265, 262, 'l', 'd'});
  CHECK(spaced->encode_in_context("<a>", "world") == Ids{262, 'l', 'd'});
}

TEST_CASE("bpe: pre-tokenizer steps follow HF's split behaviours", "[bpe]") {
  using Behavior = BpePreTokenizerStep::Behavior;
  const auto encode_with = [](std::vector<BpePreTokenizerStep> steps, const std::string& text) {
    BpeVocabulary v = tiny_vocabulary();
    v.pre_tokenizer = std::move(steps);
    return BpeTokenizer::from_vocabulary(v)->encode_with_offsets(text);
  };
  // Merges never cross a piece boundary, so the ids show where the pieces are.
  CHECK(encode_with({BpePreTokenizerStep::split("e")}, "hehe").ids == Ids{'h', 'e', 'h', 'e'});
  CHECK(encode_with({BpePreTokenizerStep::split("e", Behavior::MergedWithPrevious)}, "hehe").ids == Ids{256, 256});
  CHECK(encode_with({BpePreTokenizerStep::split("h", Behavior::MergedWithNext)}, "hehe").ids == Ids{256, 256});
  CHECK(encode_with({BpePreTokenizerStep::split("e", Behavior::MergedWithNext)}, "hehe").ids == Ids{'h', 'e', 'h', 'e'});
  CHECK(encode_with({BpePreTokenizerStep::split("a")}, "aa-aa-").ids == Ids{'a', 'a', '-', 'a', 'a', '-'});
  CHECK(encode_with({BpePreTokenizerStep::split("a", Behavior::Contiguous)}, "aa-aa-").ids == Ids{263, '-', 263, '-'});
  const auto removed = encode_with({BpePreTokenizerStep::split("-", Behavior::Removed)}, "aa-aa-");
  CHECK(removed.ids == Ids{263, 263});
  CHECK(removed.offsets == Spans{{0, 2}, {3, 5}});
  // invert: split on what does not match, here removing the "-" between runs of a.
  CHECK(encode_with({BpePreTokenizerStep::split("a+", Behavior::Removed, true)}, "aa-aaa").offsets ==
        Spans{{0, 2}, {3, 5}, {5, 6}});
  // A literal pattern is not a regex: "." splits only on dots.
  CHECK(encode_with({BpePreTokenizerStep::split(".", Behavior::Removed, false, true)}, "he.he").ids == Ids{256, 256});
  // No pre-tokenizer: the whole text is one word.
  CHECK(encode_with({}, "hehe").ids == Ids{256, 256});
  BpeVocabulary bad = tiny_vocabulary();
  bad.pre_tokenizer = {BpePreTokenizerStep::split("(unclosed")};
  CHECK_THROWS_WITH(BpeTokenizer::from_vocabulary(bad), Contains("tiny") && Contains("does not compile"));
}

TEST_CASE("bpe: llama.cpp pre-tokenizer names", "[bpe]") {
  BpeVocabulary v = tiny_vocabulary();
  v.tokens.push_back("12");  // 268, so that digit grouping shows in the ids
  v.merges.push_back({"1", "2"});
  const auto ids = [&](const char* name, const std::string& text) {
    v.pre_tokenizer = llm4dsr::bpe_pre_tokenizer_for(name);
    return BpeTokenizer::from_vocabulary(v)->encode(text);
  };
  // smollm (llama.cpp: "\p{N}" then GPT-2's regex) isolates every digit; gpt2 keeps " 123" whole.
  CHECK(ids("smollm", "a 123") == Ids{'a', ' ', '1', '2', '3'});
  CHECK(ids("gpt2", "a 123") == Ids{'a', ' ', 268, '3'});
  CHECK(ids("default", "a 123") == Ids{'a', ' ', 268, '3'});
  // Llama-3 takes digits three at a time, Qwen2 one at a time.
  CHECK(ids("llama3", "12345") == Ids{268, '3', '4', '5'});
  CHECK(ids("qwen2", "12345") == Ids{'1', '2', '3', '4', '5'});
  for (const char* name : {"llama3", "qwen2", "default", "falcon", "starcoder", ""}) {
    v.pre_tokenizer = llm4dsr::bpe_pre_tokenizer_for(name);
    const auto tok = BpeTokenizer::from_vocabulary(v);
    CHECK(tok->decode(tok->encode("DON'T 12345 hello\r\n  x")) == "DON'T 12345 hello\r\n  x");
  }
  CHECK_THROWS_WITH(llm4dsr::bpe_pre_tokenizer_for("no-such-pre"), Contains("no-such-pre") && Contains("smollm"));
}

TEST_CASE("bpe: a megabyte of text encodes in one pass and round-trips", "[bpe]") {
  const auto tok = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  std::mt19937 rng(1);
  const std::vector<std::string> words = {"hello", " world", " aaaa", " hel", "\n", " caf\xC3\xA9", "  ", " 2024",
                                          "<a>", "!", " \xE4\xB8\xAD\xE6\x96\x87", " he's", "\t"};
  std::string text;
  while (text.size() < (1u << 20)) text += words[rng() % words.size()];
  const Ids ids = tok->encode(text);
  CHECK(ids.size() > text.size() / 8);
  // "<a>" is special and decodes to nothing.
  std::string expected;
  for (size_t pos = 0;;) {
    const size_t next = text.find("<a>", pos);
    expected.append(text, pos, next == std::string::npos ? std::string::npos : next - pos);
    if (next == std::string::npos) break;
    pos = next + 3;
  }
  CHECK(tok->decode(ids) == expected);

  // One 1 MB word: the merge loop must not rescan the word per merge.
  const std::string word(1u << 20, 'a');
  const Ids merged = tok->encode(word);
  CHECK(merged == Ids(word.size() / 2, 263));
}

TEST_CASE("bpe: tokenizer.json with string or pair merges", "[bpe]") {
  llm4dsr::testing::TempDir dir;
  const auto reference = BpeTokenizer::from_vocabulary(tiny_vocabulary());
  for (const char* merges : {kStringMerges, kPairMerges}) {
    const auto tok = BpeTokenizer::from_tokenizer_json(dir.write("tokenizer.json", tokenizer_json(merges)));
    for (const std::string text : {"hello world", "x<a>bc<a>c", "aaa hel el a[X]a", "caf\xC3\xA9 2024!"}) {
      CHECK(tok->encode(text) == reference->encode(text));
    }
    CHECK(tok->is_special(266));
    CHECK_FALSE(tok->is_special(267));
    // No tokenizer_config.json and a post-processor that adds nothing: no special ids.
    CHECK(tok->bos_id() == -1);
    CHECK(tok->eos_id() == -1);
    CHECK(tok->unk_id() == -1);
  }
  // tokenizer_config.json beside it names the special tokens.
  dir.write("tokenizer_config.json",
            R"({"bos_token": "<a>", "eos_token": {"content": "<a>b"}, "pad_token": null, "add_bos_token": true})");
  const auto tok = BpeTokenizer::from_tokenizer_json(dir.write("tokenizer.json", tokenizer_json(kStringMerges)));
  CHECK(tok->bos_id() == 265);
  CHECK(tok->eos_id() == 266);
  CHECK(tok->pad_id() == 266);
  CHECK(tok->encode("hello", true) == Ids{265, 259});
}

TEST_CASE("bpe: the post-processor template gives bos / eos without tokenizer_config.json", "[bpe]") {
  llm4dsr::testing::TempDir dir;
  const std::string post = R"("post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<a>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [], "special_tokens": {"<a>": {"id": "<a>", "ids": [265], "tokens": ["<a>"]}}},)";
  std::string json = tokenizer_json(kStringMerges, post);
  // The fixture already has a ByteLevel post_processor; drop it so the template is the one read.
  const std::string old_post =
      R"("post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},)";
  json.erase(json.find(old_post), old_post.size());
  const auto tok = BpeTokenizer::from_tokenizer_json(dir.write("tokenizer.json", json));
  CHECK(tok->add_bos_token());
  CHECK_FALSE(tok->add_eos_token());
  CHECK(tok->bos_id() == 265);
  CHECK(tok->encode("hello", true) == Ids{265, 259});
  CHECK(tok->encode("hello") == Ids{259});
}

TEST_CASE("bpe: malformed tokenizer.json errors name the file and the key", "[bpe]") {
  llm4dsr::testing::TempDir dir;
  const auto load = [&](const std::string& text) {
    return BpeTokenizer::from_tokenizer_json(dir.write("tokenizer.json", text));
  };
  const auto replaced = [](std::string text, const std::string& from, const std::string& to) {
    const size_t pos = text.find(from);
    REQUIRE(pos != std::string::npos);
    return text.replace(pos, from.size(), to);
  };
  const std::string good = tokenizer_json(kStringMerges);
  REQUIRE_NOTHROW(load(good));
  CHECK_THROWS_WITH(load("{\"model\": "), Contains("tokenizer.json") && Contains("not valid JSON"));
  CHECK_THROWS_WITH(load("[1, 2]"), Contains("expected an object"));
  CHECK_THROWS_WITH(load(replaced(good, "\"vocab\": {", "\"vocab_\": {")), Contains("model.vocab") && Contains("missing"));
  CHECK_THROWS_WITH(load(replaced(good, "\"merges\": [\"h e\", \"l l\"", "\"merges\": [\"h e\", 7")),
                    Contains("model.merges[1]"));
  CHECK_THROWS_WITH(load(replaced(good, "\"merges\": [\"h e\"", "\"merges\": [\"he\"")),
                    Contains("model.merges[0]") && Contains("left right"));
  CHECK_THROWS_WITH(load(replaced(good, "\"merges\": [\"h e\"", "\"merges\": [\"h q\"")),
                    Contains("merges[0]") && Contains("\"hq\" is not in the vocabulary"));
  CHECK_THROWS_WITH(load(replaced(good, "\"type\": \"BPE\"", "\"type\": \"WordPiece\"")), Contains("model.type"));
  CHECK_THROWS_WITH(load(replaced(good, "\"byte_fallback\": false", "\"byte_fallback\": true")),
                    Contains("model.byte_fallback"));
  CHECK_THROWS_WITH(load(replaced(good, "\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}")),
                    Contains("normalizer") && Contains("NFC"));
  CHECK_THROWS_WITH(load(replaced(good, "\"type\": \"ByteLevel\", \"add_prefix_space\": false",
                                  "\"type\": \"Metaspace\", \"add_prefix_space\": false")),
                    Contains("pre_tokenizer.type") && Contains("Metaspace"));
  CHECK_THROWS_WITH(
      load(replaced(good, "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}",
                    "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                    "{\"Regex\": \"x\"}, \"behavior\": \"Sideways\", \"invert\": false}]}")),
      Contains("pre_tokenizer.pretokenizers[0].behavior") && Contains("Sideways"));
  CHECK_THROWS_WITH(load(replaced(good, "{\"id\": 265, \"content\": \"<a>\"", "{\"id\": 265, \"content\": 5")),
                    Contains("added_tokens[0].content"));
  CHECK_THROWS_WITH(load(replaced(good, "{\"id\": 267, \"content\": \"[X]\"", "{\"id\": 270, \"content\": \"[X]\"")),
                    Contains("id 268 has no token"));
  CHECK_THROWS_WITH(load(replaced(good, "\"hello\": 259", "\"hello\": -3")), Contains("model.vocab[\"hello\"]"));
  dir.write("tokenizer_config.json", R"({"bos_token": "<nope>"})");
  CHECK_THROWS_WITH(load(good), Contains("tokenizer_config.json") && Contains("bos_token") && Contains("<nope>"));
  CHECK_THROWS_WITH(BpeTokenizer::from_tokenizer_json(dir.file("absent.json")), Contains("absent.json"));
}

TEST_CASE("bpe: an inconsistent vocabulary is refused with its source", "[bpe]") {
  BpeVocabulary v = tiny_vocabulary();
  v.merges.push_back({"q", "z"});
  CHECK_THROWS_WITH(BpeTokenizer::from_vocabulary(v), Contains("tiny") && Contains("merges[9]") && Contains("\"qz\""));
  v = tiny_vocabulary();
  v.added_tokens[0].content = "<b>";
  CHECK_THROWS_WITH(BpeTokenizer::from_vocabulary(v), Contains("added token 0") && Contains("<b>"));
  v = tiny_vocabulary();
  v.bos_id = 999;
  CHECK_THROWS_WITH(BpeTokenizer::from_vocabulary(v), Contains("bos id 999"));
  v = tiny_vocabulary();
  v.tokens.clear();
  CHECK_THROWS_AS(BpeTokenizer::from_vocabulary(v), Error);
}
