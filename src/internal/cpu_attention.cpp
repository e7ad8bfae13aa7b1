#include "internal/cpu_attention.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <torch/torch.h>

#include "llm4dsr/error.h"
#include "internal/tensor_elements.h"
#include "model/onednn_linear.h"
#include "model/packed_linear.h"

// GCC 12's AVX-512 headers pass _mm512_undefined_ps() (a self-initialised variable) as the unused
// merge source of unmasked intrinsics such as _mm512_max_ps, and warn about it once they are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define LLM4DSR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define LLM4DSR_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace llm4dsr::internal {

namespace {

constexpr int64_t kRows = 4;   // query rows of one head per block
constexpr int64_t kKeys = 16;  // fp32 scores per zmm register
constexpr int64_t kMaxHeadDim = 512;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Scores of two 16-key blocks (jb, jb + 1) of kRows rows into rows of ld floats.
LLM4DSR_AVX512 inline void store_two_blocks(const __m512 (&acc)[kRows][2], int64_t ld, int64_t jb, float* s) {
  for (int64_t r = 0; r < kRows; ++r) {
    _mm512_storeu_ps(s + r * ld + jb * kKeys, acc[r][0]);
    _mm512_storeu_ps(s + r * ld + (jb + 1) * kKeys, acc[r][1]);
  }
}

// Scores of kRows query rows against key_blocks blocks of 16 keys: s[r * ld + j] = q_r . k_j, from
// kt = K^T [D][ld] (fp32). Two key blocks at a time: eight independent accumulators cover the FMA
// latency.
LLM4DSR_AVX512 void scores_fp32(const float* const* q, const float* kt, int64_t D, int64_t ld, int64_t key_blocks,
                                float* s) {
  int64_t jb = 0;
  for (; jb + 2 <= key_blocks; jb += 2) {
    __m512 acc[kRows][2];
    for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const float* keys = kt + d * ld + jb * kKeys;
      const __m512 k0 = _mm512_loadu_ps(keys), k1 = _mm512_loadu_ps(keys + kKeys);
      for (int64_t r = 0; r < kRows; ++r) {
        const __m512 qr = _mm512_set1_ps(q[r][d]);
        acc[r][0] = _mm512_fmadd_ps(qr, k0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(qr, k1, acc[r][1]);
      }
    }
    store_two_blocks(acc, ld, jb, s);
  }
  if (jb < key_blocks) {
    __m512 acc[kRows];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m512 k0 = _mm512_loadu_ps(kt + d * ld + jb * kKeys);
      for (int64_t r = 0; r < kRows; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r][d]), k0, acc[r]);
    }
    for (int64_t r = 0; r < kRows; ++r) _mm512_storeu_ps(s + r * ld + jb * kKeys, acc[r]);
  }
}

// The same from bf16 rows and ktp = K^T in key pairs [D / 2][ld][2]: each dot product instruction
// adds, per key, q[2i] k[2i] + q[2i + 1] k[2i + 1] in fp32.
LLM4DSR_AVX512_BF16 void scores_bf16(const uint16_t* const* q, const uint16_t* ktp, int64_t D, int64_t ld,
                                     int64_t key_blocks, float* s) {
  int64_t jb = 0;
  for (; jb + 2 <= key_blocks; jb += 2) {
    __m512 acc[kRows][2];
    for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < D / 2; ++i) {
      const uint16_t* keys = ktp + (i * ld + jb * kKeys) * 2;
      const auto k0 = (__m512bh)_mm512_loadu_si512(keys);
      const auto k1 = (__m512bh)_mm512_loadu_si512(keys + 2 * kKeys);
      for (int64_t r = 0; r < kRows; ++r) {
        int32_t pair;
        std::memcpy(&pair, q[r] + 2 * i, sizeof pair);
        const auto qr = (__m512bh)_mm512_set1_epi32(pair);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qr, k0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qr, k1);
      }
    }
    store_two_blocks(acc, ld, jb, s);
  }
  if (jb < key_blocks) {
    __m512 acc[kRows];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t i = 0; i < D / 2; ++i) {
      const auto k0 = (__m512bh)_mm512_loadu_si512(ktp + (i * ld + jb * kKeys) * 2);
      for (int64_t r = 0; r < kRows; ++r) {
        int32_t pair;
        std::memcpy(&pair, q[r] + 2 * i, sizeof pair);
        acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32(pair), k0);
      }
    }
    for (int64_t r = 0; r < kRows; ++r) _mm512_storeu_ps(s + r * ld + jb * kKeys, acc[r]);
  }
}

