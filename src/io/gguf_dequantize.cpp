// ggml tensor types: block sizes, names, and dequantisation to fp32.
//
// Block layouts and arithmetic follow ggml's dequantize_row_* and gguf-py's quants.py, operation for
// operation, so that results are bit-identical to gguf.quants.dequantize: every product and sum is
// rounded to float32 separately (e.g. Q4_K computes d*sc and dmin*m first, then (d*sc)*q - dmin*m).
// That is why floating-point contraction is switched off below: an FMA would skip a rounding and
// change the last bit whenever the compiler targets a CPU with FMA (-march=native).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace llm4dsr::io {

namespace {

struct TypeTraits {
  GGMLType type;
  const char* name;
  int64_t block_size;
  int64_t type_size;
};

constexpr int64_t QK_K = 256;

// As gguf-py's GGML_QUANT_SIZES.
constexpr TypeTraits kTypes[] = {
    {GGMLType::F32, "F32", 1, 4},
    {GGMLType::F16, "F16", 1, 2},
    {GGMLType::Q4_0, "Q4_0", 32, 2 + 16},
    {GGMLType::Q4_1, "Q4_1", 32, 2 + 2 + 16},
    {GGMLType::Q5_0, "Q5_0", 32, 2 + 4 + 16},
    {GGMLType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
    {GGMLType::Q8_0, "Q8_0", 32, 2 + 32},
    {GGMLType::Q8_1, "Q8_1", 32, 4 + 4 + 32},
    {GGMLType::Q2_K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4},
    {GGMLType::Q3_K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12},
    {GGMLType::Q4_K, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12},
    {GGMLType::Q5_K, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12},
    {GGMLType::Q6_K, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16},
    {GGMLType::Q8_K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8},
    {GGMLType::IQ2_XXS, "IQ2_XXS", QK_K, 2 + QK_K / 4},
    {GGMLType::IQ2_XS, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32},
    {GGMLType::IQ3_XXS, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8},
    {GGMLType::IQ1_S, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16},
    {GGMLType::IQ4_NL, "IQ4_NL", 32, 2 + 16},
    {GGMLType::IQ3_S, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4},
    {GGMLType::IQ2_S, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16},
    {GGMLType::IQ4_XS, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64},
    {GGMLType::I8, "I8", 1, 1},
    {GGMLType::I16, "I16", 1, 2},
    {GGMLType::I32, "I32", 1, 4},
    {GGMLType::I64, "I64", 1, 8},
    {GGMLType::F64, "F64", 1, 8},
    {GGMLType::IQ1_M, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32},
    {GGMLType::BF16, "BF16", 1, 2},
    {GGMLType::TQ1_0, "TQ1_0", QK_K, 2 + 4 * 13},
    {GGMLType::TQ2_0, "TQ2_0", QK_K, 2 + 64},
    {GGMLType::MXFP4, "MXFP4", 32, 1 + 16},
    {GGMLType::NVFP4, "NVFP4", 64, 4 + 32},
    {GGMLType::Q1_0, "Q1_0", 128, 2 + 16},
};

const TypeTraits* find_type(uint32_t type) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == type) return &t;
  return nullptr;
}

const TypeTraits& traits(GGMLType type) {
  const TypeTraits* t = find_type(static_cast<uint32_t>(type));
  LLM4DSR_CHECK(t, "unknown ggml type " << static_cast<uint32_t>(type));
  return *t;
}

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// Exact IEEE half -> single: subnormals are renormalised, inf stays inf, NaN keeps its sign and
// payload (not quieted), as numpy's float16 -> float32 cast.
inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // mant * 2^-24: shift the leading one up to bit 10, lowering the exponent by as much.
    const int shift = __builtin_clz(mant) - 21;
    mant <<= shift;
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | ((mant & 0x3ffu) << 13);
  }
  return f32_from_bits(bits);
}

inline float load_f16(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

// --- one block each: `x` points at the block's bytes, `y` receives block_size floats ---

void block_q4_0(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const uint8_t* qs = x + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(static_cast<int>(qs[j] & 0x0f) - 8);
    y[j + 16] = d * static_cast<float>(static_cast<int>(qs[j] >> 4) - 8);
  }
}

