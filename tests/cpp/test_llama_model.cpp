#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include <nlohmann/json.hpp>

#include "llm4dsr/error.h"
#include "llm4dsr/io/hf_checkpoint.h"
#include "llm4dsr/io/peft_adapter.h"
#include "llm4dsr/io/safetensors.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/kv_cache.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/model/lora.h"
#include "test_support.h"
#include "torch_catch.h"

using llm4dsr::Error;
using llm4dsr::KVCache;
using llm4dsr::LlamaModel;
using llm4dsr::LoraConfig;
using llm4dsr::ModelConfig;
using llm4dsr::testing::TempDir;
namespace io = llm4dsr::io;

namespace {

ModelConfig tiny_config(bool tied = false) {
  ModelConfig c = ModelConfig::preset("tiny", 97);
  c.num_hidden_layers = 2;
  c.tie_word_embeddings = tied;
  return c;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("ModelConfig reads the config.json variants of real checkpoints", "[model]") {
  // transformers 4.x style: rope_scaling with "type", no num_key_value_heads / head_dim, eos list.
  auto c = ModelConfig::from_json(R"({"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4,"rope_theta":500000.0,
      "rope_scaling":{"type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                      "original_max_position_embeddings":8192},
      "torch_dtype":"bfloat16","eos_token_id":[5,6],"bos_token_id":4,"tie_word_embeddings":true})");
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rope_scaling.rope_type == "llama3");
  CHECK(c.rope_scaling.factor == 8.0);
  CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(c.eos_token_ids == std::vector<int64_t>{5, 6});
  CHECK(c.tie_word_embeddings);

  // transformers 5.x style: rope_parameters holding rope_theta, "dtype", head_dim null.
  auto d = ModelConfig::from_json(R"({"vocab_size":100,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
      "num_attention_heads":4,"num_key_value_heads":2,"head_dim":null,"dtype":"float16","eos_token_id":2,
      "rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":1000.0}})");
  CHECK(d.num_key_value_heads == 2);
  CHECK(d.head_dim == 16);
  CHECK(d.rope_theta == 1000.0);
  CHECK(d.rope_scaling.rope_type == "linear");
  CHECK(d.rope_scaling.factor == 2.0);
  CHECK(d.torch_dtype == "float16");
  CHECK(d.eos_token_ids == std::vector<int64_t>{2});
  CHECK_FALSE(d.tie_word_embeddings);

  // to_json -> from_json keeps every field.
  auto e = ModelConfig::from_json(c.to_json());
  CHECK(e.vocab_size == c.vocab_size);
  CHECK(e.num_key_value_heads == c.num_key_value_heads);
  CHECK(e.rope_scaling.rope_type == "llama3");
  CHECK(e.rope_scaling.low_freq_factor == c.rope_scaling.low_freq_factor);
  CHECK(e.rope_theta == c.rope_theta);
  CHECK(e.eos_token_ids == c.eos_token_ids);
  CHECK(e.tie_word_embeddings);
  auto j = nlohmann::json::parse(c.to_json());
  CHECK(j["model_type"] == "llama");
  CHECK(j["architectures"][0] == "LlamaForCausalLM");

  CHECK_THROWS_WITH(ModelConfig::from_json(R"({"vocab_size":100})", "x/config.json"),
                    Catch::Contains("x/config.json") && Catch::Contains("hidden_size"));
  CHECK_THROWS_WITH(ModelConfig::from_json(R"({"model_type":"gpt2"})"), Catch::Contains("gpt2"));
  CHECK_THROWS_WITH(ModelConfig::from_json(R"({"vocab_size":100,"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3})"), Catch::Contains("multiple of num_key_value_heads"));
  CHECK_THROWS_WITH(ModelConfig::from_json(R"({"vocab_size":100,"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4,"rope_scaling":{"type":"yarn","factor":2}})"), Catch::Contains("yarn"));
  CHECK_THROWS_WITH(ModelConfig::from_json("{nope"), Catch::Contains("not valid JSON"));
  CHECK_THROWS_WITH(ModelConfig::preset("huge"), Catch::Contains("huge"));
  CHECK(ModelConfig::preset("small", 1000).vocab_size == 1000);
}

TEST_CASE("RMSNorm matches a hand computation", "[model]") {
  llm4dsr::RMSNorm norm(4, 1e-6, torch::TensorOptions());
  norm->weight.data().copy_(torch::tensor({1.0f, 2.0f, 0.5f, -1.0f}));
  auto x = torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}});
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  auto expected = torch::tensor({{1.0f / rms * 1.0, 2.0f / rms * 2.0, 3.0f / rms * 0.5, 4.0f / rms * -1.0}}, torch::kFloat32);
  CHECK(max_diff(norm(x), expected) < 1e-6);
}

TEST_CASE("RMSNorm's fused forward and backward equal autograd through HF's formula", "[model]") {
  // HF: w * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype)
  auto hf = [](const torch::Tensor& x, const torch::Tensor& w, double eps) {
    auto h = x.to(torch::kFloat32);
    h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps);
    return w * h.to(x.scalar_type());
  };
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    INFO(dtype);
    llm4dsr::RMSNorm norm(24, 1e-5, torch::TensorOptions().dtype(dtype));
    {
      torch::NoGradGuard g;
      norm->weight.copy_(1 + 0.3 * torch::randn({24}));
    }
    auto x = (3 * torch::randn({3, 50, 24}) + 0.5).to(dtype);  // 150 rows: several row blocks
    auto w_ref = norm->weight.detach().clone().requires_grad_(true);
    auto x_ref = x.clone().requires_grad_(true);
    auto expected = hf(x_ref, w_ref, 1e-5);
    const double tol = dtype == torch::kFloat32 ? 1e-5 : 3e-2;
    {
      torch::NoGradGuard g;
      CHECK(max_diff(norm(x).to(torch::kFloat32), expected.detach().to(torch::kFloat32)) <= tol);
    }
    auto x_ours = x.clone().requires_grad_(true);
    auto got = norm(x_ours);
    CHECK(max_diff(got.detach().to(torch::kFloat32), expected.detach().to(torch::kFloat32)) <= tol);
    auto upstream = torch::randn(got.sizes()).to(dtype);
    (got.to(torch::kFloat32) * upstream.to(torch::kFloat32)).sum().backward();
    (expected.to(torch::kFloat32) * upstream.to(torch::kFloat32)).sum().backward();
    const double gscale = x_ref.grad().abs().max().item<double>();
    CHECK(max_diff(x_ours.grad().to(torch::kFloat32), x_ref.grad().to(torch::kFloat32)) <= tol * std::max(1.0, gscale));
    const double wscale = w_ref.grad().abs().max().item<double>();
    CHECK(max_diff(norm->weight.grad().to(torch::kFloat32), w_ref.grad().to(torch::kFloat32)) <=
          tol * std::max(1.0, wscale));
  }
}

