#include "llm4dsr/model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "internal/atomic_output.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

using json = nlohmann::json;

bool present(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

int64_t get_int(const json& j, const char* key, int64_t fallback, const std::string& source) {
  if (!present(j, key)) return fallback;
  const json& v = j.at(key);
  // Some configs write integral values as floats (e.g. 8192.0).
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return static_cast<int64_t>(v.get<double>());
  LLM4DSR_CHECK(v.is_number_integer(), source << ": key '" << key << "' must be an integer, found " << v.dump());
  return v.get<int64_t>();
}

double get_double(const json& j, const char* key, double fallback, const std::string& source) {
  if (!present(j, key)) return fallback;
  const json& v = j.at(key);
  LLM4DSR_CHECK(v.is_number(), source << ": key '" << key << "' must be a number, found " << v.dump());
  return v.get<double>();
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& source) {
  if (!present(j, key)) return fallback;
  const json& v = j.at(key);
  LLM4DSR_CHECK(v.is_boolean(), source << ": key '" << key << "' must be true or false, found " << v.dump());
  return v.get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& fallback, const std::string& source) {
  if (!present(j, key)) return fallback;
  const json& v = j.at(key);
  LLM4DSR_CHECK(v.is_string(), source << ": key '" << key << "' must be a string, found " << v.dump());
  return v.get<std::string>();
}

void parse_rope(const json& r, const std::string& key, ModelConfig& c, const std::string& source) {
  LLM4DSR_CHECK(r.is_object(), source << ": '" << key << "' must be an object, found " << r.dump());
  const std::string where = source + ": " + key;
  c.rope_theta = get_double(r, "rope_theta", c.rope_theta, source);
  std::string type = get_string(r, "rope_type", get_string(r, "type", "default", where), where);
  if (type == "none") type = "default";
  LLM4DSR_CHECK(type == "default" || type == "linear" || type == "dynamic" || type == "llama3",
                where << ": rope type '" << type << "' is not supported (expected default, linear, dynamic or llama3)");
  RopeScaling& s = c.rope_scaling;
  s.rope_type = type;
  if (type == "default") return;
  LLM4DSR_CHECK(present(r, "factor"), where << ": rope type '" << type << "' needs 'factor'");
  s.factor = get_double(r, "factor", 1.0, where);
  if (type == "llama3") {
    for (const char* k : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      LLM4DSR_CHECK(present(r, k), where << ": rope type 'llama3' needs '" << k << "'");
    s.low_freq_factor = get_double(r, "low_freq_factor", 1.0, where);
    s.high_freq_factor = get_double(r, "high_freq_factor", 4.0, where);
    s.original_max_position_embeddings = get_int(r, "original_max_position_embeddings", 8192, where);
  } else {
    s.original_max_position_embeddings =
        get_int(r, "original_max_position_embeddings", c.max_position_embeddings, where);
  }
}

}  // namespace

void ModelConfig::validate() const {
  LLM4DSR_CHECK(vocab_size > 0, "ModelConfig: vocab_size must be > 0, got " << vocab_size);
  LLM4DSR_CHECK(hidden_size > 0, "ModelConfig: hidden_size must be > 0, got " << hidden_size);
  LLM4DSR_CHECK(intermediate_size > 0, "ModelConfig: intermediate_size must be > 0, got " << intermediate_size);
  LLM4DSR_CHECK(num_hidden_layers >= 0, "ModelConfig: num_hidden_layers must be >= 0, got " << num_hidden_layers);
  LLM4DSR_CHECK(num_attention_heads > 0, "ModelConfig: num_attention_heads must be > 0, got " << num_attention_heads);
  LLM4DSR_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
                "ModelConfig: num_attention_heads (" << num_attention_heads
                                                     << ") must be a multiple of num_key_value_heads (" << num_key_value_heads << ")");
  LLM4DSR_CHECK(head_dim > 0 && head_dim % 2 == 0, "ModelConfig: head_dim must be a positive even number, got " << head_dim);
  LLM4DSR_CHECK(max_position_embeddings > 0, "ModelConfig: max_position_embeddings must be > 0, got " << max_position_embeddings);
  LLM4DSR_CHECK(rms_norm_eps > 0, "ModelConfig: rms_norm_eps must be > 0, got " << rms_norm_eps);
  LLM4DSR_CHECK(rope_theta > 0, "ModelConfig: rope_theta must be > 0, got " << rope_theta);
  LLM4DSR_CHECK(hidden_act == "silu" || hidden_act == "swish",
                "ModelConfig: hidden_act '" << hidden_act << "' is not supported (expected silu)");
  const auto& s = rope_scaling;
  LLM4DSR_CHECK(s.rope_type == "default" || s.rope_type == "linear" || s.rope_type == "dynamic" || s.rope_type == "llama3",
                "ModelConfig: rope type '" << s.rope_type << "' is not supported");
  if (s.rope_type != "default") LLM4DSR_CHECK(s.factor > 0, "ModelConfig: rope factor must be > 0, got " << s.factor);
  if (s.rope_type == "llama3") {
    LLM4DSR_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0,
                  "ModelConfig: llama3 rope needs 0 < low_freq_factor < high_freq_factor, got "
                      << s.low_freq_factor << " and " << s.high_freq_factor);
    LLM4DSR_CHECK(s.original_max_position_embeddings > 0, "ModelConfig: original_max_position_embeddings must be > 0");
  }
}

