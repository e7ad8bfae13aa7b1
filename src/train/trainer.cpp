#include "llm4dsr/train/trainer.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/autograd.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <sstream>

#include "internal/random.h"
#include "llm4dsr/data/writers.h"
#include "llm4dsr/error.h"
#include "llm4dsr/train/ignore_index.h"
#include "model/onednn_linear.h"

namespace llm4dsr {

namespace fs = std::filesystem;

namespace {

// bf16 autocast on the model's device for the guard's lifetime (restores the previous setting).
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, at::DeviceType device) : enabled_(enabled), device_(device) {
    if (!enabled_) return;
    previous_enabled_ = at::autocast::is_autocast_enabled(device_);
    previous_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, previous_enabled_);
    at::autocast::set_autocast_dtype(device_, previous_dtype_);
    at::autocast::clear_cache();
  }

 private:
  bool enabled_;
  at::DeviceType device_;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

void check_example(const TrainingExample& e, size_t index, int64_t vocab_size) {
  LLM4DSR_CHECK(!e.input_ids.empty(), "training example " << index << " is empty");
  LLM4DSR_CHECK(e.labels.size() == e.input_ids.size(), "training example " << index << " has " << e.labels.size()
                                                                            << " labels for " << e.input_ids.size()
                                                                            << " input ids");
  for (size_t t = 0; t < e.input_ids.size(); ++t) {
    LLM4DSR_CHECK(e.input_ids[t] >= 0 && e.input_ids[t] < vocab_size,
                  "training example " << index << ", position " << t << ": token id " << e.input_ids[t]
                                      << " is outside the model's vocabulary [0, " << vocab_size << ")");
    LLM4DSR_CHECK(e.labels[t] == kIgnoreIndex || (e.labels[t] >= 0 && e.labels[t] < vocab_size),
                  "training example " << index << ", position " << t << ": label " << e.labels[t] << " is neither "
                                      << kIgnoreIndex << " nor in the vocabulary [0, " << vocab_size << ")");
  }
}

// Labelled tokens of an example after the causal shift: positions t >= 1 with labels[t] != -100.
int64_t labelled_tokens(const TrainingExample& e) {
  int64_t n = 0;
  for (size_t t = 1; t < e.labels.size(); ++t) n += e.labels[t] != kIgnoreIndex;
  return n;
}

// Cuts `ids` (indices into examples) into micro-batches of similar length: sorting by length first
// keeps padding small; the order inside a step does not change the step's loss or gradient.
std::vector<std::vector<const TrainingExample*>> bucket(const std::vector<TrainingExample>& examples,
                                                        std::vector<int64_t> ids, int64_t micro_batch_size) {
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) {
    return examples[a].input_ids.size() < examples[b].input_ids.size();
  });
  std::vector<std::vector<const TrainingExample*>> out;
  for (size_t i = 0; i < ids.size(); i += micro_batch_size) {
    std::vector<const TrainingExample*> mb;
    for (size_t j = i; j < std::min(ids.size(), i + static_cast<size_t>(micro_batch_size)); ++j) mb.push_back(&examples[ids[j]]);
    out.push_back(std::move(mb));
  }
  return out;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", long(s / 3600), long(s / 60 % 60));
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", long(s / 60), long(s % 60));
  return buf;
}

