// GGUF reader: hand-built v2/v3 files parsed field by field, hand-computed dequantisation of a few
// block types, every class of corruption rejected with llm4dsr::Error naming the file, and a seeded
// fuzz of mutated and truncated files where each outcome is success or llm4dsr::Error.
// (Bit-exact parity of every block type with gguf-py is in tests/python/test_gguf.py.)
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "llm4dsr/error.h"
#include "llm4dsr/io/gguf.h"
#include "llm4dsr/io/gguf_tensor.h"
#include "test_support.h"
#include "torch_catch.h"

using llm4dsr::Error;
using llm4dsr::testing::TempDir;
namespace io = llm4dsr::io;
using io::GGMLType;
using io::GGUFValueType;

namespace {

// Little-endian byte writer for hand-built files.
struct Bytes {
  std::string s;
  Bytes& u8(uint8_t v) { s.push_back(static_cast<char>(v)); return *this; }
  Bytes& u16(uint16_t v) { return uint(v, 2); }
  Bytes& u32(uint32_t v) { return uint(v, 4); }
  Bytes& u64(uint64_t v) { return uint(v, 8); }
  Bytes& f32(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u32(u); }
  Bytes& f64(double f) { uint64_t u; std::memcpy(&u, &f, 8); return u64(u); }
  Bytes& str(const std::string& v) { u64(v.size()); s += v; return *this; }
  Bytes& raw(const std::string& v) { s += v; return *this; }
  Bytes& pad_to(size_t alignment) { while (s.size() % alignment) s.push_back('\0'); return *this; }
  Bytes& uint(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  // A key/value header: key, then the value type.
  Bytes& kv(const std::string& key, GGUFValueType type) { return str(key).u32(static_cast<uint32_t>(type)); }
  Bytes& tensor_info(const std::string& name, std::vector<uint64_t> ne, GGMLType type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (auto n : ne) u64(n);
    return u32(static_cast<uint32_t>(type)).u64(offset);
  }
};

// Q4_K test block: d = 1, dmin = 0.5, scales/mins chosen to exercise the 6-bit packing (see below),
// every quant byte 0x5A (low nibble 10, high nibble 5).
std::string q4_k_block() {
  Bytes b;
  b.u16(0x3c00).u16(0x3800);
  for (int j = 0; j < 4; ++j) b.u8(static_cast<uint8_t>((j + 1) | (1 << 6)));  // sc[j] = j+1, +16 for sc[j+4]
  for (int j = 0; j < 4; ++j) b.u8(static_cast<uint8_t>(j | (2 << 6)));        // mn[j] = j, +32 for mn[j+4]
  for (int j = 0; j < 4; ++j) b.u8(0x32);                                     // sc[j+4] += 2, mn[j+4] += 3
  for (int l = 0; l < 128; ++l) b.u8(0x5a);
  REQUIRE(b.s.size() == 144);
  return b.s;
}

struct ValidFile {
  std::string bytes;
  size_t tensor_info_begin = 0;  // offset of the first tensor info
};

// A small valid file with one key of every value type, custom alignment 64 and four tensors.
ValidFile make_valid(uint32_t version = 3) {
  Bytes b;
  b.u32(0x46554747).u32(version).u64(4).u64(18);
  b.kv("general.architecture", GGUFValueType::STRING).str("llama");
  b.kv("t.u8", GGUFValueType::UINT8).u8(200);
  b.kv("t.i8", GGUFValueType::INT8).u8(0x80);  // -128
  b.kv("t.u16", GGUFValueType::UINT16).u16(65535);
  b.kv("t.i16", GGUFValueType::INT16).u16(0xfffe);  // -2
  b.kv("t.u32", GGUFValueType::UINT32).u32(4000000000u);
  b.kv("t.i32", GGUFValueType::INT32).u32(static_cast<uint32_t>(-123456));
  b.kv("t.f32", GGUFValueType::FLOAT32).f32(1e-5f);
  b.kv("t.bool", GGUFValueType::BOOL).u8(1);
  b.kv("t.u64", GGUFValueType::UINT64).u64(std::numeric_limits<uint64_t>::max());
  b.kv("t.i64", GGUFValueType::INT64).u64(static_cast<uint64_t>(std::numeric_limits<int64_t>::min()));
  b.kv("t.f64", GGUFValueType::FLOAT64).f64(-2.5e300);
  b.kv("t.ints", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::INT32)).u64(3).u32(1).u32(static_cast<uint32_t>(-2)).u32(3);
  b.kv("t.strs", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::STRING)).u64(3).str("a").str("h\xc3\xa9").str("");
  b.kv("t.nested", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::ARRAY)).u64(2);
  b.u32(static_cast<uint32_t>(GGUFValueType::UINT8)).u64(2).u8(1).u8(2);
  b.u32(static_cast<uint32_t>(GGUFValueType::UINT8)).u64(1).u8(3);
  b.kv("t.empty", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::FLOAT32)).u64(0);
  b.kv("t.floats", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::FLOAT32)).u64(2).f32(0.5f).f32(-1.0f);
  b.kv("general.alignment", GGUFValueType::UINT32).u32(64);
  ValidFile v;
  v.tensor_info_begin = b.s.size();
  b.tensor_info("a", {3, 2}, GGMLType::F32, 0);
  b.tensor_info("b", {4}, GGMLType::F16, 64);
  b.tensor_info("q", {32, 2}, GGMLType::Q8_0, 128);
  b.tensor_info("k", {256}, GGMLType::Q4_K, 256);
  b.pad_to(64);
  // a: 0..5
  for (int i = 0; i < 6; ++i) b.f32(static_cast<float>(i) - 2.5f);
  b.pad_to(64);
  // b: 1.0, -2.0, smallest subnormal, +inf
  b.u16(0x3c00).u16(0xc000).u16(0x0001).u16(0x7c00);
  b.pad_to(64);
  // q: two Q8_0 blocks, d = 0.5 and d = -0.25, quants -16..15 and 0..31
  b.u16(0x3800);
  for (int j = 0; j < 32; ++j) b.u8(static_cast<uint8_t>(static_cast<int8_t>(j - 16)));
  b.u16(0xb400);
  for (int j = 0; j < 32; ++j) b.u8(static_cast<uint8_t>(j));
  b.pad_to(64);
  b.raw(q4_k_block());
  v.bytes = b.s;
  return v;
}

