// GGUF: llama.cpp's single-file model format (versions 2 and 3, little-endian).
//
// Layout: "GGUF" magic, uint32 version, uint64 tensor count, uint64 metadata count, then the
// metadata key/value pairs (key: uint64 length + bytes; uint32 value type; value), then one info per
// tensor (name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset), padding to
// `general.alignment` (uint32, default 32), and the data section. A tensor's offset is relative to the
// data section and its bytes are ne[0]*...*ne[n-1] / block_size * type_size of its ggml type.
//
// The constructor validates everything before returning: the magic, the version, every count against
// the bytes left in the file (nothing is allocated for a count the file cannot hold), string and array
// lengths, value and tensor types, dimensions (at most 4, ne[0] a multiple of the block size, no
// overflow in elements x type size), duplicate keys and tensor names, aligned tensor offsets and tensor
// data inside the file. Any violation throws llm4dsr::Error naming the file and the key or tensor.
//
// The file stays memory-mapped (read-only) while a GGUFFile (or a copy of it) is alive; metadata is
// copied out at open. Dequantisation to fp32 covers F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K and Q6_K with the block layouts and arithmetic of ggml / gguf-py (results
// are bit-identical to gguf.quants.dequantize). Torch tensors come from gguf_tensor.h, so that code
// which only reads metadata does not include torch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llm4dsr::io {

// Metadata value types, numbered as in the file.
enum class GGUFValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

// "UINT32", "STRING", ...; "unknown(<n>)" for numbers outside the enum.
std::string gguf_value_type_name(GGUFValueType type);

// Tensor element types, numbered as in ggml (gaps are types ggml removed).
enum class GGMLType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

// True for the numbers of the enum above (types whose block layout is known).
bool ggml_type_is_known(uint32_t type);
// "Q4_K", ...; "unknown(<n>)" for unknown numbers.
std::string ggml_type_name(GGMLType type);
// Elements per block and bytes per block; throw Error for unknown types.
int64_t ggml_block_size(GGMLType type);
int64_t ggml_type_size(GGMLType type);
// True for the types dequantize_ggml handles.
bool ggml_can_dequantize(GGMLType type);

// Dequantises `n_elements` values of `type` (a multiple of its block size) stored at `src`
// (n_elements / block_size * type_size bytes, any alignment) into `dst`, in parallel over blocks on
// libtorch's intra-op threads. Throws Error naming the type when it is not supported.
void dequantize_ggml(GGMLType type, const void* src, int64_t n_elements, float* dst);

// One metadata value. Integers keep their signedness (unsigned types and BOOL in `uint_value`,
// signed ones in `int_value`); FLOAT32 is widened exactly to double; arrays hold their items (all of
// `element_type`, nested arrays allowed).
struct GGUFValue {
  GGUFValueType type = GGUFValueType::UINT8;
  GGUFValueType element_type = GGUFValueType::UINT8;  // arrays only
  uint64_t uint_value = 0;
  int64_t int_value = 0;
  double float_value = 0.0;
  std::string string_value;
  std::vector<GGUFValue> items;

  bool is_integer() const;  // UINT8 .. INT64 (not BOOL)
  bool is_float() const;    // FLOAT32, FLOAT64
  // "UINT32", "ARRAY[STRING]", "ARRAY[ARRAY[INT32]]" (an empty nested array shows its declared type).
  std::string type_description() const;
};

struct GGUFTensorInfo {
  std::string name;
  std::vector<int64_t> ne;     // ggml order: ne[0] is the contiguous (fastest-varying) dimension
  std::vector<int64_t> shape;  // row-major (PyTorch / numpy) order: ne reversed
  GGMLType type = GGMLType::F32;
  uint64_t offset = 0;       // relative to the data section, as stored in the file
  uint64_t file_offset = 0;  // absolute position of the first byte in the file
  int64_t n_elements = 0;
  uint64_t n_bytes = 0;

  std::string type_name() const { return ggml_type_name(type); }
};

// One open, validated, memory-mapped GGUF file. Copies share the mapping.
class GGUFFile {
 public:
  explicit GGUFFile(const std::string& path);
  ~GGUFFile();
  GGUFFile(const GGUFFile&);
  GGUFFile& operator=(const GGUFFile&);
  GGUFFile(GGUFFile&&) noexcept;
  GGUFFile& operator=(GGUFFile&&) noexcept;

  const std::string& path() const;
  uint32_t version() const;
  uint64_t alignment() const;
  uint64_t data_offset() const;  // start of the data section in the file
  uint64_t file_size() const;

  // --- metadata ---
  bool has(const std::string& key) const;
  std::vector<std::string> keys() const;                 // in file order
  const GGUFValue& value(const std::string& key) const;  // throws when absent
  // Typed getters throw Error naming the file, the key, the expected and the actual type when the
  // value has another type, and when the key is absent (unless a fallback is given).
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  int64_t get_int(const std::string& key) const;  // any integer type; UINT64 above INT64_MAX throws
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;  // FLOAT32, FLOAT64 or any integer type
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;  // floats or integers

  // --- tensors ---
  const std::vector<GGUFTensorInfo>& tensors() const;  // in file order
  std::vector<std::string> tensor_names() const;
  bool has_tensor(const std::string& name) const;
  const GGUFTensorInfo& tensor(const std::string& name) const;  // throws when absent
  // The tensor's raw bytes inside the mapping (tensor(name).n_bytes of them).
  const unsigned char* tensor_data(const std::string& name) const;

  // fp32 values in ggml order (= row-major over `shape`) into `out`, which must hold n_elements
  // floats; throws Error naming the tensor and type when the type cannot be dequantised.
  void dequantize(const std::string& name, float* out) const;
  std::vector<float> dequantize(const std::string& name) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace llm4dsr::io
