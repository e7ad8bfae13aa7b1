// GGUF -> Llama mapping on a hand-built tiny file: config from llama.* metadata, HF names, and the
// Q/K row un-permutation checked element by element against its definition. (Equality with
// transformers' GGUF loader on real and random files is in tests/python/test_gguf.py.)
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf.h"
#include "llm4dsr/io/gguf_checkpoint.h"
#include "test_support.h"
#include "torch_catch.h"

using llm4dsr::Error;
using llm4dsr::testing::TempDir;
namespace io = llm4dsr::io;

namespace {

struct Tensor {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order
};

struct KV {
  std::string key;
  uint32_t type;  // 4 UINT32, 6 FLOAT32, 8 STRING
  uint64_t u = 0;
  float f = 0;
  std::string s;
};

// Value of element (row, col) of tensor number t: distinct everywhere, exact in fp32.
float value_at(size_t t, int64_t row, int64_t col) { return static_cast<float>(t * 10000 + row * 100 + col); }

std::string build(const std::vector<KV>& kvs, const std::vector<Tensor>& tensors) {
  std::string s;
  auto uint = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  auto str = [&](const std::string& v) { uint(v.size(), 8); s += v; };
  auto pad = [&] { while (s.size() % 32) s.push_back('\0'); };
  uint(0x46554747, 4);
  uint(3, 4);
  uint(tensors.size(), 8);
  uint(kvs.size(), 8);
  for (const auto& kv : kvs) {
    str(kv.key);
    uint(kv.type, 4);
    if (kv.type == 4) uint(kv.u, 4);
    if (kv.type == 6) { uint32_t u; std::memcpy(&u, &kv.f, 4); uint(u, 4); }
    if (kv.type == 8) str(kv.s);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors) {
    str(t.name);
    uint(t.ne.size(), 4);
    uint64_t n = 1;
    for (auto d : t.ne) { uint(d, 8); n *= d; }
    uint(0, 4);  // F32
    uint(offset, 8);
    offsets.push_back(offset);
    offset += (n * 4 + 31) / 32 * 32;
  }
  pad();
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const auto& t = tensors[ti];
    const int64_t cols = static_cast<int64_t>(t.ne[0]);
    const int64_t rows = t.ne.size() > 1 ? static_cast<int64_t>(t.ne[1]) : 1;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        float v = value_at(ti, r, c);
        uint32_t u;
        std::memcpy(&u, &v, 4);
        uint(u, 4);
      }
    pad();
  }
  return s;
}

// hidden 8, 2 heads of 4 over 1 KV head, 1 layer, ffn 16, vocab 10, tied embeddings.
std::vector<KV> tiny_kvs() {
  return {
      {"general.architecture", 8, 0, 0, "llama"},
      {"llama.embedding_length", 4, 8},
      {"llama.block_count", 4, 1},
      {"llama.feed_forward_length", 4, 16},
      {"llama.attention.head_count", 4, 2},
      {"llama.attention.head_count_kv", 4, 1},
      {"llama.rope.dimension_count", 4, 4},
      {"llama.context_length", 4, 64},
      {"llama.rope.freq_base", 6, 0, 500000.0f},
      {"llama.attention.layer_norm_rms_epsilon", 6, 0, 1e-5f},
      {"tokenizer.ggml.bos_token_id", 4, 3},
      {"tokenizer.ggml.eos_token_id", 4, 4},
  };
}

std::vector<Tensor> tiny_tensors() {
  return {
      {"token_embd.weight", {8, 10}},      {"output_norm.weight", {8}},
      {"blk.0.attn_q.weight", {8, 8}},     {"blk.0.attn_k.weight", {8, 4}},
      {"blk.0.attn_v.weight", {8, 4}},     {"blk.0.attn_output.weight", {8, 8}},
      {"blk.0.ffn_gate.weight", {8, 16}},  {"blk.0.ffn_up.weight", {8, 16}},
      {"blk.0.ffn_down.weight", {16, 8}},  {"blk.0.attn_norm.weight", {8}},
      {"blk.0.ffn_norm.weight", {8}},
  };
}

size_t index_of(const std::vector<Tensor>& ts, const std::string& name) {
  for (size_t i = 0; i < ts.size(); ++i)
    if (ts[i].name == name) return i;
  return ts.size();
}