// Asserts that opening `contents` throws llm4dsr::Error whose message has `fragment` and the path.
void expect_error(const TempDir& dir, const std::string& contents, const std::string& fragment) {
  const std::string path = dir.write("bad.gguf", contents);
  try {
    io::GGUFFile f(path);
    FAIL("expected llm4dsr::Error containing '" << fragment << "'");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find(fragment) != std::string::npos);
    CHECK(msg.find(path) != std::string::npos);
  }
}

// Header + one tensor info + data, for corruptions of a single tensor.
std::string one_tensor_file(const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset, size_t data_bytes,
                            const std::string& name = "w") {
  Bytes b;
  b.u32(0x46554747).u32(3).u64(1).u64(0);
  b.str(name).u32(static_cast<uint32_t>(ne.size()));
  for (auto n : ne) b.u64(n);
  b.u32(type).u64(offset);
  b.pad_to(32);
  b.raw(std::string(data_bytes, '\0'));
  return b.s;
}

}  // namespace

TEST_CASE("GGUF v3 file: header, every metadata type, tensor infos", "[gguf]") {
  TempDir dir;
  const std::string path = dir.write("m.gguf", make_valid(3).bytes);
  io::GGUFFile f(path);
  CHECK(f.path() == path);
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.data_offset() % 64 == 0);
  CHECK(f.keys().size() == 18);
  CHECK(f.keys().front() == "general.architecture");
  CHECK(f.keys().back() == "general.alignment");
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_int("t.u8") == 200);
  CHECK(f.get_int("t.i8") == -128);
  CHECK(f.get_int("t.u16") == 65535);
  CHECK(f.get_int("t.i16") == -2);
  CHECK(f.get_int("t.u32") == 4000000000LL);
  CHECK(f.get_int("t.i32") == -123456);
  CHECK(f.get_float("t.f32") == static_cast<double>(1e-5f));
  CHECK(f.get_bool("t.bool"));
  CHECK(f.value("t.u64").uint_value == std::numeric_limits<uint64_t>::max());
  CHECK(f.get_int("t.i64") == std::numeric_limits<int64_t>::min());
  CHECK(f.get_float("t.f64") == -2.5e300);
  CHECK(f.get_float("t.u32") == 4e9);  // integers widen to double
  CHECK(f.get_int_array("t.ints") == std::vector<int64_t>{1, -2, 3});
  CHECK(f.get_string_array("t.strs") == std::vector<std::string>{"a", "h\xc3\xa9", ""});
  CHECK(f.get_float_array("t.floats") == std::vector<double>{0.5, -1.0});
  CHECK(f.get_float_array("t.empty").empty());
  CHECK(f.get_float_array("t.ints") == std::vector<double>{1, -2, 3});
  const io::GGUFValue& nested = f.value("t.nested");
  CHECK(nested.type_description() == "ARRAY[ARRAY[UINT8]]");
  REQUIRE(nested.items.size() == 2);
  CHECK(nested.items[0].items.size() == 2);
  CHECK(nested.items[0].items[1].uint_value == 2);
  CHECK(nested.items[1].items[0].uint_value == 3);
  CHECK(f.value("t.empty").type_description() == "ARRAY[FLOAT32]");
  CHECK(f.value("t.u8").type == GGUFValueType::UINT8);
  // Fallbacks apply to absent keys only.
  CHECK(f.get_int("absent", 7) == 7);
  CHECK(f.get_int("t.u8", 7) == 200);
  CHECK(f.get_string("absent", "x") == "x");
  CHECK(f.get_float("absent", 0.25) == 0.25);
  CHECK(f.get_bool("absent", true));
  CHECK(f.has("t.u8"));
  CHECK_FALSE(f.has("t.u9"));

  REQUIRE(f.tensor_names() == std::vector<std::string>{"a", "b", "q", "k"});
  const auto& a = f.tensor("a");
  CHECK(a.ne == std::vector<int64_t>{3, 2});
  CHECK(a.shape == std::vector<int64_t>{2, 3});
  CHECK(a.type == GGMLType::F32);
  CHECK(a.type_name() == "F32");
  CHECK(a.n_elements == 6);
  CHECK(a.n_bytes == 24);
  CHECK(a.file_offset == f.data_offset());
  CHECK(f.tensor("q").n_bytes == 68);
  CHECK(f.tensor("q").offset == 128);
  CHECK(f.tensor("q").file_offset == f.data_offset() + 128);
  CHECK(f.tensor("k").n_bytes == 144);
  CHECK(f.tensor("k").file_offset + 144 == f.file_size());
  CHECK(f.has_tensor("k"));
  CHECK_FALSE(f.has_tensor("z"));

  CHECK(f.dequantize("a") == std::vector<float>{-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f});
  const auto b = f.dequantize("b");
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == -2.0f);
  CHECK(b[2] == std::ldexp(1.0f, -24));
  CHECK(std::isinf(b[3]));
  CHECK(b[3] > 0);
  const auto q = f.dequantize("q");
  for (int j = 0; j < 32; ++j) {
    CHECK(q[j] == static_cast<float>(j - 16) * 0.5f);
    CHECK(q[32 + j] == static_cast<float>(j) * -0.25f);
  }
  // Q4_K by hand: sub-block s uses scale sc[s] and min mn[s] and quants 10 (even s) or 5 (odd s).
  const float sc[8] = {1, 2, 3, 4, 18, 18, 18, 18};
  const float mn[8] = {0, 1, 2, 3, 35, 35, 35, 35};
  const auto k = f.dequantize("k");
  for (int s = 0; s < 8; ++s) {
    const float dl = 1.0f * sc[s], ml = 0.5f * mn[s];
    const float expected = dl * (s % 2 ? 5.0f : 10.0f) - ml;
    for (int l = 0; l < 32; ++l) CHECK(k[s * 32 + l] == expected);
  }

  // The torch helper: row-major shape and the same values, converted on request.
  torch::Tensor t = io::gguf_tensor(f, "a");
  CHECK(t.sizes().vec() == std::vector<int64_t>{2, 3});
  CHECK(t.scalar_type() == torch::kFloat32);
  CHECK(t[1][2].item<float>() == 2.5f);
  torch::Tensor tb = io::gguf_tensor(f, "q", torch::kBFloat16);
  CHECK(tb.scalar_type() == torch::kBFloat16);
  CHECK(tb.sizes().vec() == std::vector<int64_t>{2, 32});
  CHECK(tb[1][4].item<float>() == -1.0f);
  CHECK_THROWS_AS(io::gguf_tensor(f, "a", torch::kInt64), Error);

  // Copies share the mapping and outlive the original.
  io::GGUFFile copy = f;
  { io::GGUFFile moved = std::move(f); }
  CHECK(copy.dequantize("a")[5] == 2.5f);
}