TEST_CASE("bf16 MLP without gradients (oneDNN epilogues where available) equals silu(gate) * up", "[model]") {
  ModelConfig c = tiny_config();
  llm4dsr::LlamaMLP mlp(c, torch::TensorOptions().dtype(torch::kBFloat16));
  {
    torch::NoGradGuard g;
    for (auto& p : mlp->parameters()) p.normal_(0, 0.2);
  }
  auto x = torch::randn({3, 7, c.hidden_size}).to(torch::kBFloat16);
  auto expected = (torch::silu(torch::linear(x, mlp->gate_proj->weight).to(torch::kFloat32)).to(torch::kBFloat16)
                       .to(torch::kFloat32) *
                   torch::linear(x, mlp->up_proj->weight).to(torch::kFloat32));
  torch::Tensor got;
  {
    torch::NoGradGuard g;
    got = mlp->activation(x);
  }
  REQUIRE(got.sizes() == torch::IntArrayRef({3, 7, c.intermediate_size}));
  CHECK(got.scalar_type() == torch::kBFloat16);
  // Rounding of the fp32 accumulators before or after the epilogue: a few bf16 ulps (2^-8 relative).
  CHECK(max_diff(got.to(torch::kFloat32), expected) <= 0.02 * expected.abs().max().item<double>());
  CHECK(max_diff(got.to(torch::kFloat32), mlp->activation(x).detach().to(torch::kFloat32)) <=
        0.02 * expected.abs().max().item<double>());  // the autograd path
}

TEST_CASE("bf16 products without gradients (oneDNN-reordered weights) follow every change of the weight",
          "[model][lora]") {
  // Where the machine has native bf16 GEMMs, these products read a copy of the weight reordered once
  // for oneDNN; the reference is the same product in fp32 from the current bf16 weight. A stale copy
  // would keep giving the first weight's output, far outside the bf16 rounding allowed here.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  llm4dsr::LoraLinear lin(64, 48, /*bias=*/true, torch::TensorOptions().dtype(torch::kBFloat16));
  torch::NoGradGuard no_grad;
  lin->weight.normal_(0, 0.2);
  lin->bias.normal_(0, 0.2);
  const auto x = torch::randn({3, 5, 64}).to(torch::kBFloat16);
  auto reference = [&] {
    return torch::linear(x.to(torch::kFloat32), lin->weight.to(torch::kFloat32), lin->bias.to(torch::kFloat32));
  };
  // The output's own bf16 rounding plus the order of the fp32 accumulation: a few ulps of 2^-8.
  auto close = [](const torch::Tensor& got, const torch::Tensor& want) {
    return max_diff(got, want) <= 0.02 * want.abs().max().item<double>();
  };
  const auto first = lin(x);
  CHECK(first.scalar_type() == torch::kBFloat16);
  CHECK(first.sizes() == torch::IntArrayRef({3, 5, 48}));
  CHECK(close(first, reference()));
  CHECK(torch::equal(lin(x), first));  // the reused copy gives the same bits

  SECTION("an in-place change") {
    lin->weight.mul_(-0.5);
    CHECK(close(lin(x), reference()));
    CHECK_FALSE(close(lin(x), first.to(torch::kFloat32)));
  }
  SECTION("merge and unmerge of an adapter") {
    lin->add_adapter(4, 8.0, 0.0, /*use_rslora=*/false, gen);
    lin->lora_B.normal_(0, 0.5);
    const auto unmerged = lin(x).to(torch::kFloat32);
    CHECK_FALSE(close(unmerged, first.to(torch::kFloat32)));
    lin->merge();
    CHECK(close(lin(x), unmerged));
    CHECK(close(lin(x), reference()));
    lin->unmerge();
    CHECK(close(lin(x), unmerged));
  }
  SECTION("a new weight tensor in the same module") {
    lin->weight.set_data(torch::randn({48, 64}).mul_(0.2).to(torch::kBFloat16));
    CHECK(close(lin(x), reference()));
  }
  SECTION("the residual form, and a round trip through fp32") {
    const auto residual = torch::randn({3, 5, 48}).to(torch::kBFloat16);
    llm4dsr::LoraLinear no_bias(64, 48, /*bias=*/false, torch::TensorOptions().dtype(torch::kBFloat16));
    no_bias->weight.copy_(lin->weight);
    const auto want = residual.to(torch::kFloat32) + torch::linear(x.to(torch::kFloat32), no_bias->weight.to(torch::kFloat32));
    CHECK(close(no_bias->forward_add(x, residual), want));
    CHECK(close(no_bias->forward_add(x, residual.clone(), /*in_place=*/true), want));
  }
  SECTION("enough rows for one block per thread") {
    // With two threads and 512 to 2,047 rows the product runs as one row block per thread.
    const int previous = at::get_num_threads();
    at::set_num_threads(2);
    const auto many = torch::randn({3, 211, 64}).to(torch::kBFloat16);
    const auto residual = torch::randn({3, 211, 48}).to(torch::kBFloat16);
    llm4dsr::LoraLinear no_bias(64, 48, /*bias=*/false, torch::TensorOptions().dtype(torch::kBFloat16));
    no_bias->weight.copy_(lin->weight);
    const auto product = torch::linear(many.to(torch::kFloat32), lin->weight.to(torch::kFloat32));
    const auto got = lin(many);
    const auto got_add = no_bias->forward_add(many, residual);
    torch::Tensor got_inference;
    {
      c10::InferenceMode inference;  // the blocks are written on pool threads, which must share the mode
      got_inference = lin(many);
    }
    at::set_num_threads(previous);
    CHECK(torch::equal(got_inference, got));
    CHECK(got.sizes() == torch::IntArrayRef({3, 211, 48}));
    CHECK(close(got, product + lin->bias.to(torch::kFloat32)));
    CHECK(close(got_add, product + residual.to(torch::kFloat32)));
  }
  SECTION("threads sharing one module") {
    std::vector<torch::Tensor> outs(4);
    std::vector<std::thread> threads;
    lin->weight.add_(0.1);
    for (size_t i = 0; i < outs.size(); ++i)
      threads.emplace_back([&, i] {
        torch::NoGradGuard g;
        outs[i] = lin(x);
      });
    for (auto& t : threads) t.join();
    for (const auto& o : outs) CHECK(torch::equal(o, outs[0]));
    CHECK(close(outs[0], reference()));
  }
}