void expect_error(const std::function<void()>& fn, const std::string& fragment) {
  try {
    fn();
    FAIL("expected llm4dsr::Error containing '" << fragment << "'");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(fragment) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("GGUF llama config and HF state dict from a hand-built file", "[gguf]") {
  TempDir dir;
  const auto tensors = tiny_tensors();
  io::GGUFFile f(dir.write("tiny.gguf", build(tiny_kvs(), tensors)));

  const llm4dsr::ModelConfig c = io::model_config_from_gguf(f);
  CHECK(c.vocab_size == 10);
  CHECK(c.hidden_size == 8);
  CHECK(c.intermediate_size == 16);
  CHECK(c.num_hidden_layers == 1);
  CHECK(c.num_attention_heads == 2);
  CHECK(c.num_key_value_heads == 1);
  CHECK(c.head_dim == 4);
  CHECK(c.max_position_embeddings == 64);
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rms_norm_eps == static_cast<double>(1e-5f));
  CHECK(c.rope_scaling.rope_type == "default");
  CHECK(c.tie_word_embeddings);
  CHECK(c.bos_token_id == 3);
  CHECK(c.eos_token_ids == std::vector<int64_t>{4});
  CHECK(c.pad_token_id == -1);

  const auto sd = io::hf_state_dict_from_gguf(f);
  CHECK(sd.size() == 11);
  CHECK(sd.count("lm_head.weight") == 0);
  CHECK(sd.at("model.embed_tokens.weight").sizes() == torch::IntArrayRef({10, 8}));
  CHECK(sd.at("model.embed_tokens.weight")[7][5].item<float>() == value_at(0, 7, 5));
  CHECK(sd.at("model.layers.0.mlp.down_proj.weight").sizes() == torch::IntArrayRef({8, 16}));
  CHECK(sd.at("model.layers.0.post_attention_layernorm.weight")[3].item<float>() ==
        value_at(index_of(tensors, "blk.0.ffn_norm.weight"), 0, 3));

  // Q (2 heads) and K (1 head) of D = 4 rows each: GGUF row h*D + 2i + j is HF row h*D + j*D/2 + i.
  const size_t qi = index_of(tensors, "blk.0.attn_q.weight"), ki = index_of(tensors, "blk.0.attn_k.weight");
  const torch::Tensor q = sd.at("model.layers.0.self_attn.q_proj.weight");
  const torch::Tensor k = sd.at("model.layers.0.self_attn.k_proj.weight");
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        for (int col = 0; col < 8; ++col) {
          CHECK(q[h * 4 + j * 2 + i][col].item<float>() == value_at(qi, h * 4 + 2 * i + j, col));
          if (h == 0) CHECK(k[j * 2 + i][col].item<float>() == value_at(ki, 2 * i + j, col));
        }
  // V is not permuted.
  const size_t vi = index_of(tensors, "blk.0.attn_v.weight");
  CHECK(sd.at("model.layers.0.self_attn.v_proj.weight")[1][2].item<float>() == value_at(vi, 1, 2));

  const auto half = io::hf_state_dict_from_gguf(f, torch::kBFloat16);
  CHECK(half.at("model.norm.weight").scalar_type() == torch::kBFloat16);

  llm4dsr::LlamaModel model = io::load_gguf_checkpoint(f.path());
  for (const auto& [name, t] : model->hf_state()) {
    INFO(name);
    REQUIRE(sd.count(name));
    CHECK(torch::equal(t, sd.at(name)));
  }
}

TEST_CASE("GGUF llama mapping rejects what it cannot represent", "[gguf]") {
  TempDir dir;
  auto kvs = tiny_kvs();
  auto tensors = tiny_tensors();
  auto open = [&](const std::vector<KV>& k, const std::vector<Tensor>& t) {
    return io::GGUFFile(dir.write("x.gguf", build(k, t)));
  };

  auto untied = tensors;
  untied.push_back({"output.weight", {8, 10}});
  io::GGUFFile u = open(kvs, untied);
  CHECK_FALSE(io::model_config_from_gguf(u).tie_word_embeddings);
  CHECK(io::hf_state_dict_from_gguf(u).count("lm_head.weight") == 1);

  auto gpt2 = kvs;
  gpt2[0].s = "gpt2";
  expect_error([&] { io::model_config_from_gguf(open(gpt2, tensors)); }, "only 'llama' models");

  auto missing_key = kvs;
  missing_key.erase(missing_key.begin() + 1);
  expect_error([&] { io::model_config_from_gguf(open(missing_key, tensors)); }, "llama.embedding_length");

  auto missing = tensors;
  missing.pop_back();
  expect_error([&] { io::hf_state_dict_from_gguf(open(kvs, missing)); }, "missing tensor 'blk.0.ffn_norm.weight'");

  auto extra = tensors;
  extra.push_back({"blk.1.attn_q.weight", {8, 8}});
  expect_error([&] { io::hf_state_dict_from_gguf(open(kvs, extra)); }, "unexpected tensor 'blk.1.attn_q.weight'");

  auto bad_shape = tensors;
  bad_shape[index_of(bad_shape, "blk.0.attn_k.weight")].ne = {8, 8};
  expect_error([&] { io::hf_state_dict_from_gguf(open(kvs, bad_shape)); }, "tensor 'blk.0.attn_k.weight' has shape");

  auto freqs = tensors;
  freqs.push_back({"rope_freqs.weight", {2}});
  expect_error([&] { io::model_config_from_gguf(open(kvs, freqs)); }, "rope_freqs.weight");

  auto yarn = kvs;
  yarn.push_back({"llama.rope.scaling.type", 8, 0, 0, "yarn"});
  expect_error([&] { io::model_config_from_gguf(open(yarn, tensors)); }, "'yarn' is not supported");

  auto linear = kvs;
  linear.push_back({"llama.rope.scaling.type", 8, 0, 0, "linear"});
  linear.push_back({"llama.rope.scaling.factor", 6, 0, 4.0f});
  const auto lc = io::model_config_from_gguf(open(linear, tensors));
  CHECK(lc.rope_scaling.rope_type == "linear");
  CHECK(lc.rope_scaling.factor == 4.0);

  auto partial = kvs;
  REQUIRE(partial[6].key == "llama.rope.dimension_count");
  partial[6].u = 2;  // 2 rotary dimensions of a head size of 4
  partial.push_back({"llama.attention.key_length", 4, 4});
  expect_error([&] { io::model_config_from_gguf(open(partial, tensors)); }, "partial rotary");

  auto vocab = kvs;
  vocab.push_back({"llama.vocab_size", 4, 11});
  expect_error([&] { io::model_config_from_gguf(open(vocab, tensors)); }, "token_embd.weight has 10 rows");
}
