#include "torch_catch.h"

#include <cmath>

#include <c10/util/Flags.h>
#include <torch/torch.h>

#include "internal/cpu_attention.h"
#include "llm4dsr/error.h"

C10_DECLARE_bool(caffe2_cpu_allocator_do_junk_fill);

namespace {

using llm4dsr::internal::cpu_attention;
using llm4dsr::internal::cpu_attention_applies;

// Grouped-query attention in float64 (HF's repeat_kv, then the textbook masked softmax) as
// [B, Tq, H * D]; rows that may attend to no key are zeros, as the kernel gives them.
torch::Tensor reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                        bool is_causal, double scale) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), KV = k.size(1), Tk = k.size(2);
  const torch::Tensor q64 = q.to(torch::kFloat64), k64 = k.to(torch::kFloat64).repeat_interleave(H / KV, 1),
                      v64 = v.to(torch::kFloat64).repeat_interleave(H / KV, 1);
  torch::Tensor allowed = torch::ones({1, 1, Tq, Tk}, torch::kBool);
  if (is_causal) allowed = allowed.logical_and(torch::ones({Tq, Tk}, torch::kBool).tril().view({1, 1, Tq, Tk}));
  if (mask.defined()) allowed = allowed.logical_and(mask);
  const torch::Tensor scores = torch::matmul(q64, k64.transpose(-1, -2)).mul(scale).masked_fill(allowed.logical_not(), -INFINITY);
  const torch::Tensor p = scores.softmax(-1).nan_to_num(0.0);  // all-masked rows: NaN -> 0
  return torch::matmul(p, v64).transpose(1, 2).reshape({B, Tq, H * D});
}

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got.to(torch::kFloat64) - want).norm() / want.norm()).item<double>();
}

// q [B, H, Tq, D] seen through the projections' [B, Tq, H, D] layout; k and v the first Tk positions
// of a cache buffer with room for Tk + 5, as the model's KV cache hands them over.
struct Operands {
  torch::Tensor q, k, v;
};

Operands make_operands(int64_t B, int64_t H, int64_t KV, int64_t Tq, int64_t Tk, int64_t D, torch::ScalarType dtype) {
  torch::manual_seed(B * 7919 + Tq * 31 + Tk + D);
  Operands o;
  o.q = (torch::randn({B, Tq, H, D}) * 1.2).to(dtype).transpose(1, 2);
  o.k = (torch::randn({B, KV, Tk + 5, D}) * 1.2).to(dtype).narrow(2, 0, Tk);
  o.v = torch::randn({B, KV, Tk + 5, D}).to(dtype).narrow(2, 0, Tk);
  return o;
}

bool kernel_available(torch::ScalarType dtype) {
  const auto o = make_operands(1, 2, 1, 4, 4, 16, dtype);
  return cpu_attention_applies(o.q, o.k, o.v, torch::Tensor());
}

void check(int64_t B, int64_t H, int64_t KV, int64_t Tq, int64_t Tk, int64_t D, torch::ScalarType dtype,
           const torch::Tensor& mask, bool is_causal) {
  const auto o = make_operands(B, H, KV, Tq, Tk, D, dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  REQUIRE(cpu_attention_applies(o.q, o.k, o.v, mask));
  const torch::Tensor got = cpu_attention(o.q, o.k, o.v, mask, is_causal, scale);
  REQUIRE(got.scalar_type() == dtype);
  REQUIRE(got.sizes() == torch::IntArrayRef({B, Tq, H * D}));
  const torch::Tensor want = reference(o.q, o.k, o.v, mask, is_causal, scale);
  if (dtype == torch::kFloat32) {
    CHECK((got.to(torch::kFloat64) - want).abs().max().item<double>() <= 2e-6);
  } else {
    // P rounded to bf16 before P V and the output rounded once: about 2^-9 relative each (a wrong
    // scale, mask or pairing of keys is off by far more than 1%).
    CHECK(relative_error(got, want) <= 5e-3);
  }
}

// The masks the model builds: left padding (row b starts at pads[b]) over cached + new keys, new
// queries at the end, causal by absolute position; a pad query sees every key (its output unused).
torch::Tensor padded_mask(int64_t B, int64_t Tq, int64_t Tk, const std::vector<int64_t>& pads) {
  torch::Tensor key_ok = torch::ones({B, 1, 1, Tk}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) key_ok[b].narrow(-1, 0, pads[static_cast<size_t>(b)]).fill_(false);
  const torch::Tensor q_abs = torch::arange(Tk - Tq, Tk).view({1, 1, Tq, 1});
  const torch::Tensor k_idx = torch::arange(0, Tk).view({1, 1, 1, Tk});
  const torch::Tensor allowed = (k_idx <= q_abs).logical_and(key_ok);
  return allowed.logical_or(allowed.any(-1, true).logical_not());
}

}  // namespace

