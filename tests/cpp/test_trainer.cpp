#include "torch_catch.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <stdexcept>

#include "llm4dsr/error.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/train/trainer.h"
#include "model/onednn_linear.h"
#include "test_support.h"

using namespace llm4dsr;

namespace {

ModelConfig small_config() {
  ModelConfig c = ModelConfig::preset("tiny", 61);
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.num_hidden_layers = 2;
  return c;
}

// Prompt tokens are not in the loss; the response is a deterministic function of the prompt, so the
// model can learn it.
std::vector<TrainingExample> toy_examples(int n, uint64_t seed) {
  std::vector<TrainingExample> out;
  uint64_t x = seed * 2654435761u + 1;
  for (int i = 0; i < n; ++i) {
    TrainingExample e;
    const int len = 4 + static_cast<int>(i % 5);
    for (int t = 0; t < len; ++t) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      e.input_ids.push_back(3 + static_cast<int64_t>((x >> 33) % 40));
      e.labels.push_back(-100);
    }
    const int64_t answer = 45 + (e.input_ids[0] + e.input_ids[1]) % 10;
    e.input_ids.push_back(answer);
    e.labels.push_back(answer);
    e.input_ids.push_back(2);
    e.labels.push_back(2);
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<torch::Tensor> snapshot(LlamaModel& model) {
  std::vector<torch::Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

double max_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (a[i] - b[i]).abs().max().item<double>());
  return m;
}

// bf16 CPU autocast for a scope: off again, and the previous dtype back, on exit or exception.
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool enabled = true) : previous_(at::autocast::get_autocast_dtype(at::kCPU)) {
    at::autocast::set_autocast_enabled(at::kCPU, enabled);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  }
  ~Bf16Autocast() {
    at::autocast::set_autocast_enabled(at::kCPU, false);
    at::autocast::set_autocast_dtype(at::kCPU, previous_);
    at::autocast::clear_cache();
  }

 private:
  at::ScalarType previous_;
};

}  // namespace

TEST_CASE("causal_lm_loss_sum equals a hand-shifted log-softmax over the full logits", "[trainer]") {
  LlamaModel model(small_config(), torch::kCPU, torch::kFloat32, 3);
  model->eval();
  auto examples = toy_examples(3, 1);
  examples[1].labels[2] = examples[1].input_ids[2];  // a prompt token in the loss too
  std::vector<const TrainingExample*> batch{&examples[0], &examples[1], &examples[2]};
  torch::NoGradGuard no_grad;
  LossSum ls = causal_lm_loss_sum(model, batch, 0);

  double expected = 0;
  int64_t tokens = 0;
  for (const auto* e : batch) {
    auto ids = torch::tensor(e->input_ids, torch::kInt64).unsqueeze(0);
    auto logp = torch::log_softmax(model->forward(ids).squeeze(0), -1);
    for (size_t t = 1; t < e->labels.size(); ++t) {
      if (e->labels[t] == -100) continue;
      expected -= logp[t - 1][e->labels[t]].item<double>();
      ++tokens;
    }
  }
  CHECK(ls.tokens == tokens);
  CHECK(ls.sum.item<double>() == Approx(expected).epsilon(1e-5));
}