std::vector<std::pair<std::string, torch::Tensor>> trainable_parameters(LlamaModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

// A default generator the dropout masks draw from, and its entry in a checkpoint.
struct DropoutGenerator {
  at::Generator generator;  // a handle on the global generator
  std::string key;
  bool required;  // in every checkpoint (the CPU's); a device's is absent from a checkpoint written on the CPU
};

// The default CPU generator ("rng": CPU dropout draws its seeds there) and, off the CPU, the device's own
// ("rng_cuda": by device type, so that "cuda" and "cuda:0" read the same entry), which torch::dropout
// draws from there. Seeding and checkpointing both makes a GPU run reproducible and resume exactly.
std::vector<DropoutGenerator> dropout_generators(const torch::Device& device) {
  std::vector<DropoutGenerator> out{{at::detail::getDefaultCPUGenerator(), "rng", true}};
  if (!device.is_cpu())
    out.push_back({at::globalContext().defaultGenerator(device), "rng_" + c10::DeviceTypeName(device.type(), true), false});
  return out;
}

// Rows of [rows, vocab] logits handled at once by LinearCrossEntropy: large enough for the lm_head GEMM
// to run at full speed, small enough that the chunk buffers stay a few tens of MB.
constexpr int64_t kLossChunkElements = int64_t(1) << 23;
// Rows of a chunk whose fp32 log-softmax is formed at once on the CPU: about 1 MB, so that the passes over it
// (upcast, log-softmax, exp, the one-hot subtraction, the cast back) run in cache, and its buffer stays
// far below glibc's mmap threshold (32 MB) and is recycled rather than page-faulted in on every call.
constexpr int64_t kSoftmaxBlockElements = int64_t(1) << 18;

// sum_i cross_entropy(hidden[i] . weight^T, target[i]) in fp32, the lm_head fused with the loss.
//
// The logits are formed chunk by chunk in a reused buffer (the GEMM's output in the model's dtype),
// then turned into fp32 log-probabilities a few rows at a time, as HF upcasts them; no [rows, vocab]
// tensor is ever allocated: at a 49152-token vocabulary the full-size logits, log-softmax and their
// gradients would each be hundreds of MB, filled page by page on every step. When a gradient is needed
// it is formed in the same pass, (softmax - onehot) rounded to the model's dtype in place of the
// logits, times the weight, and kept [rows, hidden]-sized until backward() scales it by the incoming
// gradient.
struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& target, int64_t chunk_rows,
                               bool need_hidden, bool need_weight) {
    const int64_t rows = hidden.size(0), vocab = weight.size(0);
    int64_t chunk =
        std::max<int64_t>(1, std::min<int64_t>(rows, chunk_rows > 0 ? chunk_rows : kLossChunkElements / vocab));
    // On a GPU the whole chunk is one block: there, small blocks would only multiply kernel launches.
    const int64_t block = hidden.device().is_cpu()
                              ? std::max<int64_t>(1, std::min<int64_t>(chunk, kSoftmaxBlockElements / vocab))
                              : chunk;
    const auto f32 = hidden.options().dtype(torch::kFloat32);
    const bool fp32 = hidden.scalar_type() == torch::kFloat32;
    const bool need_grad = need_hidden || need_weight;
    // fp32 products through oneDNN where that is the faster fp32 GEMM (model/onednn_linear.h). It writes
    // a fresh [n, vocab] tensor per chunk (no out= form), so chunks there stay at half the elements,
    // 16 MB: below glibc's mmap threshold, the heap hands the last chunk's memory back instead of
    // mapping and faulting in a new one.
    const bool onednn = detail::onednn_fp32_product_applies(hidden, weight);
    if (onednn && chunk_rows <= 0) chunk = std::max<int64_t>(1, std::min(chunk, kLossChunkElements / 2 / vocab));
    torch::Tensor logits = onednn ? torch::Tensor() : torch::empty({chunk, vocab}, hidden.options());
    torch::Tensor upcast = fp32 ? torch::Tensor() : torch::empty({block, vocab}, f32);
    torch::Tensor logp = torch::empty({block, vocab}, f32);
    const torch::Tensor minus_one = torch::full({block, 1}, -1.0, f32);
    torch::Tensor grad_hidden = need_hidden ? torch::empty_like(hidden) : torch::Tensor();
    // fp32 accumulator for the weight's gradient across chunks (bf16 sums would round per chunk).
    torch::Tensor grad_weight = need_weight ? torch::zeros(weight.sizes(), f32) : torch::Tensor();
    torch::Tensor total = torch::zeros({}, f32);
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      const torch::Tensor h = hidden.narrow(0, start, n);
      torch::Tensor l;
      if (onednn) {
        l = detail::onednn_fp32_linear(h, weight, torch::Tensor(), torch::Tensor());
      } else {
        l = logits.narrow(0, 0, n);
        at::mm_out(l, h, weight.t());
      }
      for (int64_t b = 0; b < n; b += block) {
        const int64_t m = std::min(block, n - b);
        const torch::Tensor t = target.narrow(0, start + b, m).unsqueeze(1);
        torch::Tensor lb = l.narrow(0, b, m), lp = logp.narrow(0, 0, m);
        const torch::Tensor u = fp32 ? lb : upcast.narrow(0, 0, m).copy_(lb);
        at::_log_softmax_out(lp, u, 1, /*half_to_float=*/false);
        total.sub_(lp.gather(1, t).sum());
        // d loss / d logits = softmax - onehot(target), rounded to the model's dtype as HF's cast back does.
        if (need_grad) lb.copy_(lp.exp_().scatter_add_(1, t, minus_one.narrow(0, 0, m)));
      }
      if (need_hidden) {
        torch::Tensor gh = grad_hidden.narrow(0, start, n);
        if (onednn)
          gh.copy_(detail::onednn_fp32_linear(l, weight.t(), torch::Tensor(), torch::Tensor()));
        else
          at::mm_out(gh, l, weight);
      }
      if (need_weight) {
        if (fp32) grad_weight.addmm_(l.t(), h);
        else grad_weight.add_(torch::mm(l.t(), h));
      }
    }
    if (need_weight) grad_weight = grad_weight.to(weight.scalar_type());
    ctx->save_for_backward({grad_hidden, grad_weight});
    return total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& g = grads[0];
    return {saved[0].defined() ? saved[0] * g.to(saved[0].scalar_type()) : torch::Tensor(),
            saved[1].defined() ? saved[1] * g.to(saved[1].scalar_type()) : torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// What a checkpoint's training depends on besides the weights it holds, one "key=value" line each:
// the options that shape the run, the trainable parameters and their adapters' settings, and a hash of
// the examples. A resume under any other value would silently train something else.
std::string run_signature(const TrainerOptions& o, const std::vector<std::pair<std::string, torch::Tensor>>& params,
                          const LlamaModel& model, const std::vector<TrainingExample>& examples) {
  std::ostringstream out;
  out.precision(17);
  out << "learning_rate=" << o.learning_rate << "\nweight_decay=" << o.weight_decay << "\nadam_betas=" << o.adam_beta1
      << "," << o.adam_beta2 << "\nadam_epsilon=" << o.adam_epsilon << "\nmax_grad_norm=" << o.max_grad_norm
      << "\nlr_scheduler=" << o.lr_scheduler << "\nwarmup=" << o.warmup_ratio << "," << o.warmup_steps
      << "\nnum_epochs=" << o.num_epochs << "\nmax_steps=" << o.max_steps << "\nmicro_batch_size=" << o.micro_batch_size
      << "\ngradient_accumulation_steps=" << o.gradient_accumulation_steps << "\nbf16=" << o.bf16
      << "\nseed=" << o.seed << "\ndtype=" << model->dtype();
  for (const auto& [name, proj] : model->projections())
    if (proj->has_adapter())
      out << "\nadapter " << name << "=r " << proj->rank() << ", scaling " << proj->scaling() << ", dropout "
          << proj->dropout();
  for (const auto& [name, t] : params) out << "\nparameter " << name << "=" << t.sizes();
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over every example's length, ids and labels
  auto mix = [&](int64_t v) {
    for (int b = 0; b < 8; ++b) hash = (hash ^ ((static_cast<uint64_t>(v) >> (8 * b)) & 0xffu)) * 1099511628211ull;
  };
  for (const auto& e : examples) {
    mix(static_cast<int64_t>(e.input_ids.size()));
    for (int64_t v : e.input_ids) mix(v);
    for (int64_t v : e.labels) mix(v);
  }
  out << "\nexamples=" << examples.size() << " (hash " << std::hex << hash << ")";
  return out.str();
}

// The lines of `saved` whose value differs in `now`, for the error.
std::string signature_differences(const std::string& saved, const std::string& now) {
  auto parse = [](const std::string& text) {
    std::map<std::string, std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      const auto eq = line.find('=');
      lines[line.substr(0, eq)] = eq == std::string::npos ? "" : line.substr(eq + 1);
    }
    return lines;
  };
  const auto a = parse(saved), b = parse(now);
  std::ostringstream out;
  size_t shown = 0, differing = 0;
  auto note = [&](const std::string& key, const std::string& then, const std::string& here) {
    if (++differing > 6) return;
    out << (shown++ ? "; " : "") << key << ": " << then << " then, " << here << " now";
  };
  for (const auto& [key, value] : a) {
    const auto it = b.find(key);
    if (it == b.end()) note(key, value, "absent");
    else if (it->second != value) note(key, value, it->second);
  }
  for (const auto& [key, value] : b)
    if (!a.count(key)) note(key, "absent", value);
  if (differing > shown) out << "; and " << differing - shown << " more";
  return out.str();
}

}  // namespace

