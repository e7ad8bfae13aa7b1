// BpeTokenizer::from_tokenizer_json: a HuggingFace tokenizer.json (and tokenizer_config.json beside
// it) to a BpeVocabulary. Only what changes the ids of a byte-level BPE is read; anything that would
// change them in a way we do not reproduce (a normalizer, dropout, byte fallback, other models or
// pre-tokenizers) is refused with the key that says so.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <optional>

#include "internal/text_io.h"
#include "llm4dsr/error.h"
#include "llm4dsr/text/bpe_tokenizer.h"

namespace llm4dsr {

namespace {

using json = nlohmann::json;
using Step = BpePreTokenizerStep;

std::string type_of(const json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) return j["type"].get<std::string>();
  return std::string("<") + j.type_name() + ">";
}

class JsonReader {
 public:
  explicit JsonReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    LLM4DSR_THROW(path_ << ": " << key << ": " << message);
  }

  const json& member(const json& object, const std::string& key, const char* name) const {
    if (!object.is_object()) fail(key, std::string("expected an object, found ") + object.type_name());
    auto it = object.find(name);
    if (it == object.end()) fail(key + "." + name, "missing");
    return *it;
  }
  const json* optional_member(const json& object, const char* name) const {
    auto it = object.find(name);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }
  bool get_bool(const json& object, const std::string& key, const char* name, bool fallback) const {
    const json* value = optional_member(object, name);
    if (!value) return fallback;
    if (!value->is_boolean()) fail(key + "." + name, std::string("expected true or false, found ") + value->dump());
    return value->get<bool>();
  }
  std::string get_string(const json& value, const std::string& key) const {
    if (!value.is_string()) fail(key, std::string("expected a string, found ") + value.type_name());
    return value.get<std::string>();
  }
  int64_t get_id(const json& value, const std::string& key) const {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= INT32_MAX) {
      fail(key, "expected a token id (an integer >= 0), found " + value.dump());
    }
    return value.get<int64_t>();
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

json parse_json_file(const std::string& path, std::string_view what) {
  const std::string text = internal::read_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    LLM4DSR_THROW(path << ": not valid JSON (line " << internal::line_of_offset(text, e.byte > 0 ? e.byte - 1 : 0)
                       << "): " << e.what());
  }
}