TEST_CASE("GGUF v2 file parses like v3", "[gguf]") {
  TempDir dir;
  io::GGUFFile f(dir.write("v2.gguf", make_valid(2).bytes));
  CHECK(f.version() == 2);
  CHECK(f.get_string_array("t.strs").size() == 3);
  CHECK(f.dequantize("q")[1] == -7.5f);
}

TEST_CASE("GGUF default alignment is 32 and a tensor-less file is valid", "[gguf]") {
  TempDir dir;
  Bytes b;
  b.u32(0x46554747).u32(3).u64(1).u64(1);
  b.kv("general.architecture", GGUFValueType::STRING).str("llama");
  b.tensor_info("x", {2}, GGMLType::F32, 0);
  b.pad_to(32).f32(1.0f).f32(2.0f);
  io::GGUFFile f(dir.write("a.gguf", b.s));
  CHECK(f.alignment() == 32);
  CHECK(f.data_offset() % 32 == 0);
  CHECK(f.dequantize("x") == std::vector<float>{1.0f, 2.0f});

  Bytes e;
  e.u32(0x46554747).u32(3).u64(0).u64(0);
  io::GGUFFile empty(dir.write("e.gguf", e.s));
  CHECK(empty.tensors().empty());
  CHECK(empty.keys().empty());
}