TEST_CASE("causal_lm_loss_sum's fused lm_head + loss gives autograd's gradients through the full log-softmax",
          "[trainer]") {
  auto examples = toy_examples(3, 2);
  for (auto& e : examples) e.labels = e.input_ids;  // every position in the loss: many rows per chunk
  examples[0].labels[1] = -100;
  std::vector<const TrainingExample*> batch{&examples[0], &examples[1], &examples[2]};
  // Reference: full logits, log_softmax, picked targets, plain autograd.
  auto reference = [&](LlamaModel& model) {
    torch::Tensor sum = torch::zeros({});
    for (const auto* e : batch) {
      auto ids = torch::tensor(e->input_ids, torch::kInt64).unsqueeze(0);
      auto logp = torch::log_softmax(model->forward(ids).squeeze(0), -1);
      for (size_t t = 1; t < e->labels.size(); ++t)
        if (e->labels[t] != -100) sum = sum - logp[t - 1][e->labels[t]];
    }
    return sum;
  };
  auto grads = [](LlamaModel& model) {
    std::vector<torch::Tensor> out;
    for (auto& p : model->parameters())
      if (p.requires_grad()) {
        out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
        p.mutable_grad() = torch::Tensor();
      }
    return out;
  };
  // A 40000-token vocabulary makes the log-softmax run a few rows at a time (2^18 elements: 6 rows), so
  // chunks of 13 rows and the default chunk split into several blocks, the last one short.
  // Both fp32 GEMM libraries (runtime.h), whichever this machine picks by default: oneDNN's path forms
  // each chunk's logits and hidden gradient without out= buffers and halves the default chunk.
  struct Case {
    Fp32Gemm gemm;
    bool lora;
    int64_t vocab;
  };
  std::vector<Case> cases;
  for (Fp32Gemm gemm : {Fp32Gemm::kATen, Fp32Gemm::kOneDnn}) {
    if (gemm == Fp32Gemm::kOneDnn && !llm4dsr::detail::onednn_ops().present()) continue;
    for (auto [lora, vocab] : {std::pair{false, int64_t(61)}, std::pair{true, int64_t(61)}, std::pair{true, int64_t(40000)}})
      cases.push_back({gemm, lora, vocab});
  }
  for (const auto& [gemm, lora, vocab] : cases) {
    testing::Fp32GemmScope scope(gemm);
    INFO("fp32 GEMM " << to_string(gemm));
    INFO((lora ? "LoRA adapters (frozen tied lm_head)" : "every parameter, lm_head tied to the embeddings"));
    INFO("vocabulary " << vocab);
    ModelConfig config = small_config();
    config.vocab_size = vocab;
    LlamaModel model(config, torch::kCPU, torch::kFloat32, 4);
    model->eval();
    if (lora) {
      LoraConfig lc;
      lc.dropout = 0.0;
      model->add_lora(lc);
      torch::NoGradGuard no_grad;
      for (auto& t : model->lora_parameters()) t.normal_(0, 0.2);
    }
    reference(model).backward();
    const auto expected = grads(model);
    for (int64_t chunk_rows : {0, 1, 5, 13}) {
      INFO("chunk_rows " << chunk_rows);
      LossSum ls = causal_lm_loss_sum(model, batch, 0, chunk_rows);
      CHECK(ls.sum.item<double>() == Approx(reference(model).item<double>()).epsilon(1e-5));
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
      (ls.sum * 0.5).backward();  // the incoming gradient scales the stored one
      const auto got = grads(model);
      REQUIRE(got.size() == expected.size());
      for (size_t i = 0; i < got.size(); ++i) {
        const double scale = expected[i].abs().max().item<double>();
        CHECK(scale > 0);
        CHECK((got[i] - 0.5 * expected[i]).abs().max().item<double>() <= 1e-4 * scale + 1e-7);
      }
    }
  }
}

TEST_CASE("under bf16 autocast the residual stream stays fp32 and the loss stays close to fp32", "[trainer]") {
  LlamaModel model(small_config(), torch::kCPU, torch::kFloat32, 6);
  model->eval();
  auto examples = toy_examples(4, 3);
  std::vector<const TrainingExample*> batch;
  for (const auto& e : examples) batch.push_back(&e);
  torch::NoGradGuard no_grad;
  const double fp32 = causal_lm_loss_sum(model, batch, 0).sum.item<double>();
  auto ids = torch::randint(3, 40, {2, 6}, torch::kInt64);
  torch::Tensor hidden;
  double bf16 = 0;
  {
    Bf16Autocast autocast;
    hidden = model->forward_hidden(ids);  // HF: fp32 residual + bf16 projections promote to fp32
    bf16 = causal_lm_loss_sum(model, batch, 0).sum.item<double>();
  }
  CHECK(hidden.scalar_type() == torch::kFloat32);
  CHECK(bf16 == Approx(fp32).epsilon(0.02));
  CHECK(bf16 != fp32);  // the lm_head did run in bf16
}