void block_q4_1(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const float m = load_f16(x + 2);
  const uint8_t* qs = x + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
    y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

void block_q5_0(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const uint32_t qh = load_u32(x + 2);
  const uint8_t* qs = x + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo - 16);
    y[j + 16] = d * static_cast<float>(hi - 16);
  }
}

void block_q5_1(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const float m = load_f16(x + 2);
  const uint32_t qh = load_u32(x + 4);
  const uint8_t* qs = x + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo) + m;
    y[j + 16] = d * static_cast<float>(hi) + m;
  }
}

void block_q8_0(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const auto* qs = reinterpret_cast<const int8_t*>(x + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// Q2_K: scales[16] (low nibble: scale, high nibble: min), qs[64] (2 bits each), d, dmin.
void block_q2_k(const uint8_t* x, float* y) {
  const uint8_t* scales = x;
  const uint8_t* qs = x + 16;
  const float d = load_f16(x + 80);
  const float dmin = load_f16(x + 82);
  for (int e = 0; e < 256; ++e) {
    const int sub = e / 16;
    const float dl = d * static_cast<float>(scales[sub] & 0x0f);
    const float ml = dmin * static_cast<float>(scales[sub] >> 4);
    const int q = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    y[e] = dl * static_cast<float>(q) - ml;
  }
}

// Q3_K: hmask[32], qs[64] (low 2 bits), scales[12] (16 6-bit signed scales), d.
void block_q3_k(const uint8_t* x, float* y) {
  const uint8_t* hmask = x;
  const uint8_t* qs = x + 32;
  const uint8_t* sc = x + 96;
  const float d = load_f16(x + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = (i < 8 ? sc[i] : sc[i - 8] >> 4) & 0x0f;
    const int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    dl[i] = d * static_cast<float>((lo | (hi << 4)) - 32);
  }
  for (int e = 0; e < 256; ++e) {
    const int low = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const int high = (hmask[e % 32] >> (e / 32)) & 1;
    y[e] = dl[e / 16] * static_cast<float>(low - (high ? 0 : 4));
  }
}

// The 8 6-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes (ggml's get_scale_min_k4).
inline void scale_min_k4(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
    sc[j + 4] = static_cast<uint8_t>((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
    mn[j + 4] = static_cast<uint8_t>((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

// Q4_K: d, dmin, scales[12], qs[128].
void block_q4_k(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const float dmin = load_f16(x + 2);
  uint8_t sc[8], mn[8];
  scale_min_k4(x + 4, sc, mn);
  const uint8_t* qs = x + 16;
  for (int sub = 0; sub < 8; ++sub) {
    const float dl = d * static_cast<float>(sc[sub]);
    const float ml = dmin * static_cast<float>(mn[sub]);
    const uint8_t* q = qs + (sub / 2) * 32;
    const int shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l) y[sub * 32 + l] = dl * static_cast<float>((q[l] >> shift) & 0x0f) - ml;
  }
}

// Q5_K: d, dmin, scales[12], qh[32], qs[128].
void block_q5_k(const uint8_t* x, float* y) {
  const float d = load_f16(x);
  const float dmin = load_f16(x + 2);
  uint8_t sc[8], mn[8];
  scale_min_k4(x + 4, sc, mn);
  const uint8_t* qh = x + 16;
  const uint8_t* qs = x + 48;
  for (int sub = 0; sub < 8; ++sub) {
    const float dl = d * static_cast<float>(sc[sub]);
    const float ml = dmin * static_cast<float>(mn[sub]);
    const uint8_t* q = qs + (sub / 2) * 32;
    const int shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> sub) & 1) << 4);
      y[sub * 32 + l] = dl * static_cast<float>(v) - ml;
    }
  }
}

// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d.
void block_q6_k(const uint8_t* x, float* y) {
  const uint8_t* ql = x;
  const uint8_t* qh = x + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(x + 192);
  const float d = load_f16(x + 208);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, r = e % 128;
    const int low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
    const int high = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
    const float dl = d * static_cast<float>(scales[e / 16]);
    y[e] = dl * static_cast<float>((low | (high << 4)) - 32);
  }
}

// Output values per parallel task: a few hundred microseconds of work. Smaller tasks cost more in
// thread wake-ups than they save, and on a busy machine each parallel region can wait a scheduler
// time slice for a descheduled thread, so typical weight matrices (~1M values) run on one thread.
constexpr int64_t kGrainValues = int64_t(1) << 20;

// Runs `kernel` over n_blocks consecutive blocks, in parallel over chunks of blocks.
template <typename Kernel>
void run_blocks(const uint8_t* src, float* dst, int64_t n_blocks, int64_t block_size, int64_t type_size,
                Kernel kernel) {
  const int64_t grain = std::max<int64_t>(1, kGrainValues / block_size);
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) kernel(src + b * type_size, dst + b * block_size);
  });
}

}  // namespace