TEST_CASE("bf16 LoRA training over a frozen base, in row blocks per thread: outputs and gradients equal the formula's",
          "[model][lora]") {
  // 633 rows with two threads: the frozen products (forward and input gradient) run as one row block
  // per thread. The reference is autograd through y = r + x W^T + s B(A x) in fp32 from the same values.
  const int previous = at::get_num_threads();
  at::set_num_threads(2);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  llm4dsr::LoraLinear lin(64, 48, /*bias=*/false, torch::TensorOptions().dtype(torch::kBFloat16));
  {
    torch::NoGradGuard g;
    lin->weight.normal_(0, 0.2);
  }
  lin->add_adapter(4, 8.0, /*dropout=*/0.0, /*use_rslora=*/false, gen);
  {
    torch::NoGradGuard g;
    lin->lora_B.normal_(0, 0.2);
  }
  const auto x0 = torch::randn({3, 211, 64}).to(torch::kBFloat16);
  const auto r0 = torch::randn({3, 211, 48}).to(torch::kBFloat16);
  const auto probe = torch::randn({3, 211, 48});
  for (bool with_residual : {false, true}) {
    CAPTURE(with_residual);
    auto x = x0.clone().requires_grad_(true);
    auto r = r0.clone().requires_grad_(true);
    lin->zero_grad();
    auto y = with_residual ? lin->forward_add(x, r) : lin(x);
    (y.to(torch::kFloat32) * probe).sum().backward();

    auto xr = x0.to(torch::kFloat32).requires_grad_(true);
    auto rr = r0.to(torch::kFloat32).requires_grad_(true);
    auto A = lin->lora_A.detach().clone().requires_grad_(true);
    auto B = lin->lora_B.detach().clone().requires_grad_(true);
    auto yr = torch::linear(xr, lin->weight.detach().to(torch::kFloat32)) +
              lin->scaling() * torch::linear(torch::linear(xr, A), B);
    if (with_residual) yr = yr + rr;
    (yr * probe).sum().backward();

    auto close = [](const torch::Tensor& got, const torch::Tensor& want) {
      return max_diff(got, want) <= 0.02 * want.abs().max().item<double>();
    };
    CHECK(close(y.detach(), yr.detach()));
    REQUIRE(x.grad().defined());
    CHECK(close(x.grad(), xr.grad()));
    CHECK(close(lin->lora_A.grad(), A.grad()));
    CHECK(close(lin->lora_B.grad(), B.grad()));
    CHECK_FALSE(lin->weight.grad().defined());
    if (with_residual) CHECK(close(r.grad(), rr.grad()));
  }
  at::set_num_threads(previous);
}

TEST_CASE("bf16 LlamaModel: logits without gradients equal the autograd path's and follow the tied lm_head",
          "[model]") {
  ModelConfig config = tiny_config(/*tied=*/true);
  LlamaModel model(config, torch::kCPU, torch::kBFloat16, 5);
  const auto ids = torch::randint(0, config.vocab_size, {2, 9}, torch::kInt64);
  const auto with_grad = model(ids).detach().to(torch::kFloat32);  // autograd path: plain ATen products
  torch::Tensor inference;
  {
    torch::NoGradGuard g;
    inference = model(ids).to(torch::kFloat32);
    // Changing the embedding (the tied lm_head) in place changes the logits the same way in both paths.
    model->embed_tokens->weight.mul_(2);
  }
  // Logits are O(1) here; bf16 through two layers (and oneDNN's accumulation order) keeps ~2 digits.
  CHECK(max_diff(inference, with_grad) <= 0.03 * with_grad.abs().max().item<double>());
  const auto doubled = model(ids).detach().to(torch::kFloat32);
  torch::NoGradGuard g;
  const auto doubled_inference = model(ids).to(torch::kFloat32);
  CHECK(max_diff(doubled_inference, doubled) <= 0.03 * doubled.abs().max().item<double>());
  CHECK(max_diff(doubled_inference, inference) > 0.1 * inference.abs().max().item<double>());

  // Packing off: the copies are dropped, none is made again, and the logits stay the same product's.
  const bool packed = model->projections().front().second->has_packed_weight();
  model->set_weight_packing(false);
  CHECK_FALSE(model->weight_packing());
  const auto unpacked = model(ids).to(torch::kFloat32);
  for (const auto& [name, proj] : model->projections()) {
    CAPTURE(name);
    CHECK_FALSE(proj->has_packed_weight());
  }
  CHECK(max_diff(unpacked, doubled) <= 0.03 * doubled.abs().max().item<double>());
  model->set_weight_packing(true);
  model(ids);
  CHECK(model->projections().front().second->has_packed_weight() == packed);
}