LossSum causal_lm_loss_sum(LlamaModel& model, const std::vector<const TrainingExample*>& batch, int64_t pad_token_id,
                           int64_t loss_chunk_rows) {
  LLM4DSR_CHECK(!batch.empty(), "causal_lm_loss_sum needs a non-empty batch");
  int64_t max_len = 0;
  for (const auto* e : batch) max_len = std::max<int64_t>(max_len, e->input_ids.size());
  const int64_t B = batch.size();
  // Right padding: a real token only attends to earlier positions, all of them real, so the plain
  // causal mask is exact and the fast causal attention path applies.
  std::vector<int64_t> ids(B * max_len, pad_token_id);
  std::vector<int64_t> rows, targets;
  for (int64_t b = 0; b < B; ++b) {
    const auto& e = *batch[b];
    std::copy(e.input_ids.begin(), e.input_ids.end(), ids.begin() + b * max_len);
    for (size_t t = 1; t < e.labels.size(); ++t) {
      if (e.labels[t] == kIgnoreIndex) continue;
      LLM4DSR_CHECK(e.labels[t] >= 0 && e.labels[t] < model->config().vocab_size,
                    "label " << e.labels[t] << " outside the vocabulary (0.." << model->config().vocab_size - 1 << ")");
      rows.push_back(b * max_len + static_cast<int64_t>(t) - 1);
      targets.push_back(e.labels[t]);
    }
  }
  const auto device = model->device();
  // Copies, not views of the local vectors: autograd keeps the indices for the backward pass.
  auto input = torch::tensor(ids, torch::kInt64).view({B, max_len}).to(device);
  LossSum out;
  out.tokens = static_cast<int64_t>(targets.size());
  torch::Tensor hidden = model->forward_hidden(input);
  if (out.tokens == 0) {
    out.sum = hidden.sum().to(torch::kFloat32) * 0.0;  // keeps the graph connected, contributes nothing
    return out;
  }
  auto row_index = torch::tensor(rows, torch::kInt64).to(device);
  auto target = torch::tensor(targets, torch::kInt64).to(device);
  auto selected = hidden.reshape({-1, hidden.size(-1)}).index_select(0, row_index);
  // Which gradients the loss needs is decided here: inside forward() autograd is off, and without
  // recording there is no graph to ask.
  const bool grad = at::GradMode::is_enabled();
  torch::Tensor weight = model->lm_head_weight;
  const auto device_type = selected.device().type();
  if (at::autocast::is_autocast_enabled(device_type)) {
    // What autocast does to the lm_head linear it replaces: the GEMM in the autocast dtype, the loss in fp32.
    const auto dtype = at::autocast::get_autocast_dtype(device_type);
    selected = selected.to(dtype);
    weight = weight.to(dtype);
  }
  out.sum = LinearCrossEntropy::apply(selected, weight, target, loss_chunk_rows, grad && selected.requires_grad(),
                                      grad && weight.requires_grad());
  return out;
}

