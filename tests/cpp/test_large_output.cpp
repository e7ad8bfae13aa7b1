#include "torch_catch.h"

#include <cstdint>

#include <torch/torch.h>

#include "internal/large_output.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"

namespace {

constexpr uintptr_t kHugePage = uintptr_t(2) << 20;

bool on_huge_page_boundary(const torch::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % kHugePage == 0;
}

}  // namespace

TEST_CASE("empty_large_output: large CPU outputs on 2 MB-aligned memory, small ones from torch", "[large_output]") {
  using llm4dsr::internal::empty_large_output;
  using llm4dsr::internal::kLargeOutputBytes;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  const int64_t cols = 4096;
  const int64_t big_rows = kLargeOutputBytes / (cols * 4);  // exactly the threshold
  torch::Tensor big = empty_large_output({big_rows, cols}, f32);
  REQUIRE(big.sizes() == torch::IntArrayRef({big_rows, cols}));
  CHECK(big.is_contiguous());
  CHECK(big.scalar_type() == torch::kFloat32);
#if defined(__linux__)
  CHECK(on_huge_page_boundary(big));
#endif
  // Writable end to end, and freed with the tensor (a view keeps the memory alive).
  big.fill_(2.5f);
  torch::Tensor last_row = big[big_rows - 1];
  big = torch::Tensor();
  CHECK(last_row.sum().item<double>() == 2.5 * cols);

  // Below the threshold: torch's own allocation (never checked for alignment: it may happen to be aligned).
  torch::Tensor small = empty_large_output({big_rows - 1, cols}, f32);
  CHECK(small.sizes() == torch::IntArrayRef({big_rows - 1, cols}));
  const torch::Tensor bf16 = empty_large_output({big_rows, cols}, f32.dtype(torch::kBFloat16));  // half the bytes
  CHECK(bf16.scalar_type() == torch::kBFloat16);
}

TEST_CASE("LlamaModel: bf16 full-sequence logits past the large-output size equal the plain lm_head product",
          "[large_output][model]") {
  llm4dsr::ModelConfig c = llm4dsr::ModelConfig::preset("tiny", 32768);
  c.num_hidden_layers = 1;
  llm4dsr::LlamaModel model(c, torch::kCPU, torch::kBFloat16, /*seed=*/3);
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::randint(0, c.vocab_size, {2, 260});  // 520 rows x 32768 x 2 bytes = 34 MB
  const torch::Tensor hidden = model->forward_hidden(ids);
  const torch::Tensor logits = model->logits_from_hidden(hidden);
  REQUIRE(logits.sizes() == torch::IntArrayRef({2, 260, c.vocab_size}));
#if defined(__linux__)
  CHECK(on_huge_page_boundary(logits));  // the large-output path ran
#endif
  // Against the product in float64 of the same bf16 factors: within one bf16 rounding of the output.
  const torch::Tensor expected =
      torch::matmul(hidden.to(torch::kFloat64), model->lm_head_weight.to(torch::kFloat64).t());
  auto rel = [&](const torch::Tensor& t, const torch::Tensor& ref) {
    return ((t.to(torch::kFloat64) - ref).abs() / (ref.abs() + 1e-3 * ref.abs().max())).max().item<double>();
  };
  CHECK(rel(logits, expected) <= 1.0 / 128);
  // The full forward returns the same logits.
  CHECK(torch::equal(model->forward(ids), logits));
  // Fewer rows (below the size): the ordinary path, same values.
  const torch::Tensor few = model->logits_from_hidden(hidden.narrow(1, 0, 10));
  CHECK(rel(few, expected.narrow(1, 0, 10)) <= 1.0 / 128);
  // fp32 logits keep torch's own allocation (slower on huge pages here, see lm_head).
  model->to_device_dtype(torch::kCPU, torch::kFloat32);
  const torch::Tensor hidden32 = model->forward_hidden(ids);
  CHECK((model->logits_from_hidden(hidden32) - torch::linear(hidden32, model->lm_head_weight)).abs().max().item<double>() <=
        1e-5);
}