TEST_CASE("LlamaModel: seeded init, logits at positions, padding and KV cache", "[model]") {
  torch::NoGradGuard no_grad;
  const ModelConfig config = tiny_config();
  LlamaModel model(config, torch::kCPU, torch::kFloat32, /*seed=*/7);
  model->eval();
  LlamaModel same(config, torch::kCPU, torch::kFloat32, /*seed=*/7);
  LlamaModel other(config, torch::kCPU, torch::kFloat32, /*seed=*/8);
  CHECK(torch::equal(model->embed_tokens->weight, same->embed_tokens->weight));
  CHECK_FALSE(torch::equal(model->embed_tokens->weight, other->embed_tokens->weight));
  // HF initialisation: normal(0, 0.02) weights, unit norms.
  CHECK(std::abs(model->embed_tokens->weight.std().item<double>() - 0.02) < 0.002);
  CHECK(torch::equal(model->norm->weight, torch::ones({config.hidden_size})));

  auto ids = torch::randint(0, config.vocab_size, {2, 9}, torch::kInt64);
  auto logits = model(ids);
  REQUIRE(logits.sizes() == torch::IntArrayRef({2, 9, config.vocab_size}));

  SECTION("causality: a prefix gives the same logits as the full sequence's first positions") {
    auto prefix = model(ids.narrow(1, 0, 5));
    CHECK(max_diff(prefix, logits.narrow(1, 0, 5)) < 1e-5);
  }
  SECTION("logits only at requested positions") {
    auto last = model(ids, torch::Tensor(), nullptr, torch::tensor({-1}, torch::kInt64));
    CHECK(max_diff(last.squeeze(1), logits.select(1, 8)) < 1e-6);
    auto per_row = model(ids, torch::Tensor(), nullptr, torch::tensor({{0, 3}, {8, 1}}, torch::kInt64));
    CHECK(max_diff(per_row[0][1], logits[0][3]) < 1e-6);
    CHECK(max_diff(per_row[1][0], logits[1][8]) < 1e-6);
    CHECK_THROWS_AS(model(ids, torch::Tensor(), nullptr, torch::tensor({9}, torch::kInt64)), Error);
  }
  SECTION("left-padded rows equal their unpadded runs") {
    // Row 0: 9 tokens; row 1: 3 pads then 6 tokens.
    auto mask = torch::ones({2, 9}, torch::kInt64);
    mask[1].narrow(0, 0, 3).zero_();
    auto padded = ids.clone();
    padded[1].narrow(0, 0, 3).fill_(0);
    auto out = model(padded, mask);
    CHECK(max_diff(out[0], logits[0]) < 1e-5);
    auto alone = model(ids[1].narrow(0, 3, 6).unsqueeze(0));
    CHECK(max_diff(out[1].narrow(0, 3, 6), alone[0]) < 1e-5);
    CHECK_FALSE(torch::isnan(out).any().item<bool>());
    auto pos = llm4dsr::LlamaModelImpl::position_ids_from_mask(mask, 9);
    CHECK(torch::equal(pos[1], torch::tensor({0, 0, 0, 0, 1, 2, 3, 4, 5}, torch::kInt64)));
  }
  SECTION("KV-cache decoding equals a full forward, with and without padding") {
    auto mask = torch::ones({2, 9}, torch::kInt64);
    mask[0].narrow(0, 0, 2).zero_();
    auto full = model(ids, mask);
    KVCache cache = model->make_cache(2, 16);
    // Prompt of 5 (HF-style full mask), then one token at a time with the new tokens' mask only.
    auto first = model(ids.narrow(1, 0, 5), mask.narrow(1, 0, 5), &cache);
    CHECK(cache.length() == 5);
    CHECK(max_diff(first.narrow(1, 2, 3), full.narrow(1, 2, 3)) < 1e-5);
    for (int64_t t = 5; t < 9; ++t) {
      auto step = model(ids.narrow(1, t, 1), torch::ones({2, 1}, torch::kInt64), &cache);
      CHECK(max_diff(step.squeeze(1), full.select(1, t)) < 1e-5);
    }
    CHECK(cache.length() == 9);
    // Storage was reserved once: the same buffers after decoding.
    const void* before = cache.mask().data_ptr();
    cache.reset();
    auto again = model(ids, mask, &cache);
    CHECK(cache.mask().data_ptr() == before);
    CHECK(max_diff(again.narrow(1, 2, 7), full.narrow(1, 2, 7)) < 1e-5);
    auto over = model->make_cache(2, 4);
    CHECK_THROWS_WITH(model(ids, torch::Tensor(), &over), Catch::Contains("exceed max_length"));
  }
  SECTION("logits at a few positions: the cache still holds every position's keys and values") {
    // Only the read positions pass the last layer's MLP; its keys/values must cover all of them.
    auto mask = torch::ones({2, 8}, torch::kInt64);
    mask[1].narrow(0, 0, 3).zero_();
    KVCache read_few = model->make_cache(2, 9), read_all = model->make_cache(2, 9);
    auto few = model(ids.narrow(1, 0, 8), mask, &read_few, torch::tensor({{7, 4}, {7, 3}}, torch::kInt64));
    auto all = model(ids.narrow(1, 0, 8), mask, &read_all);
    CHECK(max_diff(few[0][1], all[0][4]) < 1e-5);
    CHECK(max_diff(few[1][1], all[1][3]) < 1e-5);
    for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
      CHECK(max_diff(read_few.keys(l), read_all.keys(l)) < 1e-6);
      CHECK(max_diff(read_few.values(l), read_all.values(l)) < 1e-6);
    }
    auto next = model(ids.narrow(1, 8, 1), torch::ones({2, 1}, torch::kInt64), &read_few);
    CHECK(max_diff(next[0][0], logits[0][8]) < 1e-5);
  }
  SECTION("a prefix read out of one cache seeds another, whose continuation equals the full forward") {
    KVCache prefix = model->make_cache(2, 5);
    model(ids.narrow(1, 0, 5), torch::Tensor(), &prefix);
    CHECK(prefix.keys(0).sizes() == torch::IntArrayRef({2, config.num_key_value_heads, 5, config.head_dim}));
    KVCache seeded = model->make_cache(2, 9);
    for (int64_t l = 0; l < seeded.num_layers(); ++l) seeded.append(l, prefix.keys(l), prefix.values(l));
    seeded.append_mask(prefix.mask());
    seeded.advance(5);
    auto rest = model(ids.narrow(1, 5, 4), torch::Tensor(), &seeded);
    CHECK(max_diff(rest, logits.narrow(1, 5, 4)) < 1e-5);
    CHECK_THROWS_WITH(prefix.keys(config.num_hidden_layers), Catch::Contains("out of range"));
  }
  SECTION("reordering the cache reorders the continuation") {
    KVCache cache = model->make_cache(2, 12);
    model(ids.narrow(1, 0, 8), torch::Tensor(), &cache);
    cache.reorder(torch::tensor({1, 0}, torch::kInt64));
    auto step = model(ids.narrow(1, 8, 1).flip(0), torch::Tensor(), &cache);
    CHECK(max_diff(step.squeeze(1), logits.select(1, 8).flip(0)) < 1e-5);
  }
  SECTION("bf16 on CPU stays close to fp32") {
    LlamaModel half(config, torch::kCPU, torch::kBFloat16, 7);
    auto lb = half(ids).to(torch::kFloat32);
    CHECK(lb.scalar_type() == torch::kFloat32);
    CHECK(max_diff(lb, logits) < 0.02);  // logits are O(0.1): bf16 keeps ~2-3 digits
  }
}

TEST_CASE("logits at positions of a model without layers select those positions", "[model]") {
  torch::NoGradGuard no_grad;
  ModelConfig config = tiny_config();
  config.num_hidden_layers = 0;
  LlamaModel model(config, torch::kCPU, torch::kFloat32, /*seed=*/3);
  auto ids = torch::randint(0, config.vocab_size, {2, 5}, torch::kInt64);
  auto all = model(ids);
  auto few = model(ids, torch::Tensor(), nullptr, torch::tensor({{4, 1}, {0, 2}}, torch::kInt64));
  REQUIRE(few.sizes() == torch::IntArrayRef({2, 2, config.vocab_size}));
  CHECK(max_diff(few[0][1], all[0][1]) < 1e-6);
  CHECK(max_diff(few[1][0], all[1][0]) < 1e-6);
}