// fast_math.h's exp_nonpositive on 16 lanes (the same reduction and polynomial; 2^n by scalef).
LLM4DSR_AVX512 inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  for (const float c : {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f})
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

// Softmax numerators of one score row, in place, over whole blocks of 16 up to n: s[j] =
// exp(s[j] * scale - max) where key j is visible (j < visible, j < n, and mask[j] when there is a
// mask), 0 elsewhere (past n too, so that a bf16 copy of the row has zeros there). Returns their sum,
// 0 when no key is visible, and sets *max_out to the largest scaled score (-inf then). The row has
// room for n rounded up to 16; the mask is read only below n.
LLM4DSR_AVX512 float softmax_numerators(float* s, int64_t n, int64_t visible, const bool* mask, float scale,
                                        float* max_out) {
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i limit = _mm512_set1_epi32(static_cast<int32_t>(std::min(n, visible)));
  const __m512 factor = _mm512_set1_ps(scale);
  __m512 max16 = minus_inf;
  for (int64_t j = 0; j < n; j += kKeys) {
    __mmask16 seen = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(j))), limit);
    if (mask) {
      const __mmask16 in_row = n - j >= kKeys ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - j)) - 1);
      const __m512i bytes = _mm512_maskz_cvtepu8_epi32(__mmask16{0xffff}, _mm_maskz_loadu_epi8(in_row, mask + j));
      seen &= _mm512_test_epi32_mask(bytes, bytes);
    }
    const __m512 x = _mm512_mask_mul_ps(minus_inf, seen, _mm512_loadu_ps(s + j), factor);
    _mm512_storeu_ps(s + j, x);
    max16 = _mm512_max_ps(max16, x);
  }
  const float max = _mm512_reduce_max_ps(max16);
  *max_out = max;
  if (max == -std::numeric_limits<float>::infinity()) {
    std::fill(s, s + round_up(n, kKeys), 0.0f);
    return 0.0f;
  }
  const __m512 max_all = _mm512_set1_ps(max);
  __m512 sum16 = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += kKeys) {
    const __m512 x = _mm512_loadu_ps(s + j);
    const __mmask16 seen = _mm512_cmp_ps_mask(x, minus_inf, _CMP_NEQ_OQ);
    const __m512 p = _mm512_maskz_mov_ps(seen, exp_nonpositive(_mm512_sub_ps(x, max_all)));
    _mm512_storeu_ps(s + j, p);
    sum16 = _mm512_add_ps(sum16, p);
  }
  return _mm512_reduce_add_ps(sum16);
}

// A row of fp32 numerators as bf16 bits, in blocks of 16 (AVX512-BF16's rounding: to nearest even).
LLM4DSR_AVX512_BF16 void row_to_bf16(const float* s, int64_t n, uint16_t* out) {
  for (int64_t j = 0; j < n; j += kKeys)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s + j)));
}

// out[d] = acc[d] * factor for a width that is a multiple of 16, fp32 or bf16.
LLM4DSR_AVX512 void store_scaled(const float* acc, int64_t width, float factor, float* out) {
  for (int64_t d = 0; d < width; d += 16)
    _mm512_storeu_ps(out + d, _mm512_mul_ps(_mm512_loadu_ps(acc + d), _mm512_set1_ps(factor)));
}

LLM4DSR_AVX512_BF16 void store_scaled(const float* acc, int64_t width, float factor, uint16_t* out) {
  for (int64_t d = 0; d < width; d += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + d),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(acc + d), _mm512_set1_ps(factor))));
}

// acc[r][0 .. 16 * NZ) = sum over keys j < n of p[r * ld + j] * v_j[d0 ..], fp32.
template <int NZ>
LLM4DSR_AVX512 void weighted_values_fp32(const float* p, int64_t ld, const float* v, int64_t v_stride, int64_t n,
                                         float* acc_out) {
  __m512 acc[kRows][NZ];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m512 vz[NZ];
    for (int c = 0; c < NZ; ++c) vz[c] = _mm512_loadu_ps(v + j * v_stride + c * 16);
    for (int64_t r = 0; r < kRows; ++r) {
      const __m512 pr = _mm512_set1_ps(p[r * ld + j]);
      for (int c = 0; c < NZ; ++c) acc[r][c] = _mm512_fmadd_ps(pr, vz[c], acc[r][c]);
    }
  }
  for (int64_t r = 0; r < kRows; ++r)
    for (int c = 0; c < NZ; ++c) _mm512_storeu_ps(acc_out + (r * NZ + c) * 16, acc[r][c]);
}

