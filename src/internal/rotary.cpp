#include "internal/rotary.h"

#include <ATen/Parallel.h>

#include <cstdint>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "internal/fast_math.h"
#include "internal/tensor_elements.h"
#include "internal/vector_clones.h"

namespace llm4dsr::internal {

namespace {

// One head's row: out[i] = x[i] c[i] - sign x[i + half] s[i], out[i + half] = x[i + half] c[i] + sign x[i] s[i].
template <typename X, typename O, typename C>
LLM4DSR_VECTOR_CLONES void rotate_row(const X* x, const C* c, const C* s, float sign, O* out, int64_t half) {
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = load(x, i), x2 = load(x, i + half), ci = load(c, i), si = sign * load(s, i);
    store(out, i, x1 * ci - x2 * si);
    store(out, i + half, x2 * ci + x1 * si);
  }
}

template <typename X, typename O, typename C>
void rotate_all(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, float sign,
                const torch::Tensor& out) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const int64_t sb = x.stride(0), st = x.stride(1), sh = x.stride(2);
  const int64_t cos_batch_stride = cos.size(0) == 1 ? 0 : T * D;
  const X* xp = elements<X>(x);
  const C* cp = elements<C>(cos);
  const C* spp = elements<C>(sin);
  O* op = elements<O>(out);
  // Parallel over (b, t): each task rotates every head of its positions with one cos/sin row.
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      const C* c = cp + b * cos_batch_stride + t * D;
      const C* s = spp + b * cos_batch_stride + t * D;
      for (int64_t h = 0; h < H; ++h)
        rotate_row(xp + b * sb + t * st + h * sh, c, s, sign, op + (bt * H + h) * D, half);
    }
  });
}

bool float_or_bf16(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16;
}

template <typename X, typename O>
void dispatch_cos(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, float sign,
                  const torch::Tensor& out) {
  if (cos.scalar_type() == torch::kFloat32) rotate_all<X, O, float>(x, cos, sin, sign, out);
  else rotate_all<X, O, uint16_t>(x, cos, sin, sign, out);
}

template <typename X>
void dispatch_out(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, float sign,
                  const torch::Tensor& out) {
  if (out.scalar_type() == torch::kFloat32) dispatch_cos<X, float>(x, cos, sin, sign, out);
  else dispatch_cos<X, uint16_t>(x, cos, sin, sign, out);
}

}  // namespace

bool rotary_kernel_applies(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x.device().is_cpu() && cos.device().is_cpu() && sin.device().is_cpu() && x.dim() == 4 &&
         x.size(3) % 2 == 0 && x.stride(3) == 1 && float_or_bf16(x) && cos.dim() == 3 && float_or_bf16(cos) &&
         sin.scalar_type() == cos.scalar_type() && cos.sizes() == sin.sizes() && cos.is_contiguous() &&
         sin.is_contiguous() && (cos.size(0) == 1 || cos.size(0) == x.size(0)) && cos.size(1) == x.size(1) &&
         cos.size(2) == x.size(3);
}

torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int sign,
                     torch::ScalarType out_dtype) {
  LLM4DSR_CHECK(rotary_kernel_applies(x, cos, sin),
                "rotate: x " << x.sizes() << " " << x.scalar_type() << " with cos/sin " << cos.sizes() << " "
                             << cos.scalar_type() << ": needs x [B, T, heads, even D] with a unit inner stride and "
                                "contiguous cos/sin [B or 1, T, D] on the CPU, fp32 or bf16");
  LLM4DSR_CHECK(sign == 1 || sign == -1, "rotate: sign must be +1 or -1, got " << sign);
  LLM4DSR_CHECK(out_dtype == torch::kFloat32 || out_dtype == torch::kBFloat16,
                "rotate: output dtype must be fp32 or bf16, got " << out_dtype);
  torch::Tensor out = torch::empty(x.sizes(), x.options().dtype(out_dtype));
  if (x.numel() == 0) return out;
  const float s = static_cast<float>(sign);
  if (x.scalar_type() == torch::kFloat32) dispatch_out<float>(x, cos, sin, s, out);
  else dispatch_out<uint16_t>(x, cos, sin, s, out);
  return out;
}

}  // namespace llm4dsr::internal