TEST_CASE("packed forward: continuations packed after a cached prefix equal their own full forwards", "[model]") {
  torch::NoGradGuard no_grad;
  LlamaModel model(tiny_config(), torch::kCPU, torch::kFloat32, /*seed=*/5);
  const int64_t V = model->config().vocab_size;
  // Row 0: prefix of 6 tokens, continuations of 3 and 2 tokens, the second one read after only the
  // first 4 prefix tokens. Row 1: 2 left pads, a prefix of 4, one continuation of 4 and 1 right pad.
  auto ids = torch::randint(1, V, {2, 6}, torch::kInt64);
  auto prefix_mask = torch::ones({2, 6}, torch::kInt64);
  prefix_mask[1].narrow(0, 0, 2).zero_();
  auto cont = torch::randint(1, V, {2, 5}, torch::kInt64);
  cont[1][4] = 0;
  struct Span {
    int64_t row, start, length, context;  // columns [start, start + length) continue the first `context` prefix tokens
  };
  const std::vector<Span> spans = {{0, 0, 3, 6}, {0, 3, 2, 4}, {1, 0, 4, 4}};
  const int64_t P = 6, L = 5;
  auto positions = torch::zeros({2, L}, torch::kInt64);
  auto allowed = torch::zeros({2, 1, L, P + L}, torch::kBool);
  auto token_mask = torch::zeros({2, L}, torch::kInt64);
  allowed[1][0][4][P + 4] = true;  // the pad query sees itself only
  for (const auto& s : spans) {
    const int64_t pad = s.row == 1 ? 2 : 0;
    for (int64_t j = 0; j < s.length; ++j) {
      positions[s.row][s.start + j] = s.context + j;
      token_mask[s.row][s.start + j] = 1;
      allowed[s.row][0][s.start + j].narrow(0, pad, s.context).fill_(true);
      allowed[s.row][0][s.start + j].narrow(0, P + s.start, j + 1).fill_(true);
    }
  }
  KVCache cache = model->make_cache(2, P + L);
  model->forward_hidden(ids, prefix_mask, &cache);
  auto packed = model->logits_from_hidden(model->forward_hidden_packed(cont, positions, allowed, &cache, token_mask));
  CHECK(cache.length() == P + L);
  CHECK(torch::equal(cache.mask().narrow(1, P, L), token_mask));
  for (const auto& s : spans) {
    INFO("row " << s.row << " span at " << s.start);
    const int64_t pad = s.row == 1 ? 2 : 0;
    auto whole = torch::cat({ids[s.row].narrow(0, pad, s.context), cont[s.row].narrow(0, s.start, s.length)}).unsqueeze(0);
    auto expected = model(whole)[0].narrow(0, s.context, s.length);
    CHECK(max_diff(packed[s.row].narrow(0, s.start, s.length), expected) < 1e-5);
  }
  CHECK_THROWS_WITH(model->forward_hidden_packed(cont, positions, allowed.narrow(3, 0, L), &cache),
                    Catch::Contains("allowed must be bool [2, 1, 5, 16]"));
  CHECK_THROWS_WITH(model->forward_hidden_packed(cont, positions.narrow(1, 0, 2), allowed),
                    Catch::Contains("position_ids must be int64 [2, 5]"));
}

TEST_CASE("packed inference: pads are not computed, and real tokens get what their rows alone give", "[model]") {
  torch::NoGradGuard no_grad;
  // float32 takes cpu_attention's packed queries where this CPU prefers that kernel (SDPA on padded
  // copies elsewhere); float64 always takes SDPA.
  for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
    DYNAMIC_SECTION(dtype) {
      LlamaModel model(tiny_config(), torch::kCPU, dtype, /*seed=*/11);
      const double tol = dtype == torch::kFloat32 ? 1e-5 : 1e-10;
      const int64_t B = 3, T = 7;
      const std::vector<int64_t> pads = {0, 2, 6};  // rows of 7, 5 and 1 tokens
      auto ids = torch::randint(1, model->config().vocab_size, {B, T + 2}, torch::kInt64);
      auto mask = torch::ones({B, T}, torch::kInt64);
      for (int64_t b = 0; b < B; ++b) {
        mask[b].narrow(0, 0, pads[b]).zero_();
        ids[b].narrow(0, 0, pads[b]).zero_();
      }
      const auto prompt = ids.narrow(1, 0, T);
      const auto hidden = model->forward_hidden(prompt, mask);
      KVCache cache = model->make_cache(B, T + 2);
      const auto last = model(prompt, mask, &cache, torch::tensor({-1}, torch::kInt64));
      // Two decoded tokens after the prompt.
      const auto step1 = model(ids.narrow(1, T, 1), torch::ones({B, 1}, torch::kInt64), &cache);
      const auto step2 = model(ids.narrow(1, T + 1, 1), torch::ones({B, 1}, torch::kInt64), &cache);
      for (int64_t b = 0; b < B; ++b) {
        INFO("row " << b);
        const int64_t n = T - pads[b];
        const auto alone = ids[b].narrow(0, pads[b], n + 2).unsqueeze(0);
        CHECK(max_diff(hidden[b].narrow(0, pads[b], n), model->forward_hidden(alone.narrow(1, 0, n))[0]) < tol);
        const auto logits = model(alone)[0];
        CHECK(max_diff(last[b][0], logits[n - 1]) < tol);
        CHECK(max_diff(step1[b][0], logits[n]) < tol);
        CHECK(max_diff(step2[b][0], logits[n + 1]) < tol);
        if (pads[b] == 0) continue;
        // Pads: zeros in the result and in the cache, never a computed value.
        CHECK(hidden[b].narrow(0, 0, pads[b]).abs().max().item<double>() == 0.0);
        for (int64_t l = 0; l < model->config().num_hidden_layers; ++l) {
          CHECK(cache.keys(l)[b].narrow(1, 0, pads[b]).abs().max().item<double>() == 0.0);
          CHECK(cache.values(l)[b].narrow(1, 0, pads[b]).abs().max().item<double>() == 0.0);
        }
      }
      // A position read at a pad is served by the padded layout (no packing): still right where real.
      const auto at_pad = model(prompt, mask, nullptr, torch::tensor({0, 6}, torch::kInt64));
      CHECK(max_diff(at_pad[2][1], last[2][0]) < tol);
    }
  }
}

TEST_CASE("KVCache::append_packed writes what append writes for the padded batch, zeros at the pads", "[model]") {
  const ModelConfig config = tiny_config();
  const int64_t B = 2, T = 5, KV = config.num_key_value_heads, D = config.head_dim;
  KVCache packed = llm4dsr::KVCache(config, B, 8, torch::kFloat32, torch::kCPU);
  KVCache padded = llm4dsr::KVCache(config, B, 8, torch::kFloat32, torch::kCPU);
  // Stale values where the new positions go (a cache reused after reserve()): the pads must not keep them.
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) packed.append(l, torch::randn({B, KV, 8, D}), torch::randn({B, KV, 8, D}));
  const auto index = torch::tensor({0, 1, 2, 3, 4, 8, 9}, torch::kInt64);  // row 1: 3 pads, then 2 tokens
  const auto key = torch::randn({7, KV, D}), value = torch::randn({7, KV, D});
  auto padded_key = torch::zeros({B * T, KV, D}), padded_value = torch::zeros({B * T, KV, D});
  padded_key.index_copy_(0, index, key);
  padded_value.index_copy_(0, index, value);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    auto [k, v] = packed.append_packed(l, key, value, index, T);
    auto [k_want, v_want] = padded.append(l, padded_key.view({B, T, KV, D}).transpose(1, 2),
                                          padded_value.view({B, T, KV, D}).transpose(1, 2));
    CHECK(torch::equal(k, k_want));
    CHECK(torch::equal(v, v_want));
  }
  CHECK_THROWS_WITH(packed.append_packed(0, key, value, torch::tensor({0, 1, 2, 3, 4, 8, 10}, torch::kInt64), T),
                    Catch::Contains("packed token index 10 outside [0, 10)"));
  CHECK_THROWS_WITH(packed.append_packed(0, key.narrow(0, 0, 6), value, index, T),
                    Catch::Contains("packed keys/values must be"));
}