bool ggml_type_is_known(uint32_t type) { return find_type(type) != nullptr; }

std::string ggml_type_name(GGMLType type) {
  const TypeTraits* t = find_type(static_cast<uint32_t>(type));
  return t ? t->name : "unknown(" + std::to_string(static_cast<uint32_t>(type)) + ")";
}

int64_t ggml_block_size(GGMLType type) { return traits(type).block_size; }
int64_t ggml_type_size(GGMLType type) { return traits(type).type_size; }

bool ggml_can_dequantize(GGMLType type) {
  switch (type) {
    case GGMLType::F32:
    case GGMLType::F16:
    case GGMLType::BF16:
    case GGMLType::Q4_0:
    case GGMLType::Q4_1:
    case GGMLType::Q5_0:
    case GGMLType::Q5_1:
    case GGMLType::Q8_0:
    case GGMLType::Q2_K:
    case GGMLType::Q3_K:
    case GGMLType::Q4_K:
    case GGMLType::Q5_K:
    case GGMLType::Q6_K: return true;
    default: return false;
  }
}

void dequantize_ggml(GGMLType type, const void* src_ptr, int64_t n_elements, float* dst) {
  LLM4DSR_CHECK(ggml_can_dequantize(type), "cannot dequantize ggml type " << ggml_type_name(type)
                                                                          << " (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 "
                                                                             "Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K)");
  const TypeTraits& t = traits(type);
  LLM4DSR_CHECK(n_elements >= 0 && n_elements % t.block_size == 0,
                "dequantize " << t.name << ": " << n_elements << " elements is not a multiple of the block size "
                              << t.block_size);
  const auto* src = static_cast<const uint8_t*>(src_ptr);
  const int64_t n_blocks = n_elements / t.block_size;
  const int64_t bs = t.block_size, ts = t.type_size;
  switch (type) {
    case GGMLType::F32:
      at::parallel_for(0, n_elements, 4 * kGrainValues, [&](int64_t begin, int64_t end) {
        std::memcpy(dst + begin, src + begin * 4, static_cast<size_t>(end - begin) * 4);
      });
      break;
    case GGMLType::F16:
      at::parallel_for(0, n_elements, kGrainValues, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) dst[i] = load_f16(src + 2 * i);
      });
      break;
    case GGMLType::BF16:
      at::parallel_for(0, n_elements, kGrainValues, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) dst[i] = f32_from_bits(static_cast<uint32_t>(load_u16(src + 2 * i)) << 16);
      });
      break;
    case GGMLType::Q4_0: run_blocks(src, dst, n_blocks, bs, ts, block_q4_0); break;
    case GGMLType::Q4_1: run_blocks(src, dst, n_blocks, bs, ts, block_q4_1); break;
    case GGMLType::Q5_0: run_blocks(src, dst, n_blocks, bs, ts, block_q5_0); break;
    case GGMLType::Q5_1: run_blocks(src, dst, n_blocks, bs, ts, block_q5_1); break;
    case GGMLType::Q8_0: run_blocks(src, dst, n_blocks, bs, ts, block_q8_0); break;
    case GGMLType::Q2_K: run_blocks(src, dst, n_blocks, bs, ts, block_q2_k); break;
    case GGMLType::Q3_K: run_blocks(src, dst, n_blocks, bs, ts, block_q3_k); break;
    case GGMLType::Q4_K: run_blocks(src, dst, n_blocks, bs, ts, block_q4_k); break;
    case GGMLType::Q5_K: run_blocks(src, dst, n_blocks, bs, ts, block_q5_k); break;
    case GGMLType::Q6_K: run_blocks(src, dst, n_blocks, bs, ts, block_q6_k); break;
    default: break;  // unreachable: ggml_can_dequantize checked above
  }
}

}  // namespace llm4dsr::io
