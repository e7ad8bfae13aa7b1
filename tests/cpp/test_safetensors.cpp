#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llm4dsr/error.h"
#include "llm4dsr/io/safetensors.h"
#include "test_support.h"
#include "torch_catch.h"

using llm4dsr::Error;
using llm4dsr::testing::TempDir;
namespace io = llm4dsr::io;

namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file from a raw header string and data bytes, so tests can state every corruption explicitly.
std::string make_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Asserts that loading `contents` throws llm4dsr::Error whose message contains `fragment` and the path.
void expect_error(const TempDir& dir, const std::string& contents, const std::string& fragment) {
  const std::string path = dir.write("bad.safetensors", contents);
  try {
    io::load_safetensors(path);
    FAIL("expected llm4dsr::Error containing '" << fragment << "'");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find(fragment) != std::string::npos);
    CHECK(msg.find(path) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("safetensors round trip of every dtype", "[safetensors]") {
  TempDir dir;
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f64", torch::randn({3, 2}, torch::kFloat64)},
      {"f32", torch::randn({2, 3, 4})},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({7, 3}).to(torch::kBFloat16)},
      {"i64", torch::randint(-1000000, 1000000, {4}, torch::kInt64)},
      {"i32", torch::randint(-100000, 100000, {3, 3}, torch::kInt32)},
      {"i16", torch::randint(-3000, 3000, {2, 1}, torch::kInt16)},
      {"i8", torch::randint(-100, 100, {9}, torch::kInt8)},
      {"u8", torch::randint(0, 255, {1, 1, 3}, torch::kUInt8)},
      {"bool", torch::randint(0, 2, {6}).to(torch::kBool)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::arange(12, torch::kFloat32).reshape({3, 4}).t()},  // non-contiguous input
  };
  const std::string path = dir.file("all.safetensors");
  io::save_safetensors(path, tensors, {{"note", "hello"}});

  // Header is padded to a multiple of 8 with spaces and carries {"format": "pt"}.
  const std::string bytes = read_all(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(header_len % 8 == 0);
  auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  CHECK(header["__metadata__"]["format"] == "pt");
  CHECK(header["f32"]["dtype"] == "F32");
  CHECK(header["bf16"]["dtype"] == "BF16");
  CHECK(header["bool"]["dtype"] == "BOOL");

  io::SafetensorsFile file(path);
  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.metadata().at("note") == "hello");
  CHECK(file.names().size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    torch::Tensor got = file.tensor(name);
    CHECK(got.scalar_type() == t.scalar_type());
    CHECK(got.sizes() == t.sizes());
    CHECK(torch::equal(got, t.contiguous()));
  }
  // Tensors are copy-on-write views: writing into one leaves the file unchanged, and they outlive the file object.
  torch::Tensor kept;
  {
    io::SafetensorsFile f2(path);
    kept = f2.tensor("f32");
  }
  kept.fill_(0.0f);
  CHECK(torch::equal(io::load_safetensors(path).at("f32"), tensors[1].second));
  CHECK(read_all(path) == bytes);
}

TEST_CASE("safetensors hand-built file is read as specified", "[safetensors]") {
  TempDir dir;
  // Two F32 values (1.0, -2.0) then one I16 (258), written byte by byte.
  std::string data;
  const float f[2] = {1.0f, -2.0f};
  data.append(reinterpret_cast<const char*>(f), 8);
  data += std::string("\x02\x01", 2);
  const std::string header =
      R"({"b":{"dtype":"I16","shape":[1],"data_offsets":[8,10]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  auto t = io::load_safetensors(dir.write("x.safetensors", make_file(header, data)));
  CHECK(t.at("a")[0].item<float>() == 1.0f);
  CHECK(t.at("a")[1].item<float>() == -2.0f);
  CHECK(t.at("b")[0].item<int16_t>() == 258);
  // Unaligned data (I16 at an odd offset relative to the page) is copied, not viewed.
  const std::string header2 =
      R"({"c":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"d":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  std::string data2 = "\x07";
  data2.append(reinterpret_cast<const char*>(f), 4);
  auto t2 = io::load_safetensors(dir.write("y.safetensors", make_file(header2, data2)));
  CHECK(t2.at("d").item<float>() == 1.0f);
  CHECK(t2.at("c").item<uint8_t>() == 7);
}