// The same with bf16 P (bits, [kRows][ld], zero past n) and vp = V in key pairs [keys / 2][D][2]
// starting at column d0: n rounded up to even keys.
template <int NZ>
LLM4DSR_AVX512_BF16 void weighted_values_bf16(const uint16_t* p, int64_t ld, const uint16_t* vp, int64_t D,
                                              int64_t n, float* acc_out) {
  __m512 acc[kRows][NZ];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    __m512bh vz[NZ];
    for (int c = 0; c < NZ; ++c) vz[c] = (__m512bh)_mm512_loadu_si512(vp + (i * D + c * 16) * 2);
    for (int64_t r = 0; r < kRows; ++r) {
      int32_t pair;
      std::memcpy(&pair, p + r * ld + 2 * i, sizeof pair);
      const auto pr = (__m512bh)_mm512_set1_epi32(pair);
      for (int c = 0; c < NZ; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pr, vz[c]);
    }
  }
  for (int64_t r = 0; r < kRows; ++r)
    for (int c = 0; c < NZ; ++c) _mm512_storeu_ps(acc_out + (r * NZ + c) * 16, acc[r][c]);
}

template <typename Scalar>
struct Operand {
  const Scalar* data;
  int64_t s0, s1, s2;  // strides of dims 0, 1, 2 (dim 3 is contiguous)
  const Scalar* row(int64_t a, int64_t b, int64_t c) const { return data + a * s0 + b * s1 + c * s2; }
};

template <typename Scalar>
Operand<Scalar> operand(const torch::Tensor& t) {
  return {elements<Scalar>(t), t.stride(0), t.stride(1), t.stride(2)};
}