TEST_CASE("rope scaling: linear equals positions divided by the factor", "[model]") {
  torch::NoGradGuard no_grad;
  ModelConfig c = tiny_config();
  ModelConfig lin = c;
  lin.rope_scaling.rope_type = "linear";
  lin.rope_scaling.factor = 2.0;
  LlamaModel a(c, torch::kCPU, torch::kFloat32, 3), b(lin, torch::kCPU, torch::kFloat32, 3);
  auto ids = torch::randint(0, c.vocab_size, {1, 6}, torch::kInt64);
  CHECK(max_diff(a(ids.narrow(1, 0, 1)), b(ids.narrow(1, 0, 1))) < 1e-6);  // position 0 is unrotated
  CHECK(max_diff(a(ids), b(ids)) > 1e-4);
}

TEST_CASE("LoRA: zero B is a no-op, the forward follows the formula, merge/unmerge", "[model][lora]") {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  llm4dsr::LoraLinear lin(6, 5, /*bias=*/true, torch::TensorOptions());
  lin->weight.normal_();
  lin->bias.normal_();
  auto x = torch::randn({3, 6});
  auto base = lin(x);
  lin->add_adapter(2, 16.0, 0.0, /*use_rslora=*/false, gen);
  CHECK(lin->lora_A.sizes() == torch::IntArrayRef({2, 6}));
  CHECK(lin->lora_B.sizes() == torch::IntArrayRef({5, 2}));
  CHECK(lin->lora_A.abs().max().item<double>() <= 1.0 / std::sqrt(6.0));
  CHECK(lin->lora_A.abs().max().item<double>() > 0.0);
  CHECK(torch::equal(lin(x), base));
  lin->lora_B.normal_();
  auto expected = base + 8.0 * torch::matmul(torch::matmul(x, lin->lora_A.t()), lin->lora_B.t());
  CHECK(max_diff(lin(x), expected) < 1e-5);
  const auto w0 = lin->weight.clone();
  lin->merge();
  CHECK(max_diff(lin(x), expected) < 1e-5);
  CHECK_FALSE(torch::equal(lin->weight, w0));
  lin->unmerge();
  CHECK(max_diff(lin->weight, w0) < 1e-6);
  CHECK(max_diff(lin(x), expected) < 1e-5);
  auto names = lin->named_parameters().keys();
  CHECK(std::find(names.begin(), names.end(), "lora_A.weight") != names.end());
  lin->remove_adapter();
  CHECK(max_diff(lin(x), base) < 1e-6);  // merge + unmerge round off in the last bit

  LoraConfig rs;
  rs.r = 4;
  rs.alpha = 8;
  rs.use_rslora = true;
  CHECK(rs.scaling() == Approx(4.0));
  rs.use_rslora = false;
  CHECK(rs.scaling() == Approx(2.0));
}

namespace {

// An n x n LoraLinear in training mode with W = 0, A = B = I and alpha = r: its output is dropout(x) itself.
llm4dsr::LoraLinear dropout_probe(int64_t n, double p, at::Generator& gen, torch::Dtype dtype = torch::kFloat32) {
  llm4dsr::LoraLinear lin(n, n, /*bias=*/false, torch::TensorOptions().dtype(dtype));
  lin->add_adapter(n, double(n), p, /*use_rslora=*/false, gen);
  torch::NoGradGuard g;
  lin->weight.zero_();
  lin->lora_A.copy_(torch::eye(n));
  lin->lora_B.copy_(torch::eye(n));
  lin->train();
  return lin;
}

}  // namespace

TEST_CASE("LoRA dropout: inverted Bernoulli mask, reproducible from the CPU seed, gradient = mask", "[model][lora]") {
  const int64_t n = 64;
  const double p = 0.3;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  llm4dsr::LoraLinear lin = dropout_probe(n, p, gen);
  auto x = torch::ones({1000, n}).requires_grad_(true);
  torch::manual_seed(5);
  auto y = lin(x);
  const auto kept = y.detach() != 0;
  const double kept_fraction = kept.to(torch::kFloat64).mean().item<double>();
  CHECK(std::abs(kept_fraction - (1 - p)) < 0.01);  // 64000 draws: sd 0.0018
  CHECK(max_diff(y.detach().masked_select(kept), torch::full({kept.sum().item<int64_t>()}, 1 / (1 - p))) < 1e-6);
  y.sum().backward();
  CHECK(torch::equal(x.grad(), y.detach()));  // d/dx of x * mask / (1 - p)
  torch::manual_seed(5);
  CHECK(torch::equal(lin(x).detach(), y.detach()));
  CHECK_FALSE(torch::equal(lin(x).detach(), y.detach()));  // the generator moved on
  // Neighbouring elements (the two halves of one 64-bit draw) are not correlated.
  auto k = kept.to(torch::kFloat64).reshape({-1, 2});
  const double both = (k.select(1, 0) * k.select(1, 1)).mean().item<double>();
  CHECK(std::abs(both - (1 - p) * (1 - p)) < 0.015);
  lin->eval();
  CHECK(torch::equal(lin(x).detach(), x.detach()));
}

TEST_CASE("LoRA dropout mask: the documented counter-based draw, whatever the thread split or dtype path",
          "[model][lora]") {
  // Element i of a [tokens, in] input is kept iff its 32-bit half (low for even i, high for odd i) of
  // splitmix64(seed + (i / 2) * 0x9e3779b97f4a7c15) is below keep * 2^32, with seed the default CPU
  // generator's next random64(). Computed here independently and compared with the fp32 path (its
  // draw split over two threads at an odd element: 1,333 x 25 x 2 elements, halves of 33,325) and the
  // fused bf16 path (row blocks of up to 128 rows).
  const int64_t tokens = 1333, n = 25;
  const double p = 0.3, keep = 1.0 - p;
  const int64_t count = 2 * tokens * n;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    CAPTURE(dtype);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
    llm4dsr::LoraLinear lin = dropout_probe(n, p, gen, dtype);
    auto x = torch::ones({2, tokens, n}, torch::TensorOptions().dtype(dtype)).requires_grad_(true);
    torch::manual_seed(21);
    uint64_t seed;
    {
      auto g = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(g.mutex());
      seed = g.get<at::CPUGeneratorImpl>()->random64();
    }
    torch::manual_seed(21);
    const auto kept = lin(x).detach().reshape({-1}).ne(0);
    std::vector<uint8_t> expected(count);
    for (int64_t i = 0; i < count; ++i) expected[i] = llm4dsr::testing::dropout_kept(seed, keep, i);
    CHECK(torch::equal(kept, torch::from_blob(expected.data(), {count}, torch::kUInt8).to(torch::kBool)));
  }
}