ModelConfig ModelConfig::from_json(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, false);
  LLM4DSR_CHECK(!j.is_discarded(), source << ": not valid JSON");
  LLM4DSR_CHECK(j.is_object(), source << ": expected a JSON object, found " << j.type_name());
  const std::string model_type = get_string(j, "model_type", "llama", source);
  LLM4DSR_CHECK(model_type == "llama", source << ": model_type '" << model_type
                                              << "' is not supported (expected 'llama')");
  ModelConfig c;
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"})
    LLM4DSR_CHECK(present(j, k), source << ": missing required key '" << k << "'");
  c.vocab_size = get_int(j, "vocab_size", 0, source);
  c.hidden_size = get_int(j, "hidden_size", 0, source);
  c.intermediate_size = get_int(j, "intermediate_size", 0, source);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", 0, source);
  c.num_attention_heads = get_int(j, "num_attention_heads", 0, source);
  LLM4DSR_CHECK(c.num_attention_heads > 0, source << ": num_attention_heads must be > 0, got " << c.num_attention_heads);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = get_int(j, "head_dim", c.hidden_size / c.num_attention_heads, source);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6, source);
  c.rope_theta = get_double(j, "rope_theta", 10000.0, source);
  // transformers >= 4.5x writes rope_parameters (with rope_theta inside); older files rope_scaling.
  if (present(j, "rope_parameters")) parse_rope(j.at("rope_parameters"), "rope_parameters", c, source);
  else if (present(j, "rope_scaling")) parse_rope(j.at("rope_scaling"), "rope_scaling", c, source);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, source);
  c.attention_bias = get_bool(j, "attention_bias", false, source);
  c.mlp_bias = get_bool(j, "mlp_bias", false, source);
  c.initializer_range = get_double(j, "initializer_range", 0.02, source);
  c.hidden_act = get_string(j, "hidden_act", "silu", source);
  c.torch_dtype = get_string(j, "torch_dtype", get_string(j, "dtype", "float32", source), source);
  const int64_t tp = get_int(j, "pretraining_tp", 1, source);
  LLM4DSR_CHECK(tp == 1, source << ": pretraining_tp " << tp << " is not supported (expected 1)");
  c.bos_token_id = get_int(j, "bos_token_id", -1, source);
  c.pad_token_id = get_int(j, "pad_token_id", -1, source);
  c.eos_token_ids.clear();
  if (present(j, "eos_token_id")) {
    const json& e = j.at("eos_token_id");
    if (e.is_array()) {
      for (const auto& x : e) {
        LLM4DSR_CHECK(x.is_number_integer(), source << ": eos_token_id entries must be integers, found " << x.dump());
        c.eos_token_ids.push_back(x.get<int64_t>());
      }
    } else {
      c.eos_token_ids.push_back(get_int(j, "eos_token_id", -1, source));
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    LLM4DSR_THROW(source << ": " << e.what());
  }
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LLM4DSR_CHECK(in, "cannot open model config " << path);
  std::ostringstream os;
  os << in.rdbuf();
  return from_json(os.str(), path);
}

ModelConfig ModelConfig::preset(const std::string& name, int64_t vocab_size) {
  ModelConfig c;
  c.tie_word_embeddings = true;
  c.max_position_embeddings = 2048;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  if (name == "tiny") {
    c.vocab_size = 512;
    c.hidden_size = 64;
    c.intermediate_size = 172;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
  } else if (name == "small") {
    c.vocab_size = 8192;
    c.hidden_size = 256;
    c.intermediate_size = 688;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 4;
  } else if (name == "base") {
    c.vocab_size = 49152;
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.num_hidden_layers = 30;
    c.num_attention_heads = 9;
    c.num_key_value_heads = 3;
    c.rope_theta = 100000.0;
  } else {
    LLM4DSR_THROW("unknown model preset '" << name << "' (expected tiny, small or base)");
  }
  if (vocab_size > 0) c.vocab_size = vocab_size;
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.validate();
  return c;
}

std::string ModelConfig::to_json() const {
  validate();
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["attention_bias"] = attention_bias;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = bos_token_id >= 0 ? nlohmann::ordered_json(bos_token_id) : nlohmann::ordered_json(nullptr);
  if (eos_token_ids.empty()) j["eos_token_id"] = nullptr;
  else if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else j["eos_token_id"] = eos_token_ids;
  j["head_dim"] = head_dim;
  j["hidden_act"] = hidden_act;
  j["hidden_size"] = hidden_size;
  j["initializer_range"] = initializer_range;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["mlp_bias"] = mlp_bias;
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["pad_token_id"] = pad_token_id >= 0 ? nlohmann::ordered_json(pad_token_id) : nlohmann::ordered_json(nullptr);
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = rms_norm_eps;
  // Both spellings: rope_theta/rope_scaling for transformers 4.x, rope_parameters for 5.x.
  j["rope_theta"] = rope_theta;
  nlohmann::ordered_json rope;
  rope["rope_type"] = rope_scaling.rope_type;
  rope["rope_theta"] = rope_theta;
  if (rope_scaling.rope_type != "default") {
    rope["factor"] = rope_scaling.factor;
    if (rope_scaling.rope_type == "llama3") {
      rope["low_freq_factor"] = rope_scaling.low_freq_factor;
      rope["high_freq_factor"] = rope_scaling.high_freq_factor;
      rope["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    nlohmann::ordered_json legacy = rope;
    legacy.erase("rope_theta");
    legacy["type"] = rope_scaling.rope_type;
    j["rope_scaling"] = legacy;
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rope_parameters"] = rope;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["use_cache"] = true;
  j["vocab_size"] = vocab_size;
  return j.dump(2) + "\n";
}

void ModelConfig::save(const std::string& path) const {
  const std::string text = to_json();
  internal::AtomicOutput out(path);
  out.stream() << text;
  out.commit();
}

}  // namespace llm4dsr