// Scalar = float (fp32) or uint16_t (bf16 bits).
template <typename Scalar>
torch::Tensor attention(const torch::Tensor& q_t, const torch::Tensor& k_t, const torch::Tensor& v_t,
                        const torch::Tensor& mask_t, bool is_causal, double scale, torch::Tensor* log_sum_exp,
                        const torch::Tensor& query_rows_t) {
  constexpr bool kBf16 = std::is_same_v<Scalar, uint16_t>;
  // Packed queries: q's row of query (b, t) is query_rows[b][t] (-1: no query there), as is out's.
  const int64_t* query_rows = query_rows_t.defined() ? query_rows_t.data_ptr<int64_t>() : nullptr;
  const int64_t B = k_t.size(0), H = q_t.size(1), Tq = query_rows ? query_rows_t.size(1) : q_t.size(2), D = q_t.size(3);
  const int64_t out_rows = query_rows ? q_t.size(2) : B * Tq;  // out is [out_rows, H, D]
  const int64_t KV = k_t.size(1), Tk = k_t.size(2), G = H / KV;
  const int64_t ld = round_up(Tk, kKeys);  // score row width, and the packed keys' row width
  const Operand<Scalar> q = operand<Scalar>(q_t), k = operand<Scalar>(k_t), v = operand<Scalar>(v_t);
  const torch::Tensor mask = mask_t.defined() ? mask_t.contiguous() : mask_t;
  const bool* mask_ptr = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  const int64_t mask_batch = mask.defined() && mask.size(0) > 1 ? Tq * Tk : 0;

  // Per (sequence, KV head): K^T [D][ld] (bf16: [D / 2][ld][2]), whose columns past Tk only make
  // scores that are never read; bf16 also V in key pairs [ld / 2][D][2], of which P V reads the pairs
  // up to the one holding key Tk - 1, so for an odd Tk that pair's second slots are zeroed (0 times
  // uninitialised bits could be NaN). The fp32 values are read in place. Zeroing the whole buffer
  // instead was 1% of exact scoring.
  const int64_t key_size = D * ld, value_size = kBf16 ? ld * D : 0;
  torch::Tensor packed = torch::empty({B * KV, key_size + value_size}, q_t.options());
  Scalar* packed_ptr = elements<Scalar>(packed);
  at::parallel_for(0, B * KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t b = pair / KV, kv = pair % KV;
      Scalar* kt = packed_ptr + pair * (key_size + value_size);
      if (kBf16 && Tk % 2) {
        Scalar* partner = kt + key_size + (Tk / 2) * D * 2 + 1;
        for (int64_t d = 0; d < D; ++d) partner[d * 2] = 0;
      }
      for (int64_t j = 0; j < Tk; ++j) {
        const Scalar* key = k.row(b, kv, j);
        if constexpr (kBf16) {
          const Scalar* value = v.row(b, kv, j);
          Scalar* vp = kt + key_size + (j / 2) * D * 2 + (j % 2);
          for (int64_t d = 0; d < D; ++d) {
            kt[((d / 2) * ld + j) * 2 + (d % 2)] = key[d];
            vp[d * 2] = value[d];
          }
        } else {
          for (int64_t d = 0; d < D; ++d) kt[d * ld + j] = key[d];
        }
      }
    }
  });

  torch::Tensor out = torch::empty({out_rows, H, D}, q_t.options());
  Scalar* out_ptr = elements<Scalar>(out);
  float* lse_ptr = nullptr;
  if (log_sum_exp) {
    *log_sum_exp = torch::empty({B, H, Tq}, q_t.options().dtype(torch::kFloat32));
    lse_ptr = log_sum_exp->data_ptr<float>();
  }
  const int64_t row_blocks = (Tq + kRows - 1) / kRows;
  const float fscale = static_cast<float>(scale);
  at::parallel_for(0, B * H * row_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(kRows * ld));
    std::vector<uint16_t> p_bits(kBf16 ? static_cast<size_t>(kRows * ld) : 0);
    std::vector<float> acc(static_cast<size_t>(kRows * 64));
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / (H * row_blocks), h = (unit / row_blocks) % H, t0 = (unit % row_blocks) * kRows;
      const int64_t rows = std::min(kRows, Tq - t0);
      const int64_t pair = b * KV + h / G;
      const Scalar* kt = packed_ptr + pair * (key_size + value_size);
      // Each row's index into q and out, -1 for none (past Tq, or a packed batch's pad); a missing
      // row computes scores from a present one's query and is not stored.
      int64_t row_index[kRows];
      int64_t present = -1;
      for (int64_t r = 0; r < kRows; ++r) {
        row_index[r] = r >= rows ? -1 : query_rows ? query_rows[b * Tq + t0 + r] : b * Tq + t0 + r;
        if (row_index[r] >= 0 && present < 0) present = row_index[r];
      }
      if (present < 0) continue;
      const Scalar* q_rows[kRows];
      for (int64_t r = 0; r < kRows; ++r)
        q_rows[r] = query_rows ? q.row(0, h, row_index[r] >= 0 ? row_index[r] : present)
                               : q.row(b, h, t0 + std::min(r, rows - 1));
      // Keys this block can see: up to its last row under causality.
      const int64_t n = is_causal ? std::min(Tk, t0 + rows) : Tk;
      const int64_t key_blocks = (n + kKeys - 1) / kKeys;
      if constexpr (kBf16) scores_bf16(q_rows, kt, D, ld, key_blocks, scores.data());
      else scores_fp32(q_rows, kt, D, ld, key_blocks, scores.data());
      float inverse[kRows] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t r = 0; r < kRows; ++r) {
        float* s = scores.data() + r * ld;
        if (row_index[r] < 0) {
          std::fill(s, s + round_up(n, kKeys), 0.0f);
        } else {
          const int64_t t = t0 + r;
          const bool* mask_row = mask_ptr ? mask_ptr + b * mask_batch + t * Tk : nullptr;
          float max = 0.0f;
          const float sum = softmax_numerators(s, n, is_causal ? t + 1 : n, mask_row, fscale, &max);
          inverse[r] = sum > 0.0f ? 1.0f / sum : 0.0f;
          if (lse_ptr) lse_ptr[(b * H + h) * Tq + t] = sum > 0.0f ? max + std::log(sum) : max;
        }
        if constexpr (kBf16) row_to_bf16(s, n, p_bits.data() + r * ld);  // zeros past n up to the block's end
      }
      for (int64_t d0 = 0; d0 < D; d0 += 64) {
        const int nz = static_cast<int>(std::min<int64_t>(4, (D - d0) / 16));
        if constexpr (kBf16) {
          const uint16_t* vp = kt + key_size + d0 * 2;
          switch (nz) {
            case 4: weighted_values_bf16<4>(p_bits.data(), ld, vp, D, n, acc.data()); break;
            case 3: weighted_values_bf16<3>(p_bits.data(), ld, vp, D, n, acc.data()); break;
            case 2: weighted_values_bf16<2>(p_bits.data(), ld, vp, D, n, acc.data()); break;
            default: weighted_values_bf16<1>(p_bits.data(), ld, vp, D, n, acc.data()); break;
          }
        } else {
          const float* v0 = v.row(b, h / G, 0) + d0;
          switch (nz) {
            case 4: weighted_values_fp32<4>(scores.data(), ld, v0, v.s2, n, acc.data()); break;
            case 3: weighted_values_fp32<3>(scores.data(), ld, v0, v.s2, n, acc.data()); break;
            case 2: weighted_values_fp32<2>(scores.data(), ld, v0, v.s2, n, acc.data()); break;
            default: weighted_values_fp32<1>(scores.data(), ld, v0, v.s2, n, acc.data()); break;
          }
        }
        const int64_t width = nz * 16;
        for (int64_t r = 0; r < rows; ++r)
          if (row_index[r] >= 0) store_scaled(acc.data() + r * width, width, inverse[r], out_ptr + (row_index[r] * H + h) * D + d0);
      }
    }
  });
  return query_rows ? out.view({1, out_rows, H * D}) : out.view({B, Tq, H * D});
}

}  // namespace