TEST_CASE("LoRA training step with dropout: output and gradients equal autograd through the explicit formula",
          "[model][lora]") {
  // The reference is PEFT's computation written out: out = y + s * B(A(dropout(x))) in the adapters' fp32,
  // rounded to the base's dtype once, differentiated by autograd. Its mask comes from a probe layer
  // (dropout_probe) run from the same seed on ones of the same shape: the mask depends only
  // on the seed and the element index, so the probe returns mask / keep.
  // 2 x 333 rows: the bf16 branch's several row blocks (up to 128 rows each) spread over the threads, the last
  // one partial, and rows whose element count is odd (a dropout draw shared by two blocks).
  const int64_t in = 25, out = 40, r = 4;
  const double p = 0.3, alpha = 8.0, s = alpha / r;
  for (const auto& [dtype, tokens] : std::vector<std::pair<torch::Dtype, int64_t>>{
           {torch::kFloat32, 37}, {torch::kBFloat16, 37}, {torch::kBFloat16, 333}}) {
    CAPTURE(dtype, tokens);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    llm4dsr::LoraLinear lin(in, out, /*bias=*/false, torch::TensorOptions().dtype(dtype));
    lin->add_adapter(r, alpha, p, /*use_rslora=*/false, gen);
    {
      torch::NoGradGuard g;
      lin->weight.copy_(torch::randn({out, in}) * 0.2);
      lin->lora_B.copy_(torch::randn({out, r}));  // B = 0 at creation would hide A's gradient
    }
    llm4dsr::LoraLinear probe = dropout_probe(in, p, gen);
    lin->train();
    const auto x0 = torch::randn({2, tokens, in}).to(dtype);
    const auto upstream = torch::randn({2, tokens, out}).to(dtype);

    auto x = x0.clone().requires_grad_(true);
    torch::manual_seed(11);
    auto y = lin(x);
    y.backward(upstream);
    CHECK(y.scalar_type() == dtype);

    torch::Tensor mask_over_keep;
    {
      torch::NoGradGuard g;
      torch::manual_seed(11);
      mask_over_keep = probe(torch::ones({2, tokens, in}));
    }
    CHECK(std::abs(mask_over_keep.ne(0).to(torch::kFloat64).mean().item<double>() - (1 - p)) < 0.05);
    auto xr = x0.clone().requires_grad_(true);
    auto A = lin->lora_A.detach().clone().requires_grad_(true);
    auto B = lin->lora_B.detach().clone().requires_grad_(true);
    auto base = torch::linear(xr, lin->weight.detach());
    auto delta = torch::linear(torch::linear(xr.to(torch::kFloat32) * mask_over_keep, A), B) * s;
    auto expected = (base.to(torch::kFloat32) + delta).to(dtype);
    expected.backward(upstream);

    const double tol = dtype == torch::kFloat32 ? 1e-5 : 0.0;
    CHECK(max_diff(y.detach().to(torch::kFloat32), expected.detach().to(torch::kFloat32)) <= tol);
    auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
      return max_diff(a.to(torch::kFloat32), b.to(torch::kFloat32)) / b.to(torch::kFloat32).abs().max().item<double>();
    };
    CHECK(rel(lin->lora_A.grad(), A.grad()) < 1e-5);
    CHECK(rel(lin->lora_B.grad(), B.grad()) < 1e-5);
    // x's gradient: the base path's and the adapter path's, each rounded to bf16 by the reference before
    // they are summed; ours rounds the adapter path once into that sum (a bf16 ulp or two).
    CHECK(rel(x.grad(), xr.grad()) < (dtype == torch::kFloat32 ? 1e-5 : 1e-2));
    CHECK_FALSE(lin->weight.grad().defined());
  }
}

TEST_CASE("LoRA branch on a bf16 base: create_graph gives the same gradients, themselves differentiable",
          "[model][lora]") {
  // The fused bf16 branch's backward works outside autograd; with create_graph it must fall back to
  // recorded ops rather than return gradients cut off from the graph.
  const int64_t in = 24, out = 40, r = 4;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  llm4dsr::LoraLinear lin(in, out, /*bias=*/false, torch::TensorOptions().dtype(torch::kBFloat16));
  lin->add_adapter(r, 8.0, /*dropout=*/0.2, /*use_rslora=*/false, gen);
  {
    torch::NoGradGuard g;
    lin->weight.copy_(torch::randn({out, in}) * 0.2);
    lin->lora_B.copy_(torch::randn({out, r}));
  }
  lin->train();
  const auto x0 = torch::randn({300, in}).to(torch::kBFloat16);  // several row blocks
  const auto upstream = torch::randn({300, out}).to(torch::kBFloat16);
  auto run = [&](bool create_graph) {
    auto x = x0.clone().requires_grad_(true);
    torch::manual_seed(7);
    auto y = lin(x);
    auto grads = torch::autograd::grad({(y.to(torch::kFloat32) * upstream.to(torch::kFloat32)).sum()},
                                       {x, lin->lora_A, lin->lora_B}, {}, /*retain_graph=*/true, create_graph);
    return grads;
  };
  const auto plain = run(false);
  const auto graphed = run(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    CAPTURE(i);
    CHECK_FALSE(plain[i].requires_grad());
    const double scale = plain[i].to(torch::kFloat32).abs().max().item<double>();
    CHECK(max_diff(graphed[i].to(torch::kFloat32), plain[i].to(torch::kFloat32)) <= 1e-2 * scale);
  }
  // x's gradient alone (the adapters' not asked for: the backward draws the mask without A's input).
  {
    auto x = x0.clone().requires_grad_(true);
    torch::manual_seed(7);
    auto y = lin(x);
    auto only_x = torch::autograd::grad({(y.to(torch::kFloat32) * upstream.to(torch::kFloat32)).sum()}, {x});
    CHECK(torch::equal(only_x[0], plain[0]));
  }
  // A's gradient depends on B: its sum has a gradient with respect to B.
  REQUIRE(graphed[1].requires_grad());
  auto second = torch::autograd::grad({graphed[1].sum()}, {lin->lora_B});
  CHECK(second[0].abs().sum().item<double>() > 0);
}