TEST_CASE("GGUF typed getters name the key and both types", "[gguf]") {
  TempDir dir;
  const std::string path = dir.write("m.gguf", make_valid().bytes);
  io::GGUFFile f(path);
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  std::string m = message([&] { f.get_int("general.architecture"); });
  CHECK(m.find("'general.architecture'") != std::string::npos);
  CHECK(m.find("expected an integer, found STRING") != std::string::npos);
  CHECK(m.find(path) != std::string::npos);
  m = message([&] { f.get_string("t.ints"); });
  CHECK(m.find("expected STRING, found ARRAY[INT32]") != std::string::npos);
  m = message([&] { f.get_string_array("t.ints"); });
  CHECK(m.find("expected ARRAY[STRING], found ARRAY[INT32]") != std::string::npos);
  m = message([&] { f.get_int_array("t.strs"); });
  CHECK(m.find("found ARRAY[STRING]") != std::string::npos);
  m = message([&] { f.get_int_array("t.nested"); });
  CHECK(m.find("found ARRAY[ARRAY[UINT8]]") != std::string::npos);
  m = message([&] { f.get_bool("t.u8"); });
  CHECK(m.find("expected BOOL, found UINT8") != std::string::npos);
  m = message([&] { f.get_float("t.bool"); });
  CHECK(m.find("found BOOL") != std::string::npos);
  m = message([&] { f.get_int("t.u64"); });
  CHECK(m.find("does not fit in int64") != std::string::npos);
  m = message([&] { f.get_string("missing.key"); });
  CHECK(m.find("has no metadata key 'missing.key'") != std::string::npos);
  m = message([&] { f.value("missing.key"); });
  CHECK(m.find("missing.key") != std::string::npos);
  m = message([&] { f.tensor("nope"); });
  CHECK(m.find("has no tensor 'nope'") != std::string::npos);
  m = message([&] { f.dequantize("nope"); });
  CHECK(m.find("has no tensor 'nope'") != std::string::npos);
}