TEST_CASE("cpu attention equals float64 attention", "[cpu_attention]") {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    if (!kernel_available(dtype)) {
      WARN("no AVX-512" << (dtype == torch::kBFloat16 ? " BF16" : "") << " on this CPU: cpu_attention not tested in "
                        << dtype);
      continue;
    }
    DYNAMIC_SECTION("causal, 3 query heads per KV head, odd T, " << dtype) {
      check(3, 9, 3, 37, 37, 64, dtype, torch::Tensor(), true);
    }
    DYNAMIC_SECTION("causal, one KV head per query head, T a multiple of the 4-row blocks and 16-key blocks, " << dtype) {
      check(2, 4, 4, 64, 64, 32, dtype, torch::Tensor(), true);
    }
    DYNAMIC_SECTION("no mask and not causal: every query sees every key, " << dtype) {
      check(2, 6, 2, 5, 23, 48, dtype, torch::Tensor(), false);
    }
    DYNAMIC_SECTION("left-padded rows over a cache (fewer queries than keys), " << dtype) {
      check(3, 6, 3, 9, 30, 64, dtype, padded_mask(3, 9, 30, {0, 4, 11}), false);
    }
    DYNAMIC_SECTION("head dimension past one 64-column chunk (80 = 64 + 16), a mask shared by the batch, " << dtype) {
      const torch::Tensor mask = torch::rand({1, 1, 7, 19}) > 0.3;
      mask.select(3, 0).fill_(true);  // every query sees at least one key
      check(2, 2, 1, 7, 19, 80, dtype, mask, false);
    }
    DYNAMIC_SECTION("a mask and causality together, " << dtype) {
      check(2, 3, 1, 13, 13, 16, dtype, torch::rand({2, 1, 13, 13}) > 0.5, true);
    }
  }
}

TEST_CASE("cpu attention: the packed keys' and values' padding is written, not left as it was allocated",
          "[cpu_attention]") {
  // c10's allocator fills new CPU memory with a NaN pattern while this flag is on: a padding slot the
  // kernel reads without writing (an odd key count's partner in the bf16 value pairs) turns rows NaN.
  struct JunkFill {
    JunkFill() { FLAGS_caffe2_cpu_allocator_do_junk_fill = true; }
    ~JunkFill() { FLAGS_caffe2_cpu_allocator_do_junk_fill = false; }
  } junk;
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    if (!kernel_available(dtype)) continue;
    DYNAMIC_SECTION("odd key count, " << dtype) { check(2, 6, 2, 5, 23, 32, dtype, torch::Tensor(), false); }
    DYNAMIC_SECTION("causal with fewer queries than keys, " << dtype) {
      check(2, 3, 1, 7, 12, 16, dtype, torch::Tensor(), true);
    }
  }
}

TEST_CASE("cpu attention: log-sum-exp of the scaled scores, as the flash kernel returns it", "[cpu_attention]") {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    if (!kernel_available(dtype)) continue;
    const int64_t B = 2, H = 6, KV = 2, T = 21, D = 32;
    const auto o = make_operands(B, H, KV, T, T, D, dtype);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    torch::Tensor lse;
    const torch::Tensor out = cpu_attention(o.q, o.k, o.v, torch::Tensor(), true, scale, &lse);
    REQUIRE(lse.scalar_type() == torch::kFloat32);
    REQUIRE(lse.sizes() == torch::IntArrayRef({B, H, T}));
    const torch::Tensor scores = torch::matmul(o.q.to(torch::kFloat64),
                                               o.k.to(torch::kFloat64).repeat_interleave(H / KV, 1).transpose(-1, -2))
                                     .mul(scale)
                                     .masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -INFINITY);
    CHECK((lse.to(torch::kFloat64) - scores.logsumexp(-1)).abs().max().item<double>() <= 1e-5);
    // The same output with and without it.
    CHECK(torch::equal(out, cpu_attention(o.q, o.k, o.v, torch::Tensor(), true, scale)));
  }
}

TEST_CASE("cpu attention: a query that may see no key gives zeros", "[cpu_attention]") {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    if (!kernel_available(dtype)) continue;
    const auto o = make_operands(1, 2, 1, 5, 5, 16, dtype);
    torch::Tensor mask = torch::ones({1, 1, 5, 5}, torch::kBool);
    mask[0][0][2].fill_(false);
    const torch::Tensor got = cpu_attention(o.q, o.k, o.v, mask, false, 0.25);
    CHECK(got[0][2].abs().max().item<double>() == 0.0);
    CHECK(got[0][1].abs().max().item<double>() > 0.0);
    CHECK(torch::isfinite(got).all().item<bool>());
  }
}