TEST_CASE("bf16 autocast training of an fp32 model: gradients close to fp32's, and the trainer learns", "[trainer]") {
  // Under autocast the projections, hence q, k and v, are bf16 while the weights stay fp32: the bf16
  // attention, RoPE and SwiGLU kernels run with autocast on, forward and backward.
  LlamaModel model(small_config(), torch::kCPU, torch::kFloat32, 8);
  auto examples = toy_examples(6, 4);
  std::vector<const TrainingExample*> batch;
  for (const auto& e : examples) batch.push_back(&e);
  auto gradients = [&](bool autocast) {
    model->zero_grad();
    {
      Bf16Autocast scope(autocast);
      causal_lm_loss_sum(model, batch, 0).sum.backward();
    }
    std::vector<torch::Tensor> out;
    for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
    return out;
  };
  const auto fp32 = gradients(false);
  const auto bf16 = gradients(true);
  for (size_t i = 0; i < fp32.size(); ++i) {
    CAPTURE(i);
    REQUIRE(bf16[i].scalar_type() == torch::kFloat32);
    // bf16 keeps 8 significant bits per activation; a wrong attention or activation gradient is off
    // by tens of per cent.
    CHECK(((bf16[i] - fp32[i]).norm() / fp32[i].norm()).item<double>() <= 0.05);
  }
  model->zero_grad();

  TrainerOptions o;
  o.learning_rate = 3e-3;
  o.num_epochs = 60;
  o.micro_batch_size = 6;
  o.progress = false;
  o.bf16 = true;
  Trainer trainer(model, o);
  const double before = trainer.evaluate(examples);
  trainer.train(examples);
  CHECK(trainer.evaluate(examples) < 0.7 * before);
}

TEST_CASE("learning-rate schedule: linear warm-up then cosine to zero", "[trainer]") {
  TrainerOptions o;
  o.learning_rate = 1.0;
  o.warmup_steps = 2;
  Trainer trainer(LlamaModel(small_config()), o);
  CHECK(trainer.learning_rate_at(0, 10) == Approx(0.5));
  CHECK(trainer.learning_rate_at(1, 10) == Approx(1.0));
  CHECK(trainer.learning_rate_at(2, 10) == Approx(1.0));                                   // cos(0)
  CHECK(trainer.learning_rate_at(6, 10) == Approx(0.5 * (1 + std::cos(M_PI * 4 / 8.0))));  // halfway
  o.lr_scheduler = "linear";
  Trainer linear(LlamaModel(small_config()), o);
  CHECK(linear.learning_rate_at(6, 10) == Approx(0.5));
  CHECK(trainer.total_steps(10) == 2);  // micro-batch 8, no accumulation: ceil(10 / 8)
  o.lr_scheduler = "triangle";
  CHECK_THROWS_AS(Trainer(LlamaModel(small_config()), o), Error);
}

TEST_CASE("training from scratch drives the response loss down", "[trainer]") {
  LlamaModel model(small_config(), torch::kCPU, torch::kFloat32, 5);
  auto examples = toy_examples(64, 2);
  TrainerOptions o;
  o.learning_rate = 3e-3;
  o.num_epochs = 25;
  o.micro_batch_size = 16;
  o.progress = false;
  o.seed = 1;
  Trainer trainer(model, o);
  const double before = trainer.evaluate(examples);
  TrainResult r = trainer.train(examples);
  const double after = trainer.evaluate(examples);
  CHECK(r.steps == 25 * 4);
  CHECK(r.step_losses.size() == 100);
  CHECK(before > 3.0);  // ~ log(61) for an untrained model
  CHECK(after < 0.5 * before);
}