TEST_CASE("GGUF dequantisation by hand: legacy blocks and fp16 conversion", "[gguf]") {
  SECTION("Q4_0 and Q4_1") {
    Bytes b;
    b.u16(0x3c00);  // d = 1
    for (int j = 0; j < 16; ++j) b.u8(static_cast<uint8_t>(j | ((15 - j) << 4)));
    std::vector<float> y(32);
    io::dequantize_ggml(GGMLType::Q4_0, b.s.data(), 32, y.data());
    for (int j = 0; j < 16; ++j) {
      CHECK(y[j] == static_cast<float>(j - 8));
      CHECK(y[j + 16] == static_cast<float>(7 - j));
    }
    Bytes c;
    c.u16(0x3800).u16(0xbc00);  // d = 0.5, m = -1
    for (int j = 0; j < 16; ++j) c.u8(static_cast<uint8_t>(j | ((15 - j) << 4)));
    io::dequantize_ggml(GGMLType::Q4_1, c.s.data(), 32, y.data());
    for (int j = 0; j < 16; ++j) {
      CHECK(y[j] == 0.5f * j - 1.0f);
      CHECK(y[j + 16] == 0.5f * (15 - j) - 1.0f);
    }
  }
  SECTION("Q5_0 and Q5_1 take the fifth bit from qh") {
    Bytes b;
    b.u16(0x4000);            // d = 2
    b.u32(0xAAAA5555u);       // element i has high bit (qh >> i) & 1
    for (int j = 0; j < 16; ++j) b.u8(static_cast<uint8_t>(3 | (12 << 4)));
    std::vector<float> y(32);
    io::dequantize_ggml(GGMLType::Q5_0, b.s.data(), 32, y.data());
    for (int i = 0; i < 32; ++i) {
      const int low = i < 16 ? 3 : 12;
      const int high = (0xAAAA5555u >> i) & 1;
      CHECK(y[i] == 2.0f * static_cast<float>((low | (high << 4)) - 16));
    }
    Bytes c;
    c.u16(0x3400).u16(0x4200);  // d = 0.25, m = 3
    c.u32(0xF0F0F0F0u);
    for (int j = 0; j < 16; ++j) c.u8(static_cast<uint8_t>(j | (j << 4)));
    io::dequantize_ggml(GGMLType::Q5_1, c.s.data(), 32, y.data());
    for (int i = 0; i < 32; ++i) {
      const int q = (i % 16) | (((0xF0F0F0F0u >> i) & 1) << 4);
      CHECK(y[i] == 0.25f * static_cast<float>(q) + 3.0f);
    }
  }
  SECTION("every fp16 bit pattern converts exactly") {
    std::vector<uint16_t> h(65536);
    for (uint32_t i = 0; i < 65536; ++i) h[i] = static_cast<uint16_t>(i);
    std::vector<float> y(65536);
    io::dequantize_ggml(GGMLType::F16, h.data(), 65536, y.data());
    for (uint32_t i = 0; i < 65536; ++i) {
      const int sign = (i >> 15) ? -1 : 1;
      const int exp = (i >> 10) & 31;
      const int mant = i & 1023;
      uint32_t bits;
      std::memcpy(&bits, &y[i], 4);
      if (exp == 31) {
        // inf / NaN: all-ones exponent, payload shifted up, sign kept, NaNs not quieted
        CHECK(bits == (((i >> 15) << 31) | 0x7f800000u | (static_cast<uint32_t>(mant) << 13)));
      } else {
        const double expected = sign * (exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25));
        if (static_cast<double>(y[i]) != expected || std::signbit(y[i]) != (sign < 0)) {
          FAIL("fp16 0x" << std::hex << i << " -> " << y[i]);
        }
      }
    }
  }
  SECTION("BF16 is the upper half of fp32") {
    const float values[] = {1.0f, -3.5f, 1e-40f, std::numeric_limits<float>::infinity()};
    std::vector<uint16_t> h;
    for (float v : values) {
      uint32_t u;
      std::memcpy(&u, &v, 4);
      h.push_back(static_cast<uint16_t>(u >> 16));
    }
    std::vector<float> y(4);
    io::dequantize_ggml(GGMLType::BF16, h.data(), 4, y.data());
    CHECK(y[0] == 1.0f);
    CHECK(y[1] == -3.5f);
    uint32_t u;
    std::memcpy(&u, &y[2], 4);
    CHECK(u == (static_cast<uint32_t>(h[2]) << 16));
    CHECK(std::isinf(y[3]));
  }
  SECTION("unsupported types and partial blocks are errors") {
    std::vector<float> y(32);
    std::string block(18, '\0');
    try {
      io::dequantize_ggml(GGMLType::IQ4_NL, block.data(), 32, y.data());
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("IQ4_NL") != std::string::npos);
    }
    CHECK_THROWS_AS(io::dequantize_ggml(GGMLType::Q4_0, block.data(), 31, y.data()), Error);
    CHECK(io::ggml_block_size(GGMLType::Q6_K) == 256);
    CHECK(io::ggml_type_size(GGMLType::Q6_K) == 210);
    CHECK(io::ggml_type_name(GGMLType::Q3_K) == "Q3_K");
    CHECK(io::ggml_type_name(static_cast<GGMLType>(4)) == "unknown(4)");
    CHECK_FALSE(io::ggml_type_is_known(4));
    CHECK_THROWS_AS(io::ggml_block_size(static_cast<GGMLType>(4)), Error);
  }
}