TEST_CASE("cpu attention: packed queries give the padded call's rows", "[cpu_attention]") {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    if (!kernel_available(dtype)) continue;
    DYNAMIC_SECTION(dtype) {
      const int64_t B = 3, H = 6, KV = 2, Tq = 9, Tk = 30, D = 32;
      const auto o = make_operands(B, H, KV, Tq, Tk, D, dtype);
      const torch::Tensor mask = padded_mask(B, Tq, Tk, {0, 25, 27});  // rows with 9, 5 and 3 real queries
      const double scale = 1.0 / std::sqrt(static_cast<double>(D));
      const torch::Tensor want = cpu_attention(o.q, o.k, o.v, mask, false, scale);
      // The real queries in a shuffled order (the map, not the layout, says which row is which); the
      // pads have no row.
      torch::Tensor real = torch::ones({B, Tq}, torch::kBool);
      real[1].narrow(0, 0, 4).fill_(false);
      real[2].narrow(0, 0, 6).fill_(false);
      const torch::Tensor flat = real.reshape({-1}).nonzero().squeeze(1);
      const int64_t N = flat.size(0);
      const torch::Tensor order = torch::randperm(N, torch::kInt64);
      const torch::Tensor token_index = flat.index_select(0, order);  // packed row n holds query token_index[n]
      torch::Tensor query_rows = torch::full({B * Tq}, -1, torch::kInt64);
      query_rows.index_copy_(0, token_index, torch::arange(N, torch::kInt64));
      query_rows = query_rows.view({B, Tq});
      // q packed as the model holds it: [1, N, H, D] seen as [1, H, N, D].
      const torch::Tensor q_packed =
          o.q.transpose(1, 2).reshape({B * Tq, H, D}).index_select(0, token_index).unsqueeze(0).transpose(1, 2);
      REQUIRE(cpu_attention_applies(q_packed, o.k, o.v, mask, query_rows));
      const torch::Tensor got = cpu_attention(q_packed, o.k, o.v, mask, false, scale, nullptr, query_rows);
      REQUIRE(got.sizes() == torch::IntArrayRef({1, N, H * D}));
      CHECK(torch::equal(got[0], want.reshape({B * Tq, H * D}).index_select(0, token_index)));
      torch::Tensor lse;
      CHECK_THROWS_WITH(cpu_attention(q_packed, o.k, o.v, mask, false, scale, &lse, query_rows),
                        Catch::Contains("no log-sum-exp for packed queries"));
      CHECK(!cpu_attention_applies(q_packed, o.k, o.v, mask, query_rows.to(torch::kInt32)));
      CHECK(!cpu_attention_applies(q_packed, o.k, o.v, mask, query_rows.narrow(0, 0, 2)));  // not one row per sequence
      CHECK(!cpu_attention_applies(q_packed, o.k, o.v, mask, query_rows.narrow(1, 0, 8).contiguous()));  // not the mask's Tq
      CHECK(!cpu_attention_applies(o.q, o.k, o.v, mask, query_rows));                      // q not packed
    }
  }
}

TEST_CASE("cpu attention: which inputs it takes", "[cpu_attention]") {
  if (!kernel_available(torch::kFloat32)) {
    WARN("no AVX-512 on this CPU: cpu_attention never applies");
    CHECK(!llm4dsr::internal::cpu_attention_preferred(torch::kFloat32));
    return;
  }
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  const torch::Tensor q = torch::randn({2, 6, 5, 16}, f32), k = torch::randn({2, 3, 7, 16}, f32);
  CHECK(cpu_attention_applies(q, k, k, torch::Tensor()));
  CHECK(cpu_attention_applies(q, k, k, torch::ones({1, 1, 5, 7}, torch::kBool)));
  CHECK(!cpu_attention_applies(q, k.to(torch::kFloat64), k.to(torch::kFloat64), torch::Tensor()));  // mixed dtypes
  CHECK(!cpu_attention_applies(q.to(torch::kFloat16), k.to(torch::kFloat16), k.to(torch::kFloat16), torch::Tensor()));
  CHECK(!cpu_attention_applies(q, torch::randn({2, 4, 7, 16}, f32), torch::randn({2, 4, 7, 16}, f32), torch::Tensor()));  // 6 % 4
  CHECK(!cpu_attention_applies(torch::randn({2, 6, 5, 24}), torch::randn({2, 3, 7, 24}), torch::randn({2, 3, 7, 24}),
                               torch::Tensor()));  // D not a multiple of 16
  CHECK(!cpu_attention_applies(q, k, k, torch::ones({1, 1, 5, 7}, torch::kFloat32)));  // additive mask
  CHECK(!cpu_attention_applies(q, k, k, torch::ones({2, 6, 5, 7}, torch::kBool)));     // per-head mask
  CHECK(!cpu_attention_applies(q, k, k, torch::ones({1, 1, 5, 6}, torch::kBool)));     // wrong key count
  CHECK(!cpu_attention_applies(q.transpose(2, 3).contiguous().transpose(2, 3), k, k, torch::Tensor()));  // D strided
  CHECK_THROWS_AS(cpu_attention(q, k, k, torch::ones({1, 1, 5, 6}, torch::kBool), false, 0.25), llm4dsr::Error);
}