std::vector<TrainingExample> make_lm_examples(const std::vector<std::vector<int64_t>>& encoded_texts,
                                              int64_t eos_token_id, int64_t block_size) {
  LLM4DSR_CHECK(block_size >= 2, "block_size must be >= 2, got " << block_size);
  std::vector<int64_t> stream;
  for (const auto& t : encoded_texts) {
    stream.insert(stream.end(), t.begin(), t.end());
    stream.push_back(eos_token_id);
  }
  std::vector<TrainingExample> out;
  for (size_t i = 0; i < stream.size(); i += block_size) {
    const size_t end = std::min(stream.size(), i + static_cast<size_t>(block_size));
    if (end - i < 2) break;
    TrainingExample e;
    e.input_ids.assign(stream.begin() + i, stream.begin() + end);
    e.labels = e.input_ids;
    out.push_back(std::move(e));
  }
  return out;
}

Trainer::Trainer(LlamaModel model, TrainerOptions options) : model_(std::move(model)), options_(std::move(options)) {
  LLM4DSR_CHECK(options_.micro_batch_size > 0, "micro_batch_size must be > 0, got " << options_.micro_batch_size);
  LLM4DSR_CHECK(options_.gradient_accumulation_steps > 0,
                "gradient_accumulation_steps must be > 0, got " << options_.gradient_accumulation_steps);
  LLM4DSR_CHECK(options_.num_epochs > 0 || options_.max_steps > 0, "num_epochs or max_steps must be > 0");
  LLM4DSR_CHECK(options_.learning_rate > 0, "learning_rate must be > 0, got " << options_.learning_rate);
  LLM4DSR_CHECK(options_.lr_scheduler == "cosine" || options_.lr_scheduler == "linear" ||
                    options_.lr_scheduler == "constant",
                "lr_scheduler must be cosine, linear or constant, got '" << options_.lr_scheduler << "'");
  LLM4DSR_CHECK(options_.warmup_ratio >= 0 && options_.warmup_ratio < 1,
                "warmup_ratio must be in [0, 1), got " << options_.warmup_ratio);
  const int64_t vocab = model_->config().vocab_size;
  LLM4DSR_CHECK(options_.pad_token_id >= 0 && options_.pad_token_id < vocab,
                "pad_token_id must be a token of the model's vocabulary [0, " << vocab << "), got "
                                                                            << options_.pad_token_id);
}