TEST_CASE("GGUF tensor of a type we cannot dequantize parses, and dequantize names it", "[gguf]") {
  TempDir dir;
  io::GGUFFile f(dir.write("iq.gguf", one_tensor_file({32}, static_cast<uint32_t>(GGMLType::IQ4_NL), 0, 18, "iq")));
  CHECK(f.tensor("iq").type_name() == "IQ4_NL");
  CHECK(f.tensor("iq").n_bytes == 18);
  try {
    f.dequantize("iq");
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("IQ4_NL") != std::string::npos);
    CHECK(m.find("'iq'") != std::string::npos);
  }
}

TEST_CASE("GGUF corrupt headers raise llm4dsr::Error", "[gguf]") {
  TempDir dir;
  const ValidFile valid = make_valid();
  expect_error(dir, "", "empty");
  expect_error(dir, "GG", "truncated");
  expect_error(dir, "GGUX" + valid.bytes.substr(4), "bad magic");
  auto with_u32 = [&](size_t at, uint32_t v) {
    std::string s = valid.bytes;
    for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  };
  auto with_u64 = [&](size_t at, uint64_t v) {
    std::string s = valid.bytes;
    for (int i = 0; i < 8; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  };
  expect_error(dir, with_u32(4, 4), "unsupported GGUF version 4");
  expect_error(dir, with_u32(4, 0), "unsupported GGUF version 0");
  expect_error(dir, with_u32(4, 1), "version 1");
  expect_error(dir, with_u32(4, 0x03000000), "big-endian");
  expect_error(dir, with_u64(8, uint64_t(1) << 62), "tensor count");
  expect_error(dir, with_u64(8, 1000), "tensor count 1000 cannot fit");
  expect_error(dir, with_u64(16, std::numeric_limits<uint64_t>::max()), "metadata count");
  expect_error(dir, with_u64(24, uint64_t(1) << 62), "truncated");  // key length of the first key
  // The first value type follows the 8-byte length and the 20-byte key "general.architecture".
  expect_error(dir, with_u32(24 + 8 + 20, 13), "unknown value type 13");
  expect_error(dir, with_u32(24 + 8 + 20, 0xffffffffu), "unknown value type");
  // The string value's length.
  expect_error(dir, with_u64(24 + 8 + 20 + 4, uint64_t(1) << 40), "truncated");
  expect_error(dir, with_u64(24 + 8 + 20 + 4, std::numeric_limits<uint64_t>::max()), "truncated");
}

TEST_CASE("GGUF corrupt metadata values raise llm4dsr::Error", "[gguf]") {
  TempDir dir;
  auto file_with = [](const std::function<void(Bytes&)>& kvs, uint64_t n_kv) {
    Bytes b;
    b.u32(0x46554747).u32(3).u64(0).u64(n_kv);
    kvs(b);
    return b.s;
  };
  expect_error(dir, file_with([](Bytes& b) { b.kv("x", GGUFValueType::BOOL).u8(2); }, 1), "BOOL byte");
  expect_error(dir,
               file_with([](Bytes& b) { b.kv("x", GGUFValueType::ARRAY).u32(99).u64(1).u8(0); }, 1),
               "unknown array element type 99");
  expect_error(dir,
               file_with([](Bytes& b) {
                 b.kv("x", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::UINT64)).u64(uint64_t(1) << 61);
               }, 1),
               "array of 2305843009213693952 UINT64");
  expect_error(dir,
               file_with([](Bytes& b) {
                 b.kv("x", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::STRING)).u64(1000).str("a");
               }, 1),
               "array of 1000 STRING");
  expect_error(dir,
               file_with([](Bytes& b) {
                 b.kv("x", GGUFValueType::ARRAY).u32(static_cast<uint32_t>(GGUFValueType::STRING)).u64(1).u64(99).raw("ab");
               }, 1),
               "truncated");
  // Nesting deeper than the limit (each level: ARRAY of 1 ARRAY).
  expect_error(dir,
               file_with([](Bytes& b) {
                 b.kv("deep", GGUFValueType::ARRAY);
                 for (int i = 0; i < 40; ++i) b.u32(static_cast<uint32_t>(GGUFValueType::ARRAY)).u64(1);
                 b.u32(0).u64(0);
               }, 1),
               "nested deeper");
  expect_error(dir,
               file_with([](Bytes& b) {
                 b.kv("k", GGUFValueType::UINT8).u8(1);
                 b.kv("k", GGUFValueType::UINT8).u8(2);
               }, 2),
               "'k': duplicate key");
  expect_error(dir, file_with([](Bytes& b) { b.kv("general.alignment", GGUFValueType::UINT32).u32(0); }, 1),
               "power of two, found 0");
  expect_error(dir, file_with([](Bytes& b) { b.kv("general.alignment", GGUFValueType::UINT32).u32(48); }, 1),
               "power of two, found 48");
  expect_error(dir, file_with([](Bytes& b) { b.kv("general.alignment", GGUFValueType::UINT64).u64(32); }, 1),
               "expected UINT32, found UINT64");
  expect_error(dir, file_with([](Bytes& b) { b.kv("x", GGUFValueType::FLOAT64).u32(0); }, 1), "truncated");
}

