#include "internal/rms_norm.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "internal/vector_clones.h"

namespace llm4dsr::internal {

namespace {

// Rows per work item: small enough to spread a [tokens, hidden] tensor over the threads, large enough
// to amortise the scheduling. The weight-gradient partial sums are kept per block of this many rows,
// so their summation order (and the result) does not depend on the number of threads.
constexpr int64_t kRowsPerBlock = 16;

template <typename T>
inline float load(T v) {
  return static_cast<float>(v);
}

template <typename T>
inline T store(float v) {
  return static_cast<T>(v);
}

// HF rounds the normalised row to the input's dtype before the weight product; for fp32 this is exact.
template <typename T>
inline float round_trip(float v) {
  return static_cast<float>(static_cast<T>(v));
}

// One row of the forward: writes the normalised, weighted row to o and returns its inverse RMS.
template <typename scalar_t>
LLM4DSR_VECTOR_CLONES float forward_row(const scalar_t* xr, const float* wf, float* h, scalar_t* o, int64_t hidden,
                                        float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < hidden; ++i) {
    h[i] = load(xr[i]);
    sum += h[i] * h[i];
  }
  const float r = 1.0f / std::sqrt(sum / static_cast<float>(hidden) + eps);
#pragma omp simd
  for (int64_t i = 0; i < hidden; ++i) o[i] = store<scalar_t>(wf[i] * round_trip<scalar_t>(h[i] * r));
  return r;
}

template <typename scalar_t>
void forward_rows(const scalar_t* x, const scalar_t* w, scalar_t* out, float* inv_rms, int64_t rows, int64_t hidden,
                  float eps) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> wf(hidden), h(hidden);
    for (int64_t i = 0; i < hidden; ++i) wf[i] = load(w[i]);
    for (int64_t row = begin * kRowsPerBlock; row < std::min(rows, end * kRowsPerBlock); ++row) {
      const float r = forward_row(x + row * hidden, wf.data(), h.data(), out + row * hidden, hidden, eps);
      if (inv_rms) inv_rms[row] = r;
    }
  });
}

// One row of the backward: dx into d, and this row's share of the weight's gradient added to dw
// (when given). n and gn are scratch rows.
template <typename scalar_t>
LLM4DSR_VECTOR_CLONES void backward_row(const scalar_t* gr, const scalar_t* xr, const float* wf, float r, float* n,
                                        float* gn, scalar_t* d, float* dw, int64_t hidden) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < hidden; ++i) {
    n[i] = load(xr[i]) * r;
    gn[i] = load(gr[i]) * wf[i];
    dot += gn[i] * n[i];
  }
  const float mean = dot / static_cast<float>(hidden);
#pragma omp simd
  for (int64_t i = 0; i < hidden; ++i) d[i] = store<scalar_t>(r * (gn[i] - n[i] * mean));
  if (dw) {
#pragma omp simd
    for (int64_t i = 0; i < hidden; ++i) dw[i] += load(gr[i]) * round_trip<scalar_t>(n[i]);
  }
}

template <typename scalar_t>
void backward_rows(const scalar_t* g, const scalar_t* x, const scalar_t* w, const float* inv_rms, scalar_t* dx,
                   float* dweight_blocks, int64_t rows, int64_t hidden) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> wf(hidden), n(hidden), gn(hidden);
    for (int64_t i = 0; i < hidden; ++i) wf[i] = load(w[i]);
    for (int64_t block = begin; block < end; ++block) {
      float* dw = dweight_blocks ? dweight_blocks + block * hidden : nullptr;
      for (int64_t row = block * kRowsPerBlock; row < std::min(rows, (block + 1) * kRowsPerBlock); ++row)
        backward_row(g + row * hidden, x + row * hidden, wf.data(), inv_rms[row], n.data(), gn.data(),
                     dx + row * hidden, dw, hidden);
    }
  });
}

}  // namespace

bool rms_norm_kernel_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  const auto t = x.scalar_type();
  return x.device().is_cpu() && weight.device().is_cpu() && weight.scalar_type() == t &&
         (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16) && x.dim() >= 1 &&
         weight.dim() == 1 && x.size(-1) == weight.size(0) && x.numel() > 0;
}

torch::Tensor rms_norm_forward(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                               torch::Tensor* inv_rms_out) {
  const torch::Tensor input = x.contiguous();
  const torch::Tensor w = weight.contiguous();
  const int64_t hidden = input.size(-1);
  const int64_t rows = input.numel() / hidden;
  torch::Tensor out = torch::empty_like(input);
  torch::Tensor inv_rms;
  if (inv_rms_out) {
    auto shape = input.sizes().vec();
    shape.pop_back();
    inv_rms = torch::empty(shape, input.options().dtype(torch::kFloat32));
    *inv_rms_out = inv_rms;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "rms_norm_forward", [&] {
    forward_rows<scalar_t>(input.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                           inv_rms_out ? inv_rms.data_ptr<float>() : nullptr, rows, hidden, static_cast<float>(eps));
  });
  return out;
}

std::pair<torch::Tensor, torch::Tensor> rms_norm_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                                          const torch::Tensor& weight, const torch::Tensor& inv_rms,
                                                          bool need_weight) {
  const torch::Tensor input = x.contiguous();
  const torch::Tensor g = grad.to(input.scalar_type()).contiguous();
  const torch::Tensor w = weight.contiguous();
  const torch::Tensor r = inv_rms.contiguous();
  const int64_t hidden = input.size(-1);
  const int64_t rows = input.numel() / hidden;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  torch::Tensor dx = torch::empty_like(input);
  torch::Tensor partial = need_weight ? torch::zeros({blocks, hidden}, input.options().dtype(torch::kFloat32))
                                      : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "rms_norm_backward", [&] {
    backward_rows<scalar_t>(g.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                            r.const_data_ptr<float>(), dx.data_ptr<scalar_t>(),
                            need_weight ? partial.data_ptr<float>() : nullptr, rows, hidden);
  });
  torch::Tensor dweight = need_weight ? partial.sum(0).to(weight.scalar_type()) : torch::Tensor();
  return {dx, dweight};
}

}  // namespace llm4dsr::internal