TEST_CASE("safetensors corrupt files raise llm4dsr::Error", "[safetensors]") {
  TempDir dir;
  const std::string ok8(8, '\0');
  auto one = [](const std::string& dtype, const std::string& shape, const std::string& offs) {
    return R"({"t":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offs + "}}";
  };
  SECTION("shorter than the length field") { expect_error(dir, std::string("\x05\x00", 2), "at least the 8-byte"); }
  SECTION("header length beyond the file") { expect_error(dir, le64(1000) + "{}", "past the end"); }
  SECTION("header length over the limit") { expect_error(dir, le64(200ull * 1000 * 1000) + "{}", "exceeds the limit"); }
  SECTION("header length huge") { expect_error(dir, le64(~0ull) + "{}", "exceeds the limit"); }
  SECTION("header not JSON") { expect_error(dir, make_file("{not json", ""), "not valid JSON"); }
  SECTION("header not an object") { expect_error(dir, make_file("[1,2]", ""), "must be a JSON object"); }
  SECTION("entry not an object") { expect_error(dir, make_file(R"({"t":3})", ""), "tensor 't'"); }
  SECTION("unknown dtype") { expect_error(dir, make_file(one("F8_E4M3", "[8]", "[0,8]"), ok8), "unknown dtype 'F8_E4M3'"); }
  SECTION("negative shape") { expect_error(dir, make_file(one("U8", "[-8]", "[0,8]"), ok8), "non-negative"); }
  SECTION("fractional shape") { expect_error(dir, make_file(one("U8", "[8.5]", "[0,8]"), ok8), "non-negative integers"); }
  SECTION("huge shape overflows") {
    expect_error(dir, make_file(one("F64", "[4294967296,4294967296]", "[0,8]"), ok8), "overflows");
  }
  SECTION("size mismatch") { expect_error(dir, make_file(one("F32", "[3]", "[0,8]"), ok8), "differs from 12"); }
  SECTION("offsets beyond the data") { expect_error(dir, make_file(one("F32", "[4]", "[0,16]"), ok8), "beyond the data block"); }
  SECTION("truncated data") {
    std::string full = make_file(one("F32", "[2]", "[0,8]"), ok8);
    expect_error(dir, full.substr(0, full.size() - 3), "beyond the data block");
  }
  SECTION("begin after end") { expect_error(dir, make_file(one("U8", "[0]", "[8,0]"), ok8), "begin > end"); }
  SECTION("offsets not a pair") { expect_error(dir, make_file(one("U8", "[8]", "[0]"), ok8), "data_offsets"); }
  SECTION("overlapping tensors") {
    const std::string h = R"({"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
    expect_error(dir, make_file(h, ok8), "overlap");
  }
  SECTION("gap between tensors") {
    const std::string h = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
    expect_error(dir, make_file(h, ok8), "gap");
  }
  SECTION("data not starting at 0") { expect_error(dir, make_file(one("U8", "[4]", "[4,8]"), ok8), "gap"); }
  SECTION("trailing bytes after the last tensor") {
    expect_error(dir, make_file(one("U8", "[4]", "[0,4]"), ok8), "data block holds 8 bytes");
  }
  SECTION("metadata not strings") { expect_error(dir, make_file(R"({"__metadata__":{"a":1}})", ""), "__metadata__"); }
  SECTION("bool byte other than 0/1") {
    expect_error(dir, make_file(one("BOOL", "[2]", "[0,2]"), std::string("\x01\x05", 2)), "expected 0 or 1");
  }
  SECTION("missing file") {
    CHECK_THROWS_AS(io::load_safetensors(dir.file("nope.safetensors")), Error);
  }
}

TEST_CASE("safetensors fuzzed files give a tensor map or llm4dsr::Error, never a crash", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("valid.safetensors");
  io::save_safetensors(path, {{"w", torch::randn({3, 4})},
                              {"b", torch::randint(0, 2, {5}).to(torch::kBool)},
                              {"h", torch::randn({2}).to(torch::kBFloat16)}});
  const std::string valid = read_all(path);
  std::mt19937_64 rng(20240601);
  int ok = 0, errors = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bytes = valid;
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      bytes.resize(rng() % (bytes.size() + 1));  // truncation
    } else {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips && !bytes.empty(); ++k) {
        // Mostly in the length field and header, where parsing decisions are made.
        const size_t limit = kind == 1 ? std::min<size_t>(bytes.size(), 8) : bytes.size();
        const size_t pos = rng() % limit;
        if (kind == 3) {
          const char digits[] = "0123456789-[]{},\":.e ";
          bytes[pos] = digits[rng() % (sizeof(digits) - 1)];
        } else {
          bytes[pos] = static_cast<char>(rng() & 0xff);
        }
      }
    }
    const std::string p = dir.write("fuzz.safetensors", bytes);
    try {
      auto t = io::load_safetensors(p);
      for (auto& [name, tensor] : t) (void)tensor.sum().item<double>();  // touch the data
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  CHECK(ok + errors == 3000);
  CHECK(errors > 0);
  CHECK(ok > 0);  // some mutations (e.g. in tensor data) leave a valid file
}

TEST_CASE("sharded safetensors checkpoints load through the index", "[safetensors]") {
  TempDir dir;
  auto a = torch::randn({2, 2}), b = torch::randn({3}), c = torch::randn({1});
  io::save_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", a}, {"b", b}});
  io::save_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"c", c}});
  nlohmann::json index = {{"metadata", {{"total_size", 32}}},
                          {"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00001-of-00002.safetensors"},
                            {"c", "model-00002-of-00002.safetensors"}}}};
  dir.write("model.safetensors.index.json", index.dump());
  auto t = io::load_safetensors_checkpoint(dir.path());
  REQUIRE(t.size() == 3);
  CHECK(torch::equal(t.at("a"), a));
  CHECK(torch::equal(t.at("b"), b));
  CHECK(torch::equal(t.at("c"), c));

  index["weight_map"]["d"] = "model-00002-of-00002.safetensors";
  dir.write("model.safetensors.index.json", index.dump());
  CHECK_THROWS_WITH(io::load_safetensors_checkpoint(dir.path()), Catch::Contains("'d'"));

  index["weight_map"].erase("d");
  index["weight_map"].erase("b");
  dir.write("model.safetensors.index.json", index.dump());
  CHECK_THROWS_WITH(io::load_safetensors_checkpoint(dir.path()), Catch::Contains("holds 'b'"));

  TempDir empty;
  CHECK_THROWS_WITH(io::load_safetensors_checkpoint(empty.path()), Catch::Contains("neither model.safetensors"));
}