TEST_CASE("GGUF corrupt tensor infos raise llm4dsr::Error", "[gguf]") {
  TempDir dir;
  const uint32_t f32 = static_cast<uint32_t>(GGMLType::F32);
  const uint32_t q8 = static_cast<uint32_t>(GGMLType::Q8_0);
  // The reference: a valid single-tensor file.
  CHECK_NOTHROW(io::GGUFFile(dir.write("ok.gguf", one_tensor_file({4, 2}, f32, 0, 32))));
  expect_error(dir, one_tensor_file({4, 2}, f32, 0, 31), "runs past the end");
  expect_error(dir, one_tensor_file({4, 2}, f32, 64, 32), "runs past the end");
  expect_error(dir, one_tensor_file({4, 2}, f32, std::numeric_limits<uint64_t>::max() - 31, 32), "runs past the end");
  expect_error(dir, one_tensor_file({4, 2}, f32, 4, 36), "not a multiple of the alignment 32");
  expect_error(dir, one_tensor_file({4, 2}, 99, 0, 32), "unknown ggml type 99");
  expect_error(dir, one_tensor_file({4, 2}, 4, 0, 32), "unknown ggml type 4");
  expect_error(dir, one_tensor_file({1, 1, 1, 1, 1}, f32, 0, 4), "5 dimensions; expected at most 4");
  expect_error(dir, one_tensor_file({uint64_t(1) << 40, uint64_t(1) << 40}, f32, 0, 0), "overflows int64");
  // 2^32 * 2^32 wraps to exactly 0 in 64 bits: still an overflow, not an empty tensor.
  expect_error(dir, one_tensor_file({uint64_t(1) << 32, uint64_t(1) << 32}, f32, 0, 0), "overflows int64");
  expect_error(dir, one_tensor_file({uint64_t(1) << 63}, f32, 0, 0), "does not fit in int64");
  // Elements fit in int64 but their bytes do not fit in the file.
  expect_error(dir, one_tensor_file({uint64_t(1) << 60, 2}, f32, 0, 0), "runs past the end");
  expect_error(dir, one_tensor_file({uint64_t(1) << 61, 2}, f32, 0, 0), "overflows 64 bits");
  expect_error(dir, one_tensor_file({31, 1}, q8, 0, 34), "not a multiple of the Q8_0 block size 32");
  // A zero dimension is an empty tensor (valid), whatever the others are.
  io::GGUFFile empty(dir.write("zero.gguf", one_tensor_file({0, uint64_t(1) << 62}, f32, 0, 0)));
  CHECK(empty.tensor("w").n_elements == 0);
  CHECK(empty.dequantize("w").empty());

  Bytes dup;
  dup.u32(0x46554747).u32(3).u64(2).u64(0);
  dup.tensor_info("w", {2}, GGMLType::F32, 0).tensor_info("w", {2}, GGMLType::F32, 32);
  dup.pad_to(32).raw(std::string(64, '\0'));
  expect_error(dir, dup.s, "tensor 'w': duplicate tensor name");

  Bytes nd;  // n_dims huge: must fail on the count, not allocate
  nd.u32(0x46554747).u32(3).u64(1).u64(0).str("w").u32(0xffffffffu);
  nd.raw(std::string(64, '\0'));
  expect_error(dir, nd.s, "4294967295 dimensions");
}