TEST_CASE("LlamaModel LoRA: targets, freezing, gradients, merge", "[model][lora]") {
  const ModelConfig config = tiny_config(/*tied=*/true);
  LlamaModel model(config, torch::kCPU, torch::kFloat32, 5);
  model->eval();
  auto ids = torch::randint(0, config.vocab_size, {2, 7}, torch::kInt64);
  torch::Tensor base;
  {
    torch::NoGradGuard g;
    base = model(ids);
  }
  LoraConfig lc;  // q_proj, v_proj
  lc.dropout = 0.0;
  model->add_lora(lc);
  auto state = model->lora_state();
  CHECK(state.size() == 2u * 2 * config.num_hidden_layers);
  CHECK(state[0].first == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(state[3].first == "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
  CHECK(model->hf_state().size() == 2 + 9u * config.num_hidden_layers);  // adapters excluded, lm_head tied
  {
    torch::NoGradGuard g;
    CHECK(torch::equal(model(ids), base));
  }
  // Only adapters train, and the gradient reaches A once B is non-zero.
  int trainable = 0;
  for (auto& p : model->parameters()) trainable += p.requires_grad();
  CHECK(trainable == static_cast<int>(state.size()));
  {
    torch::NoGradGuard g;
    for (auto& [name, t] : state)
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.1);
  }
  model(ids).sum().backward();
  for (auto& [name, t] : state) {
    INFO(name);
    REQUIRE(t.grad().defined());
    CHECK(t.grad().abs().sum().item<double>() > 0);
  }
  CHECK_FALSE(model->embed_tokens->weight.grad().defined());

  torch::NoGradGuard g;
  auto adapted = model(ids);
  CHECK(max_diff(adapted, base) > 1e-3);
  model->merge_lora();
  CHECK(max_diff(model(ids), adapted) < 1e-5);
  model->unmerge_lora();
  CHECK(max_diff(model(ids), adapted) < 1e-5);
  CHECK_THROWS_AS(model->add_lora(lc), Error);
  model->remove_lora();
  CHECK(max_diff(model(ids), base) < 1e-6);

  LoraConfig all;
  all.target_modules = {"all-linear"};
  all.layers_to_transform = {1};
  model->add_lora(all);
  CHECK(model->lora_state().size() == 2u * 7);
  CHECK(model->lora_state()[0].first.find("layers.1.") != std::string::npos);
  model->remove_lora();
  LoraConfig bad;
  bad.target_modules = {"lm_head"};
  CHECK_THROWS_AS(model->add_lora(bad), Error);
  LoraConfig re;
  re.target_regex = R"(model\.layers\.0\.mlp\.(up|down)_proj)";
  model->add_lora(re);
  CHECK(model->lora_state().size() == 4u);
}

TEST_CASE("HF checkpoint and PEFT adapter folders round trip; bad weights are named", "[model][checkpoint]") {
  torch::NoGradGuard no_grad;
  TempDir dir;
  for (bool tied : {false, true}) {
    const ModelConfig config = tiny_config(tied);
    LlamaModel model(config, torch::kCPU, torch::kFloat32, 11);
    model->eval();
    const std::string folder = dir.file(tied ? "tied" : "untied");
    io::save_hf_checkpoint(model, folder);
    io::SafetensorsFile st(folder + "/model.safetensors");
    CHECK(st.contains("model.layers.1.mlp.down_proj.weight"));
    CHECK(st.contains("lm_head.weight") == !tied);
    auto loaded = io::load_hf_checkpoint(folder);
    auto ids = torch::randint(0, config.vocab_size, {2, 6}, torch::kInt64);
    CHECK(torch::equal(loaded(ids), model(ids)));
    auto as_bf16 = io::load_hf_checkpoint(folder, torch::kCPU, torch::kBFloat16);
    CHECK(as_bf16->embed_tokens->weight.scalar_type() == torch::kBFloat16);

    LoraConfig lc;
    lc.target_modules = {"q_proj", "k_proj", "down_proj"};
    lc.r = 4;
    lc.alpha = 8;
    lc.use_rslora = tied;
    model->add_lora(lc);
    for (auto& [name, t] : model->lora_state()) t.normal_(0, 0.05);
    io::save_peft_adapter(model, folder + "/adapter", "tiny-base");
    auto cfg = nlohmann::json::parse(std::ifstream(folder + "/adapter/adapter_config.json"));
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["task_type"] == "CAUSAL_LM");
    CHECK(cfg["r"] == 4);
    CHECK(cfg["use_rslora"] == tied);
    io::load_peft_adapter(loaded, folder + "/adapter");
    CHECK(max_diff(loaded(ids), model(ids)) < 1e-6);
    CHECK(max_diff(loaded(ids), io::load_hf_checkpoint(folder)(ids)) > 1e-4);
  }

  // Malformed weights: each error names the key (and shapes).
  const ModelConfig config = tiny_config(false);
  LlamaModel model(config, torch::kCPU, torch::kFloat32, 1);
  auto good = model->hf_state();
  auto as_map = [&] {
    std::map<std::string, torch::Tensor> m;
    for (auto& [k, v] : good) m.emplace(k, v.clone());
    return m;
  };
  auto w = as_map();
  w.erase("model.layers.1.self_attn.k_proj.weight");
  CHECK_THROWS_WITH(io::load_hf_weights(model, w, "ckpt"), Catch::Contains("model.layers.1.self_attn.k_proj.weight") &&
                                                                Catch::Contains("missing"));
  w = as_map();
  w["model.norm.weight"] = torch::ones({3});
  CHECK_THROWS_WITH(io::load_hf_weights(model, w, "ckpt"),
                    Catch::Contains("model.norm.weight") && Catch::Contains("[3]") && Catch::Contains("[64]"));
  w = as_map();
  w["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch::ones({8});
  CHECK_NOTHROW(io::load_hf_weights(model, w, "ckpt"));
  w["model.extra.weight"] = torch::ones({1});
  CHECK_THROWS_WITH(io::load_hf_weights(model, w, "ckpt"), Catch::Contains("model.extra.weight"));

  // A PEFT file missing one adapter tensor leaves the model without adapters.
  model->add_lora(LoraConfig());
  io::save_peft_adapter(model, dir.file("adapter"));
  model->remove_lora();
  auto tensors = io::load_safetensors(dir.file("adapter/adapter_model.safetensors"));
  std::vector<std::pair<std::string, torch::Tensor>> fewer;
  for (auto& [k, v] : tensors)
    if (k.find("layers.1.self_attn.v_proj.lora_B") == std::string::npos) fewer.emplace_back(k, v);
  io::save_safetensors(dir.file("adapter/adapter_model.safetensors"), fewer);
  CHECK_THROWS_WITH(io::load_peft_adapter(model, dir.file("adapter")),
                    Catch::Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"));
  CHECK_FALSE(model->has_lora());
  dir.write("adapter/adapter_config.json", R"({"r":8,"lora_alpha":16,"target_modules":["q_proj"],"use_dora":true})");
  CHECK_THROWS_WITH(io::load_peft_adapter(model, dir.file("adapter")), Catch::Contains("use_dora"));
}