TEST_CASE("gradient accumulation gives the step of the whole batch", "[trainer]") {
  auto examples = toy_examples(8, 3);
  auto run = [&](int64_t micro, int64_t accum) {
    LlamaModel model(small_config(), torch::kCPU, torch::kFloat32, 9);
    TrainerOptions o;
    o.micro_batch_size = micro;
    o.gradient_accumulation_steps = accum;
    o.max_steps = 1;
    o.num_epochs = 1;
    o.progress = false;
    // A large epsilon makes Adam's first step proportional to the gradient (lr * g / (|g| + eps))
    // instead of its sign, so the comparison sees gradient differences rather than amplifying the
    // rounding of near-zero gradients.
    o.learning_rate = 1.0;
    o.adam_epsilon = 1.0;
    o.max_grad_norm = 0;
    o.warmup_ratio = 0;
    Trainer(model, o).train(examples);
    return snapshot(model);
  };
  auto whole = run(8, 1);
  auto accumulated = run(2, 4);
  auto initial = snapshot(*std::make_unique<LlamaModel>(small_config(), torch::kCPU, torch::kFloat32, 9));
  CHECK(max_abs_diff(whole, initial) > 1e-4);      // the step moved the weights
  CHECK(max_abs_diff(whole, accumulated) < 1e-6);  // and both cuts moved them the same
}

TEST_CASE("LoRA training touches only the adapters; a killed run resumes to the same parameters", "[trainer]") {
  testing::TempDir dir;
  auto examples = toy_examples(40, 4);
  LoraConfig lora;
  lora.r = 4;
  lora.alpha = 8;
  lora.dropout = 0.1;  // dropout masks must be replayed after resuming
  lora.target_modules = {"all-linear"};
  auto make_model = [&] {
    LlamaModel m(small_config(), torch::kCPU, torch::kFloat32, 11);
    m->add_lora(lora);
    return m;
  };
  TrainerOptions o;
  o.micro_batch_size = 4;
  o.gradient_accumulation_steps = 2;
  o.num_epochs = 3;  // 5 steps an epoch, 15 in all
  o.save_steps = 4;
  o.progress = false;
  o.seed = 7;
  o.learning_rate = 5e-3;

  LlamaModel reference = make_model();
  auto base_before = reference->hf_state();
  std::vector<torch::Tensor> base_copy;
  for (auto& kv : base_before) base_copy.push_back(kv.second.clone());
  o.output_dir = dir.file("uninterrupted");
  Trainer(reference, o).train(examples);
  {
    auto base_after = reference->hf_state();
    for (size_t i = 0; i < base_after.size(); ++i) CHECK(torch::equal(base_after[i].second, base_copy[i]));
  }

  o.output_dir = dir.file("killed");
  LlamaModel killed = make_model();
  Trainer first(killed, o);
  first.set_progress_callback([](const TrainerProgress& p) {
    if (p.step == 10) throw std::runtime_error("simulated kill");  // after the checkpoint at step 8
  });
  CHECK_THROWS_WITH(first.train(examples), "simulated kill");

  LlamaModel resumed = make_model();  // a fresh process: same init, nothing trained
  TrainResult r = Trainer(resumed, o).train(examples, /*resume=*/true);
  CHECK(r.resumed_from_step == 8);
  CHECK(r.step_losses.size() == 7);
  CHECK(max_abs_diff(snapshot(resumed), snapshot(reference)) < 1e-6);
  CHECK(max_abs_diff(snapshot(resumed), snapshot(killed)) > 1e-6);  // the killed one had done 10 steps, not 15

  // Resuming with different data is refused, naming the checkpoint.
  auto fewer = toy_examples(20, 4);
  LlamaModel other = make_model();
  CHECK_THROWS_WITH(Trainer(other, o).train(fewer, true), Catch::Contains("checkpoint.pt") && Catch::Contains("same data"));
}

TEST_CASE("make_lm_examples joins texts with EOS and cuts blocks", "[trainer]") {
  auto ex = make_lm_examples({{5, 6, 7}, {8}, {9, 10}}, 2, 4);
  // stream: 5 6 7 2 8 2 9 10 2 -> blocks [5 6 7 2] [8 2 9 10]; the last single token is dropped
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].input_ids == std::vector<int64_t>{5, 6, 7, 2});
  CHECK(ex[1].input_ids == std::vector<int64_t>{8, 2, 9, 10});
  CHECK(ex[1].labels == ex[1].input_ids);
  CHECK_THROWS_AS(make_lm_examples({{1}}, 2, 1), Error);
}