TEST_CASE("GGUF truncated at every byte raises llm4dsr::Error", "[gguf]") {
  TempDir dir;
  const std::string valid = make_valid().bytes;
  const std::string path = dir.file("t.gguf");
  for (size_t cut = 0; cut < valid.size(); ++cut) {
    dir.write("t.gguf", valid.substr(0, cut));
    try {
      io::GGUFFile f(path);
      FAIL("a file truncated to " << cut << " of " << valid.size() << " bytes was accepted");
    } catch (const Error& e) {
      const std::string m = e.what();
      if (m.find(path) == std::string::npos) FAIL("message without the path: " << m);
    }
  }
  CHECK_NOTHROW(io::GGUFFile(dir.write("t.gguf", valid)));
}

TEST_CASE("GGUF fuzz: mutated and truncated files load or raise llm4dsr::Error", "[gguf]") {
  TempDir dir;
  const ValidFile valid = make_valid();
  const std::string path = dir.file("fuzz.gguf");
  std::mt19937_64 rng(20240607);
  const uint64_t interesting[] = {0, 1, 2, 3, 4, 12, 13, 31, 32, 33, 63, 64, 255, 256, 0x7fffffffULL, 0xffffffffULL,
                                  uint64_t(1) << 32, uint64_t(1) << 62, (uint64_t(1) << 63) - 1, uint64_t(1) << 63,
                                  std::numeric_limits<uint64_t>::max()};
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = valid.bytes;
    const int kind = static_cast<int>(rng() % 5);
    // Most of the structure is before the tensor data: aim most mutations there.
    const size_t header_end = std::min(s.size(), valid.tensor_info_begin + 200);
    auto pos = [&](size_t limit) { return static_cast<size_t>(rng() % limit); };
    if (kind == 0) {
      s.resize(pos(s.size()));
    } else if (kind == 1) {
      const int n = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < n; ++i) s[pos(header_end)] = static_cast<char>(rng() & 0xff);
    } else if (kind == 2) {
      const uint64_t v = interesting[rng() % (sizeof(interesting) / sizeof(interesting[0]))];
      const int width = (rng() % 2) ? 8 : 4;
      const size_t at = pos(header_end - 8);
      for (int i = 0; i < width; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    } else if (kind == 3) {
      const size_t at = pos(header_end);
      s.erase(at, 1 + pos(8));
    } else {
      const size_t at = pos(header_end);
      s.insert(at, std::string(1 + pos(8), static_cast<char>(rng() & 0xff)));
    }
    dir.write("fuzz.gguf", s);
    try {
      io::GGUFFile f(path);
      // Exercise everything a caller would touch.
      for (const auto& key : f.keys()) {
        const io::GGUFValue& v = f.value(key);
        (void)v.type_description();
        try {
          if (v.is_integer()) (void)f.get_int(key);
          if (v.type == GGUFValueType::ARRAY) (void)f.get_float_array(key);
        } catch (const Error&) {
        }
      }
      for (const auto& t : f.tensors()) {
        if (!io::ggml_can_dequantize(t.type) || t.n_elements > (int64_t(1) << 24)) continue;
        std::vector<float> out = f.dequantize(t.name);
        REQUIRE(out.size() == static_cast<size_t>(t.n_elements));
      }
      ++loaded;
    } catch (const Error& e) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL("iteration " << iter << " (mutation kind " << kind << "): non-llm4dsr exception: " << e.what());
    }
  }
  INFO("loaded " << loaded << ", rejected " << rejected);
  // Both outcomes must occur, or the mutations are not reaching the parser's decisions.
  CHECK(loaded > 100);
  CHECK(rejected > 1000);
}
