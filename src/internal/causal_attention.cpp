#include "internal/causal_attention.h"

#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <cstdint>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "internal/cpu_attention.h"
#include "internal/fast_math.h"
#include "internal/tensor_elements.h"
#include "internal/vector_clones.h"

namespace llm4dsr::internal {

namespace {

// The backward's fp32 scores per slice of (sequence, KV head) pairs: G * T * T * 4 bytes each, at most
// this many per slice (a slice holds at least one pair).
constexpr int64_t kScoreBytes = int64_t{64} << 20;

// One query row of the backward: d = sum(dO * O) over the head dimension, then for keys j <= t
// (causal) P = exp(S * scale - lse) and dS = P * (dP - d) * scale, both rounded to bf16; zeros above t.
LLM4DSR_VECTOR_CLONES void score_row(const float* s, const uint16_t* dp, const uint16_t* d_out, const uint16_t* out,
                                     int64_t head_dim, float lse, float scale, int64_t visible, int64_t keys,
                                     uint16_t* p_row, uint16_t* ds_row) {
  float d = 0.0f;
#pragma omp simd reduction(+ : d)
  for (int64_t i = 0; i < head_dim; ++i) d += bf16_bits_to_float(d_out[i]) * bf16_bits_to_float(out[i]);
#pragma omp simd
  for (int64_t j = 0; j < visible; ++j) {
    const float p = exp_nonpositive(s[j] * scale - lse);
    p_row[j] = round_to_bf16_bits(p);
    ds_row[j] = round_to_bf16_bits(p * (bf16_bits_to_float(dp[j]) - d) * scale);
  }
  for (int64_t j = visible; j < keys; ++j) p_row[j] = ds_row[j] = 0;
}

struct Bf16CausalAttention : public torch::autograd::Function<Bf16CausalAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, double scale) {
    // Under bf16 autocast (the trainer's option for fp32 models) ATen would recast these products'
    // inputs; the dtypes here are already the ones wanted, forward and backward.
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    torch::Tensor out, lse;
    if (cpu_attention_preferred(torch::kBFloat16) && cpu_attention_applies(q, k, v, torch::Tensor())) {
      // [B, T, H * D] seen as [B, H, T, D]: the flash kernel's layout.
      out = cpu_attention(q, k, v, torch::Tensor(), /*is_causal=*/true, scale, &lse)
                .view({q.size(0), q.size(2), q.size(1), q.size(3)})
                .transpose(1, 2);
    } else {
      std::tie(out, lse) = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, /*is_causal=*/true,
                                                                          std::nullopt, scale);
    }
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto saved = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    const torch::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KV = k.size(1), G = H / KV;
    // Each KV head's G query heads stacked: [B * KV, G * T, D] (HF's repeat_kv order: query head h
    // reads KV head h / G). Row r of a stack, over all B * KV of them, is ((b * KV + kv) * G + g) * T + t
    // = (b * H + h) * T + t: lse's own order.
    const torch::Tensor q_all = q.contiguous().view({B * KV, G * T, D});
    const torch::Tensor do_all = grads[0].to(torch::kBFloat16).contiguous().view({B * KV, G * T, D});
    const torch::Tensor k_all = k.reshape({B * KV, T, D});
    const torch::Tensor v_all = v.reshape({B * KV, T, D});
    const torch::Tensor lse_all = lse.contiguous();
    LLM4DSR_CHECK(out.stride(3) == 1, "bf16_causal_attention: flash output with inner stride " << out.stride(3));
    torch::Tensor dq = torch::empty({B * KV, G * T, D}, q.options());
    torch::Tensor dk = torch::empty({B * KV, T, D}, k.options());
    torch::Tensor dv = torch::empty({B * KV, T, D}, v.options());
    const int64_t per_stack = G * T * T * 4;
    const int64_t slice = std::max<int64_t>(1, kScoreBytes / per_stack);
    const float fscale = static_cast<float>(scale);
    const uint16_t* o_ptr = elements<uint16_t>(out);
    const int64_t ob = out.stride(0), oh = out.stride(1), ot = out.stride(2);
    for (int64_t first = 0; first < B * KV; first += slice) {
      const int64_t n = std::min(slice, B * KV - first);
      const torch::Tensor qs = q_all.narrow(0, first, n), dos = do_all.narrow(0, first, n);
      const torch::Tensor ks = k_all.narrow(0, first, n), vs = v_all.narrow(0, first, n);
      // Scores in fp32 from a K^T laid out [D, T] (MKL's fp32 batched GEMM is 2.7x slower on the
      // transposed view); dO V^T in bf16.
      const torch::Tensor s = torch::bmm(qs.to(torch::kFloat32), ks.to(torch::kFloat32).transpose(1, 2).contiguous());
      const torch::Tensor dp = torch::bmm(dos, vs.transpose(1, 2));
      torch::Tensor p = torch::empty({n, G * T, T}, q.options());
      torch::Tensor ds = torch::empty_like(p);
      const float* s_ptr = s.data_ptr<float>();
      const float* lse_ptr = lse_all.data_ptr<float>() + first * G * T;
      const uint16_t* dp_ptr = elements<uint16_t>(dp);
      const uint16_t* do_ptr = elements<uint16_t>(dos);
      uint16_t* p_ptr = elements<uint16_t>(p);
      uint16_t* ds_ptr = elements<uint16_t>(ds);
      at::parallel_for(0, n * G * T, 64, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t global = first * G * T + r;  // (b * H + h) * T + t
          const int64_t t = global % T, h = (global / T) % H, b = global / (T * H);
          score_row(s_ptr + r * T, dp_ptr + r * T, do_ptr + r * D, o_ptr + b * ob + h * oh + t * ot, D, lse_ptr[r],
                    fscale, t + 1, T, p_ptr + r * T, ds_ptr + r * T);
        }
      });
      // dV = P^T dO and dK = dS^T Q sum over the group's G * T rows; dQ = dS K. Written in place: a
      // slice of the first dimension of a contiguous tensor is contiguous.
      torch::Tensor dv_slice = dv.narrow(0, first, n), dk_slice = dk.narrow(0, first, n);
      torch::Tensor dq_slice = dq.narrow(0, first, n);
      torch::bmm_out(dv_slice, p.transpose(1, 2), dos);
      torch::bmm_out(dk_slice, ds.transpose(1, 2), qs);
      torch::bmm_out(dq_slice, ds, ks);
    }
    return {dq.view({B, H, T, D}), dk.view({B, KV, T, D}), dv.view({B, KV, T, D}), torch::Tensor()};
  }
};

}  // namespace

bool bf16_causal_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const auto bf16_cpu = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kBFloat16 && t.dim() == 4;
  };
  return bf16_cpu(q) && bf16_cpu(k) && bf16_cpu(v) && k.sizes() == v.sizes() && q.size(0) == k.size(0) &&
         k.size(1) > 0 && q.size(1) % k.size(1) == 0 && q.size(2) == k.size(2) && q.size(3) == k.size(3) &&
         q.size(2) > 1;
}

torch::Tensor bf16_causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    double scale) {
  LLM4DSR_CHECK(bf16_causal_attention_applies(q, k, v),
                "bf16_causal_attention: q " << q.sizes() << " " << q.scalar_type() << ", k " << k.sizes() << " "
                                            << k.scalar_type() << ", v " << v.sizes() << " " << v.scalar_type()
                                            << ": needs bf16 CPU [B, H, T, D] and [B, KV, T, D], H a multiple "
                                               "of KV, T > 1");
  return Bf16CausalAttention::apply(q, k, v, scale);
}

}  // namespace llm4dsr::internal
