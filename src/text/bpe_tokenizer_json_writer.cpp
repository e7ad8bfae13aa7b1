// BpeTokenizer::save_tokenizer_json: the inverse of from_tokenizer_json, in the layout HF
// `tokenizers` writes, so a model exported from a GGUF file loads in transformers with our ids.
#include <nlohmann/json.hpp>

#include <filesystem>

#include "llm4dsr/data/writers.h"
#include "llm4dsr/error.h"
#include "llm4dsr/text/bpe_tokenizer.h"

namespace llm4dsr {

namespace {

using ordered_json = nlohmann::ordered_json;
using Step = BpePreTokenizerStep;

const char* behavior_name(Step::Behavior b) {
  switch (b) {
    case Step::Behavior::Isolated: return "Isolated";
    case Step::Behavior::Removed: return "Removed";
    case Step::Behavior::MergedWithPrevious: return "MergedWithPrevious";
    case Step::Behavior::MergedWithNext: return "MergedWithNext";
    case Step::Behavior::Contiguous: return "Contiguous";
  }
  return "Isolated";
}

// HF's ByteLevel pre-tokenizer maps bytes to GPT-2's code points, so every regex split must run
// before it: our steps become Split entries followed by one ByteLevel without its own regex.
ordered_json pre_tokenizer_json(const std::vector<Step>& steps, const std::string& path) {
  ordered_json sequence = ordered_json::array();
  bool prefix_space = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    if (s.kind == Step::Kind::PrefixSpace) {
      LLM4DSR_CHECK(i == 0, path << ": a prefix space after other pre-tokenizer steps cannot be written as tokenizer.json");
      prefix_space = true;
      continue;
    }
    ordered_json split;
    split["type"] = "Split";
    split["pattern"] = ordered_json::object({{s.literal ? "String" : "Regex", s.pattern}});
    split["behavior"] = behavior_name(s.behavior);
    split["invert"] = s.invert;
    sequence.push_back(split);
  }
  ordered_json byte_level;
  byte_level["type"] = "ByteLevel";
  byte_level["add_prefix_space"] = prefix_space;
  byte_level["trim_offsets"] = true;
  byte_level["use_regex"] = false;
  sequence.push_back(byte_level);
  ordered_json out;
  out["type"] = "Sequence";
  out["pretokenizers"] = sequence;
  return out;
}

ordered_json token_or_null(const BpeVocabulary& v, TokenId id) {
  return id >= 0 ? ordered_json(v.tokens[id]) : ordered_json(nullptr);
}

}  // namespace

void BpeTokenizer::save_tokenizer_json(const std::string& path) const {
  const BpeVocabulary& v = vocabulary();
  ordered_json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  for (const auto& t : v.added_tokens) {
    added.push_back({{"id", t.id},
                     {"content", t.content},
                     {"single_word", false},
                     {"lstrip", t.lstrip},
                     {"rstrip", t.rstrip},
                     {"normalized", t.normalized},
                     {"special", t.special}});
  }
  root["added_tokens"] = added;
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = pre_tokenizer_json(v.pre_tokenizer, path);
  if (v.add_bos || v.add_eos) {
    // TemplateProcessing: what makes HF add BOS/EOS the way encode(add_bos, add_eos) does.
    ordered_json single = ordered_json::array(), special = ordered_json::object();
    auto add_special = [&](TokenId id) {
      const std::string& piece = v.tokens[id];
      single.push_back({{"SpecialToken", {{"id", piece}, {"type_id", 0}}}});
      special[piece] = {{"id", piece}, {"ids", {id}}, {"tokens", {piece}}};
    };
    if (v.add_bos && v.bos_id >= 0) add_special(v.bos_id);
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (v.add_eos && v.eos_id >= 0) add_special(v.eos_id);
    ordered_json pair = single;
    pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
    root["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", special}};
  } else {
    root["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  }
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < v.tokens.size(); ++id) vocab[v.tokens[id]] = id;
  ordered_json merges = ordered_json::array();
  for (const auto& m : v.merges) merges.push_back({m.first, m.second});
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", token_or_null(v, v.bpe_unk_id)},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", v.ignore_merges},
                   {"vocab", vocab},
                   {"merges", merges}};
  write_file_atomic(path, root.dump(2, ' ', false, nlohmann::json::error_handler_t::strict) + "\n");

  ordered_json config;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  config["add_bos_token"] = v.add_bos;
  config["add_eos_token"] = v.add_eos;
  config["bos_token"] = token_or_null(v, v.bos_id);
  config["eos_token"] = token_or_null(v, v.eos_id);
  config["pad_token"] = token_or_null(v, v.pad_id);
  config["unk_token"] = token_or_null(v, v.unk_id);
  config["clean_up_tokenization_spaces"] = false;
  config["model_max_length"] = 1000000000;
  const auto config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  write_file_atomic(config_path.string(), config.dump(2) + "\n");
}

}  // namespace llm4dsr