void read_pre_tokenizer(const JsonReader& r, const json& node, const std::string& key, std::vector<Step>& steps) {
  if (node.is_null()) return;
  const std::string type = r.get_string(r.member(node, key, "type"), key + ".type");
  if (type == "Sequence") {
    const json& list = r.member(node, key, "pretokenizers");
    if (!list.is_array()) r.fail(key + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      read_pre_tokenizer(r, list[i], key + ".pretokenizers[" + std::to_string(i) + "]", steps);
    }
  } else if (type == "ByteLevel") {
    if (r.get_bool(node, key, "add_prefix_space", true)) steps.push_back(Step::prefix_space());
    if (r.get_bool(node, key, "use_regex", true)) steps.push_back(Step::split(kGpt2PreTokenizerPattern));
  } else if (type == "Digits") {
    steps.push_back(Step::split(r.get_bool(node, key, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)"));
  } else if (type == "Split") {
    const json& pattern = r.member(node, key, "pattern");
    const std::string pattern_key = key + ".pattern";
    if (!pattern.is_object() || pattern.size() != 1) {
      r.fail(pattern_key, "expected {\"Regex\": ...} or {\"String\": ...}, found " + pattern.dump());
    }
    const bool literal = pattern.contains("String");
    if (!literal && !pattern.contains("Regex")) {
      r.fail(pattern_key, "expected {\"Regex\": ...} or {\"String\": ...}, found " + pattern.dump());
    }
    const std::string text = r.get_string(pattern.begin().value(), pattern_key + "." + pattern.begin().key());
    static const std::map<std::string, Step::Behavior> behaviors = {
        {"Isolated", Step::Behavior::Isolated},
        {"Removed", Step::Behavior::Removed},
        {"MergedWithPrevious", Step::Behavior::MergedWithPrevious},
        {"MergedWithNext", Step::Behavior::MergedWithNext},
        {"Contiguous", Step::Behavior::Contiguous},
    };
    const std::string behavior = r.get_string(r.member(node, key, "behavior"), key + ".behavior");
    auto it = behaviors.find(behavior);
    if (it == behaviors.end()) {
      r.fail(key + ".behavior", "expected Isolated, Removed, MergedWithPrevious, MergedWithNext or Contiguous, found \"" +
                                    behavior + "\"");
    }
    steps.push_back(Step::split(text, it->second, r.get_bool(node, key, "invert", false), literal));
  } else {
    r.fail(key + ".type", "pre-tokenizer \"" + type +
                              "\" is not supported for byte-level BPE (supported: ByteLevel, Split, Digits, Sequence)");
  }
}

bool has_byte_level_decoder(const json& node) {
  if (node.is_null()) return true;
  const std::string type = type_of(node);
  if (type == "ByteLevel") return true;
  if (type == "Sequence" && node.contains("decoders") && node["decoders"].is_array()) {
    for (const json& d : node["decoders"])
      if (type_of(d) == "ByteLevel") return true;
  }
  return false;
}

struct TemplateTokens {
  std::optional<std::string> first;  // a special token the single template starts with
  std::optional<std::string> last;   // ... ends with
  std::map<std::string, int64_t> ids;
};

void read_post_processor(const JsonReader& r, const json& node, const std::string& key, TemplateTokens& out) {
  if (node.is_null()) return;
  const std::string type = r.get_string(r.member(node, key, "type"), key + ".type");
  if (type == "Sequence") {
    const json& list = r.member(node, key, "processors");
    if (!list.is_array()) r.fail(key + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      read_post_processor(r, list[i], key + ".processors[" + std::to_string(i) + "]", out);
    }
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "TemplateProcessing") {
    const json& single = r.member(node, key, "single");
    if (!single.is_array()) r.fail(key + ".single", "expected an array");
    const auto special_of = [&](const json& item, size_t i) -> std::optional<std::string> {
      const std::string item_key = key + ".single[" + std::to_string(i) + "]";
      if (item.is_object() && item.contains("SpecialToken")) {
        return r.get_string(r.member(item["SpecialToken"], item_key + ".SpecialToken", "id"),
                            item_key + ".SpecialToken.id");
      }
      return std::nullopt;
    };
    if (!single.empty()) {
      out.first = special_of(single.front(), 0);
      if (single.size() > 1) out.last = special_of(single.back(), single.size() - 1);
    }
    if (const json* specials = r.optional_member(node, "special_tokens")) {
      if (!specials->is_object()) r.fail(key + ".special_tokens", "expected an object");
      for (const auto& [name, entry] : specials->items()) {
        const std::string entry_key = key + ".special_tokens." + name;
        const json& ids = r.member(entry, entry_key, "ids");
        if (!ids.is_array() || ids.size() != 1) {
          r.fail(entry_key + ".ids", "expected exactly one id, found " + ids.dump());
        }
        out.ids[name] = r.get_id(ids[0], entry_key + ".ids[0]");
      }
    }
  } else {
    r.fail(key + ".type", "post-processor \"" + type +
                              "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
  }
}

// "<s>" or {"content": "<s>", ...} (tokenizer_config.json writes both), or null.
std::optional<std::string> config_token(const JsonReader& r, const json& config, const char* name) {
  const json* value = r.optional_member(config, name);
  if (!value) return std::nullopt;
  if (value->is_string()) return value->get<std::string>();
  if (value->is_object() && value->contains("content")) {
    return r.get_string((*value)["content"], std::string(name) + ".content");
  }
  r.fail(name, "expected a string or {\"content\": ...}, found " + value->dump());
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json(const std::string& path) {
  const json root = parse_json_file(path, "the tokenizer.json file");
  const JsonReader r(path);
  if (!root.is_object()) r.fail("<root>", std::string("expected an object, found ") + root.type_name());
  BpeVocabulary vocab;
  vocab.source = path;

  // --- model ---
  const json& model = r.member(root, "<root>", "model");
  if (const json* type = r.optional_member(model, "type")) {
    const std::string t = r.get_string(*type, "model.type");
    if (t != "BPE") r.fail("model.type", "expected \"BPE\", found \"" + t + "\"");
  }
  if (r.get_bool(model, "model", "byte_fallback", false)) {
    r.fail("model.byte_fallback", "true: a SentencePiece-style vocabulary, not byte-level BPE");
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* value = r.optional_member(model, affix);
    if (value && !(value->is_string() && value->get<std::string>().empty())) {
      r.fail(std::string("model.") + affix, "expected null or \"\", found " + value->dump());
    }
  }
  if (const json* dropout = r.optional_member(model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      r.fail("model.dropout", "expected null (BPE dropout is for training), found " + dropout->dump());
    }
  }
  vocab.ignore_merges = r.get_bool(model, "model", "ignore_merges", false);

  const json& vocab_json = r.member(model, "model", "vocab");
  if (!vocab_json.is_object()) r.fail("model.vocab", std::string("expected an object, found ") + vocab_json.type_name());
  std::map<int64_t, std::string> by_id;
  for (const auto& [piece, id_json] : vocab_json.items()) {
    const int64_t id = r.get_id(id_json, "model.vocab[\"" + piece + "\"]");
    auto [it, inserted] = by_id.emplace(id, piece);
    if (!inserted) r.fail("model.vocab", "id " + std::to_string(id) + " is given to both \"" + it->second +
                                             "\" and \"" + piece + "\"");
  }

  // --- added tokens ---
  if (const json* added = r.optional_member(root, "added_tokens")) {
    if (!added->is_array()) r.fail("added_tokens", "expected an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string key = "added_tokens[" + std::to_string(i) + "]";
      BpeAddedToken token;
      token.id = static_cast<TokenId>(r.get_id(r.member(a, key, "id"), key + ".id"));
      token.content = r.get_string(r.member(a, key, "content"), key + ".content");
      if (token.content.empty()) r.fail(key + ".content", "empty");
      token.special = r.get_bool(a, key, "special", false);
      token.normalized = r.get_bool(a, key, "normalized", !token.special);
      token.lstrip = r.get_bool(a, key, "lstrip", false);
      token.rstrip = r.get_bool(a, key, "rstrip", false);
      if (r.get_bool(a, key, "single_word", false)) r.fail(key + ".single_word", "true is not supported");
      auto [it, inserted] = by_id.emplace(token.id, token.content);
      if (!inserted && it->second != token.content) {
        r.fail(key, "id " + std::to_string(token.id) + " is \"" + token.content + "\" here but \"" + it->second +
                        "\" in model.vocab");
      }
      vocab.added_tokens.push_back(std::move(token));
    }
  }
  if (by_id.empty()) r.fail("model.vocab", "empty");
  const int64_t n_tokens = by_id.rbegin()->first + 1;
  if (static_cast<size_t>(n_tokens) != by_id.size()) {
    int64_t hole = 0;
    while (by_id.count(hole)) ++hole;
    r.fail("model.vocab", "ids must run 0.." + std::to_string(n_tokens - 1) + " without gaps, but id " +
                              std::to_string(hole) + " has no token (in model.vocab or added_tokens)");
  }
  vocab.tokens.reserve(by_id.size());
  for (auto& [id, piece] : by_id) vocab.tokens.push_back(std::move(piece));

  // --- merges ---
  const json& merges = r.member(model, "model", "merges");
  if (!merges.is_array()) r.fail("model.merges", std::string("expected an array, found ") + merges.type_name());
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string key = "model.merges[" + std::to_string(i) + "]";
    if (m.is_string()) {
      const std::string line = m.get<std::string>();
      const size_t space = line.size() > 1 ? line.find(' ', 1) : std::string::npos;
      if (space == std::string::npos || space + 1 >= line.size() || line.find(' ', space + 1) != std::string::npos) {
        r.fail(key, "expected \"left right\", found \"" + line + "\"");
      }
      vocab.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      vocab.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      r.fail(key, "expected \"left right\" or [\"left\", \"right\"], found " + m.dump());
    }
  }

  // --- unk ---
  std::optional<std::string> unk = std::nullopt;
  if (const json* u = r.optional_member(model, "unk_token")) unk = r.get_string(*u, "model.unk_token");

  // --- normalizer, pre-tokenizer, decoder ---
  if (const json* normalizer = r.optional_member(root, "normalizer")) {
    const bool empty_sequence = type_of(*normalizer) == "Sequence" && normalizer->contains("normalizers") &&
                                (*normalizer)["normalizers"].is_array() && (*normalizer)["normalizers"].empty();
    if (!empty_sequence) r.fail("normalizer", "\"" + type_of(*normalizer) + "\" is not supported (only null)");
  }
  if (const json* pre = r.optional_member(root, "pre_tokenizer")) read_pre_tokenizer(r, *pre, "pre_tokenizer", vocab.pre_tokenizer);
  if (const json* decoder = r.optional_member(root, "decoder")) {
    if (!has_byte_level_decoder(*decoder)) {
      r.fail("decoder", "\"" + type_of(*decoder) + "\" is not a byte-level decoder: not a byte-level BPE vocabulary");
    }
  }

  // --- special ids and add_bos / add_eos ---
  TemplateTokens templ;
  if (const json* post = r.optional_member(root, "post_processor")) read_post_processor(r, *post, "post_processor", templ);
  const auto template_id = [&](const std::string& name) -> TokenId {
    auto it = templ.ids.find(name);
    if (it == templ.ids.end()) r.fail("post_processor.special_tokens", "no entry for \"" + name + "\"");
    if (it->second >= n_tokens) r.fail("post_processor.special_tokens." + name, "id outside the vocabulary");
    return static_cast<TokenId>(it->second);
  };
  if (templ.first) {
    vocab.add_bos = true;
    vocab.bos_id = template_id(*templ.first);
  }
  if (templ.last) {
    vocab.add_eos = true;
    vocab.eos_id = template_id(*templ.last);
  }

  std::map<std::string, TokenId> token_ids;
  for (size_t id = 0; id < vocab.tokens.size(); ++id) token_ids.emplace(vocab.tokens[id], static_cast<TokenId>(id));
  const auto id_of = [&](const std::string& piece, const std::string& file, const std::string& key) -> TokenId {
    auto it = token_ids.find(piece);
    if (it == token_ids.end()) LLM4DSR_THROW(file << ": " << key << ": \"" << piece << "\" is not in the vocabulary");
    return it->second;
  };
  if (unk) vocab.unk_id = vocab.bpe_unk_id = id_of(*unk, path, "model.unk_token");

  const std::filesystem::path config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::is_regular_file(config_path)) {
    const std::string config_file = config_path.string();
    const json config = parse_json_file(config_file, "tokenizer_config.json");
    const JsonReader c(config_file);
    if (!config.is_object()) c.fail("<root>", "expected an object");
    if (auto t = config_token(c, config, "bos_token")) vocab.bos_id = id_of(*t, config_file, "bos_token");
    if (auto t = config_token(c, config, "eos_token")) vocab.eos_id = id_of(*t, config_file, "eos_token");
    if (auto t = config_token(c, config, "pad_token")) vocab.pad_id = id_of(*t, config_file, "pad_token");
    if (auto t = config_token(c, config, "unk_token")) vocab.unk_id = id_of(*t, config_file, "unk_token");
    vocab.add_bos = c.get_bool(config, "<root>", "add_bos_token", vocab.add_bos);
    vocab.add_eos = c.get_bool(config, "<root>", "add_eos_token", vocab.add_eos);
    if (vocab.add_bos && vocab.bos_id < 0) c.fail("add_bos_token", "true, but there is no bos_token");
    if (vocab.add_eos && vocab.eos_id < 0) c.fail("add_eos_token", "true, but there is no eos_token");
  }

  return from_vocabulary(std::move(vocab));
}

}  // namespace llm4dsr