bool cpu_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& mask, const torch::Tensor& query_rows) {
  const auto dtype = q.scalar_type();
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16) return false;
  for (const auto* t : {&q, &k, &v})
    if (!t->device().is_cpu() || t->scalar_type() != dtype || t->dim() != 4 || t->stride(3) != 1) return false;
  const int64_t B = k.size(0), H = q.size(1), D = q.size(3), KV = k.size(1), Tk = k.size(2);
  int64_t Tq = q.size(2);
  if (query_rows.defined()) {
    if (!query_rows.device().is_cpu() || query_rows.scalar_type() != torch::kInt64 || query_rows.dim() != 2 ||
        query_rows.size(0) != B || !query_rows.is_contiguous() || q.size(0) != 1)
      return false;
    Tq = query_rows.size(1);
  } else if (q.size(0) != B) {
    return false;
  }
  if (k.sizes() != v.sizes() || k.size(3) != D || KV == 0 || H % KV != 0 || Tq == 0 || Tk == 0 ||
      D % 16 != 0 || D > kMaxHeadDim)
    return false;
  if (mask.defined() && (mask.scalar_type() != torch::kBool || mask.dim() != 4 || !mask.device().is_cpu() ||
                         (mask.size(0) != 1 && mask.size(0) != B) || mask.size(1) != 1 || mask.size(2) != Tq ||
                         mask.size(3) != Tk))
    return false;
  static const bool avx512 = detail::cpu_has("avx512_f");
  static const bool avx512_bf16 = avx512 && detail::cpu_has("avx512_bf16");
  return dtype == torch::kBFloat16 ? avx512_bf16 : avx512;
}

bool cpu_attention_preferred(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) {
    static const bool yes = detail::cpu_has("avx512_bf16") && !detail::cpu_has("amx_bf16");
    return yes;
  }
  if (dtype == torch::kFloat32) return detail::non_intel_avx512_cpu();
  return false;
}

torch::Tensor cpu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& mask, bool is_causal, double scale, torch::Tensor* log_sum_exp,
                            const torch::Tensor& query_rows) {
  LLM4DSR_CHECK(cpu_attention_applies(q, k, v, mask, query_rows),
                "cpu_attention: q " << q.sizes() << " " << q.scalar_type() << ", k " << k.sizes() << ", v " << v.sizes()
                                    << (mask.defined() ? ", a mask" : "")
                                    << (query_rows.defined() ? ", query rows" : "")
                                    << ": needs fp32 or bf16 CPU [B, H, Tq, D] (packed: [1, H, N, D] with int64 "
                                       "query rows [B, Tq]) and [B, KV, Tk, D], D a multiple of 16, a bool mask "
                                       "[B or 1, 1, Tq, Tk], and AVX-512");
  LLM4DSR_CHECK(!(query_rows.defined() && log_sum_exp), "cpu_attention: no log-sum-exp for packed queries");
  torch::NoGradGuard no_grad;
  if (q.scalar_type() == torch::kBFloat16)
    return attention<uint16_t>(q, k, v, mask, is_causal, scale, log_sum_exp, query_rows);
  return attention<float>(q, k, v, mask, is_causal, scale, log_sum_exp, query_rows);
}

}  // namespace llm4dsr::internal
