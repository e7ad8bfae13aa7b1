#include "internal/swiglu.h"

#include <ATen/Parallel.h>

#include <cstdint>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "internal/fast_math.h"
#include "internal/tensor_elements.h"
#include "internal/vector_clones.h"

namespace llm4dsr::internal {

namespace {

// Elements per parallel task: large enough that a task outlasts its scheduling, small enough that
// both threads get work on one token's row block.
constexpr int64_t kGrain = 1 << 15;

// sigmoid(g) through e = exp(-|g|), which never overflows: 1 / (1 + e) for g >= 0, e / (1 + e) below.
// Below -87, where exp_nonpositive clamps, e is exp(-|g| / 2) squared: exact to fp32's subnormal
// precision down to -103, where it rounds to 0 as exp would. A NaN gate gives a NaN silu (g * s) and
// NaN gradients, as ATen's; so does -inf (-inf * 0), as ATen's.
inline float sigmoid(float g) {
  const float minus_abs = g >= 0.0f ? -g : g;
  const bool tail = minus_abs < -87.0f;
  const float half_or_whole = exp_nonpositive(tail ? 0.5f * minus_abs : minus_abs);
  const float e = tail ? half_or_whole * half_or_whole : half_or_whole;
  const float inv = 1.0f / (1.0f + e);
  return g >= 0.0f ? inv : e * inv;
}

template <typename T>
LLM4DSR_VECTOR_CLONES void forward_block(const T* gate, const T* up, T* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = load(gate, i);
    store(out, i, g * sigmoid(g) * load(up, i));
  }
}

template <typename T>
LLM4DSR_VECTOR_CLONES void backward_block(const T* grad, const T* gate, const T* up, T* d_gate, T* d_up, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = load(gate, i), dy = load(grad, i);
    const float s = sigmoid(g);
    store(d_up, i, dy * g * s);
    store(d_gate, i, dy * load(up, i) * s * (1.0f + g * (1.0f - s)));
  }
}

template <typename T>
void forward_all(const torch::Tensor& gate, const torch::Tensor& up, const torch::Tensor& out) {
  const T* g = elements<T>(gate);
  const T* u = elements<T>(up);
  T* o = elements<T>(out);
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    forward_block(g + begin, u + begin, o + begin, end - begin);
  });
}

template <typename T>
void backward_all(const torch::Tensor& grad, const torch::Tensor& gate, const torch::Tensor& up,
                  const torch::Tensor& d_gate, const torch::Tensor& d_up) {
  const T* dy = elements<T>(grad);
  const T* g = elements<T>(gate);
  const T* u = elements<T>(up);
  T* dg = elements<T>(d_gate);
  T* du = elements<T>(d_up);
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    backward_block(dy + begin, g + begin, u + begin, dg + begin, du + begin, end - begin);
  });
}

void check_inputs(const char* name, const torch::Tensor& gate, const torch::Tensor& up) {
  LLM4DSR_CHECK(swiglu_kernel_applies(gate, up), name << ": gate " << gate.sizes() << " " << gate.scalar_type()
                                                      << " and up " << up.sizes() << " " << up.scalar_type()
                                                      << " must be contiguous CPU tensors of one shape, fp32 or bf16");
}

}  // namespace

bool swiglu_kernel_applies(const torch::Tensor& gate, const torch::Tensor& up) {
  const auto t = gate.scalar_type();
  return gate.device().is_cpu() && up.device().is_cpu() && up.scalar_type() == t &&
         (t == torch::kFloat32 || t == torch::kBFloat16) && gate.sizes() == up.sizes() && gate.is_contiguous() &&
         up.is_contiguous();
}

torch::Tensor swiglu_forward(const torch::Tensor& gate, const torch::Tensor& up) {
  check_inputs("swiglu_forward", gate, up);
  torch::Tensor out = torch::empty_like(gate);
  if (gate.scalar_type() == torch::kFloat32) forward_all<float>(gate, up, out);
  else forward_all<uint16_t>(gate, up, out);
  return out;
}

std::pair<torch::Tensor, torch::Tensor> swiglu_backward(const torch::Tensor& grad, const torch::Tensor& gate,
                                                        const torch::Tensor& up) {
  check_inputs("swiglu_backward", gate, up);
  LLM4DSR_CHECK(grad.sizes() == gate.sizes(), "swiglu_backward: gradient " << grad.sizes() << " for gate " << gate.sizes());
  const torch::Tensor dy = grad.to(gate.scalar_type()).contiguous();
  torch::Tensor d_gate = torch::empty_like(gate), d_up = torch::empty_like(gate);
  if (gate.scalar_type() == torch::kFloat32) backward_all<float>(dy, gate, up, d_gate, d_up);
  else backward_all<uint16_t>(dy, gate, up, d_gate, d_up);
  return {d_gate, d_up};
}

}  // namespace llm4dsr::internal