Trainer::~Trainer() = default;

void Trainer::set_progress_callback(std::function<void(const TrainerProgress&)> callback) {
  callback_ = std::move(callback);
}

int64_t Trainer::total_steps(int64_t num_examples) const {
  const int64_t per_step = options_.micro_batch_size * options_.gradient_accumulation_steps;
  const int64_t per_epoch = (num_examples + per_step - 1) / per_step;
  int64_t total = per_epoch * std::max<int64_t>(options_.num_epochs, 1);
  if (options_.max_steps > 0) total = options_.num_epochs > 0 ? std::min(total, options_.max_steps) : options_.max_steps;
  return total;
}

double Trainer::learning_rate_at(int64_t step, int64_t total_steps) const {
  const int64_t warmup = options_.warmup_steps > 0
                             ? options_.warmup_steps
                             : static_cast<int64_t>(std::ceil(options_.warmup_ratio * total_steps));
  const double base = options_.learning_rate;
  if (step < warmup) return base * (step + 1) / double(warmup);
  if (options_.lr_scheduler == "constant") return base;
  const double progress = total_steps > warmup ? double(step - warmup) / double(total_steps - warmup) : 0.0;
  if (options_.lr_scheduler == "linear") return base * std::max(0.0, 1.0 - progress);
  return base * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double Trainer::evaluate(const std::vector<TrainingExample>& examples) const {
  LLM4DSR_CHECK(!examples.empty(), "evaluate needs at least one example");
  for (size_t i = 0; i < examples.size(); ++i) check_example(examples[i], i, model_->config().vocab_size);
  torch::NoGradGuard no_grad;
  LlamaModel model = model_;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<int64_t> ids(examples.size());
  std::iota(ids.begin(), ids.end(), 0);
  double sum = 0;
  int64_t tokens = 0;
  AutocastGuard autocast(options_.bf16, model->device().type());
  for (const auto& mb : bucket(examples, ids, options_.micro_batch_size)) {
    LossSum ls = causal_lm_loss_sum(model, mb, options_.pad_token_id);
    sum += ls.sum.item<double>();
    tokens += ls.tokens;
  }
  if (was_training) model->train();
  LLM4DSR_CHECK(tokens > 0, "evaluate: no labelled tokens in " << examples.size() << " examples");
  return sum / tokens;
}

TrainResult Trainer::train(const std::vector<TrainingExample>& examples, bool resume) {
  LLM4DSR_CHECK(!examples.empty(), "train needs at least one example");
  for (size_t i = 0; i < examples.size(); ++i) check_example(examples[i], i, model_->config().vocab_size);
  const auto params = trainable_parameters(model_);
  LLM4DSR_CHECK(!params.empty(), "the model has no trainable parameters (add LoRA adapters or unfreeze the base)");
  std::vector<torch::Tensor> tensors;
  for (const auto& p : params) tensors.push_back(p.second);

  torch::optim::AdamW optimizer(tensors, torch::optim::AdamWOptions(options_.learning_rate)
                                             .betas({options_.adam_beta1, options_.adam_beta2})
                                             .eps(options_.adam_epsilon)
                                             .weight_decay(options_.weight_decay));
  const int64_t num_examples = static_cast<int64_t>(examples.size());
  const int64_t total = total_steps(num_examples);
  const int64_t per_step = options_.micro_batch_size * options_.gradient_accumulation_steps;
  const int64_t per_epoch = (num_examples + per_step - 1) / per_step;

  const fs::path checkpoint = options_.output_dir.empty() ? fs::path() : fs::path(options_.output_dir) / "checkpoint.pt";
  TrainResult result;
  int64_t start_step = 0;
  const torch::Device device = model_->device();
  // Dropout draws from these generators: seeding them makes a run reproducible, and their states go into
  // every checkpoint so a resumed run draws the same masks.
  std::vector<DropoutGenerator> generators = dropout_generators(device);
  for (auto& g : generators) {
    std::lock_guard<std::mutex> lock(g.generator.mutex());
    g.generator.set_current_seed(options_.seed);
  }
  // What the checkpoint's training depends on: written into every checkpoint, compared on resume.
  const std::string signature = checkpoint.empty() ? std::string() : run_signature(options_, params, model_, examples);
  if (resume && !checkpoint.empty() && fs::exists(checkpoint)) {
    torch::serialize::InputArchive archive;
    try {
      // Mapped to the model's device: a checkpoint written on a GPU resumes on the CPU and back.
      archive.load_from(checkpoint.string(), device);
    } catch (const c10::Error& e) {
      LLM4DSR_THROW("cannot read training checkpoint " << checkpoint.string() << ": " << e.what_without_backtrace());
    }
    // Checked first: with other trainable parameters the reads below would fail on a missing key.
    c10::IValue saved_signature;
    if (archive.try_read("signature", saved_signature)) {  // checkpoints before it was written have none
      LLM4DSR_CHECK(saved_signature.toStringRef() == signature,
                    "checkpoint " << checkpoint.string() << " was written by a run with other settings ("
                                  << signature_differences(saved_signature.toStringRef(), signature)
                                  << "): resume needs the same data and options; start without resume, or use "
                                     "another output folder");
    }
    torch::Tensor meta;
    archive.read("meta", meta);
    meta = meta.cpu();  // read onto the model's device with the rest
    const auto m = meta.accessor<int64_t, 1>();
    LLM4DSR_CHECK(m[1] == num_examples && m[2] == total,
                  "checkpoint " << checkpoint.string() << " was written for " << m[1] << " examples / " << m[2]
                                << " steps, this run has " << num_examples << " / " << total
                                << ": resume needs the same data and options");
    start_step = m[0];
    torch::NoGradGuard no_grad;
    for (const auto& p : params) {
      torch::Tensor saved;
      LLM4DSR_CHECK(archive.try_read("param." + p.first, saved),
                    "checkpoint " << checkpoint.string() << " has no parameter " << p.first
                                  << ": it was written for other trainable parameters");
      LLM4DSR_CHECK(saved.sizes() == p.second.sizes(), "checkpoint " << checkpoint.string() << ": parameter "
                                                                      << p.first << " has shape " << saved.sizes()
                                                                      << ", the model has " << p.second.sizes());
      p.second.copy_(saved);
    }
    torch::serialize::InputArchive opt_archive;
    archive.read("optimizer", opt_archive);
    optimizer.load(opt_archive);
    for (auto& g : generators) {
      torch::Tensor state;
      if (g.required)
        archive.read(g.key, state);
      else if (!archive.try_read(g.key, state))
        continue;
      std::lock_guard<std::mutex> lock(g.generator.mutex());
      g.generator.set_state(state.cpu());
    }
    result.resumed_from_step = start_step;
  }

  auto save_checkpoint = [&](int64_t steps_done) {
    if (checkpoint.empty()) return;
    fs::create_directories(checkpoint.parent_path());
    torch::serialize::OutputArchive archive;
    archive.write("meta", torch::tensor({steps_done, num_examples, total}, torch::kInt64));
    archive.write("signature", c10::IValue(signature));
    for (const auto& p : params) archive.write("param." + p.first, p.second.detach().cpu());
    torch::serialize::OutputArchive opt_archive;
    optimizer.save(opt_archive);
    archive.write("optimizer", opt_archive);
    for (auto& g : generators) {
      std::lock_guard<std::mutex> lock(g.generator.mutex());
      archive.write(g.key, g.generator.get_state());
    }
    const std::string tmp = checkpoint.string() + ".tmp";
    archive.save_to(tmp);
    fs::rename(tmp, checkpoint);
  };

  model_->train();
  const bool tty = isatty(fileno(stderr));
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (int64_t step = start_step; step < total; ++step) {
    const int64_t epoch = step / per_epoch;
    if (epoch != order_epoch) {
      // Each epoch's order depends only on (seed, epoch): a resumed run sees the same batches.
      order.resize(num_examples);
      std::iota(order.begin(), order.end(), 0);
      internal::Rng rng(options_.seed, 0x7261696eULL + static_cast<uint64_t>(epoch));
      rng.shuffle(order);
      order_epoch = epoch;
    }
    const int64_t begin = (step % per_epoch) * per_step;
    std::vector<int64_t> ids(order.begin() + begin, order.begin() + std::min(num_examples, begin + per_step));
    int64_t step_tokens = 0;
    for (int64_t i : ids) step_tokens += labelled_tokens(examples[i]);
    const double lr = learning_rate_at(step, total);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    double step_loss = 0;
    for (const auto& mb : bucket(examples, ids, options_.micro_batch_size)) {
      for (const auto* e : mb) tokens_seen += e->input_ids.size();
      AutocastGuard autocast(options_.bf16, model_->device().type());
      LossSum ls = causal_lm_loss_sum(model_, mb, options_.pad_token_id);
      if (step_tokens == 0) continue;
      // Dividing every micro-batch by the step's token count makes the accumulated gradient that of
      // the step's mean token loss, however the step is cut.
      torch::Tensor loss = ls.sum / static_cast<double>(step_tokens);
      loss.backward();
      step_loss += loss.item<double>();
    }
    if (options_.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(tensors, options_.max_grad_norm);
    optimizer.step();
    result.step_losses.push_back(step_loss);

    const int64_t done = step + 1;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    TrainerProgress progress;
    progress.step = done;
    progress.total_steps = total;
    progress.loss = step_loss;
    progress.learning_rate = lr;
    progress.elapsed_seconds = elapsed;
    progress.tokens_per_second = elapsed > 0 ? tokens_seen / elapsed : 0.0;
    progress.eta_seconds = elapsed / double(done - start_step) * double(total - done);
    if (callback_) callback_(progress);
    if (options_.progress && (tty || done == total || done % std::max<int64_t>(1, total / 20) == 0)) {
      std::fprintf(stderr, "%s[train] step %ld/%ld  loss %.4f  lr %.2e  %.0f tok/s  elapsed %s  ETA %s%s",
                   tty ? "\r" : "", long(done), long(total), step_loss, lr, progress.tokens_per_second,
                   format_duration(elapsed).c_str(), format_duration(progress.eta_seconds).c_str(),
                   (tty && done != total) ? "" : "\n");
      std::fflush(stderr);
    }
    if (options_.save_steps > 0 && done % options_.save_steps == 0 && done != total) save_checkpoint(done);
  }
  save_checkpoint(total);
  result.steps = total;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.tokens_per_second = result.seconds > 0 ? tokens_seen / result.seconds : 0.0;
  return result;
}

}  // namespace llm4dsr
