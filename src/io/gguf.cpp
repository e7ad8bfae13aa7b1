// GGUF reader: parsing and validation of the header, metadata and tensor infos over a read-only
// memory mapping. Dequantisation kernels live in gguf_dequantize.cpp.
#include "llm4dsr/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <utility>

#include "llm4dsr/error.h"

namespace llm4dsr::io {

namespace {

constexpr uint32_t kGGUFMagic = 0x46554747;  // "GGUF" read as little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 16;      // bounds the parser's recursion on hostile files

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) ::munmap(addr, size);
  }
};

// Fixed size of a scalar value type in bytes; 0 for STRING, ARRAY and unknown types.
uint64_t scalar_size(uint32_t type) {
  switch (static_cast<GGUFValueType>(type)) {
    case GGUFValueType::UINT8:
    case GGUFValueType::INT8:
    case GGUFValueType::BOOL: return 1;
    case GGUFValueType::UINT16:
    case GGUFValueType::INT16: return 2;
    case GGUFValueType::UINT32:
    case GGUFValueType::INT32:
    case GGUFValueType::FLOAT32: return 4;
    case GGUFValueType::UINT64:
    case GGUFValueType::INT64:
    case GGUFValueType::FLOAT64: return 8;
    default: return 0;
  }
}

bool is_known_value_type(uint32_t type) { return type <= static_cast<uint32_t>(GGUFValueType::FLOAT64); }

// Bounds-checked little-endian reads. Every failure names the file, the entry being read (`context`,
// set by the parser per key or tensor), the field and the offset; messages are built only on failure.
class Cursor {
 public:
  Cursor(const unsigned char* data, uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

  std::string context = "header";

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    LLM4DSR_CHECK(n <= remaining(), "GGUF file " << path_ << ": truncated: " << context << ": " << what << " needs "
                                                 << n << " bytes at offset " << pos_ << " but the file has "
                                                 << remaining() << " bytes left (size " << size_ << ")");
  }
  uint64_t read_uint(int bytes, const char* what) {
    need(static_cast<uint64_t>(bytes), what);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | data_[pos_ + i];
    pos_ += static_cast<uint64_t>(bytes);
    return v;
  }
  uint32_t u32(const char* what) { return static_cast<uint32_t>(read_uint(4, what)); }
  uint64_t u64(const char* what) { return read_uint(8, what); }
  std::string string(const char* what) {
    const uint64_t len = u64(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  const unsigned char* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

std::string describe_key(const std::string& key) {
  // Keys come from the file; keep messages printable when a corrupt file has binary junk there.
  std::string out;
  for (unsigned char c : key.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (key.size() > 200) out += "...";
  return out;
}

}  // namespace

std::string gguf_value_type_name(GGUFValueType type) {
  switch (type) {
    case GGUFValueType::UINT8: return "UINT8";
    case GGUFValueType::INT8: return "INT8";
    case GGUFValueType::UINT16: return "UINT16";
    case GGUFValueType::INT16: return "INT16";
    case GGUFValueType::UINT32: return "UINT32";
    case GGUFValueType::INT32: return "INT32";
    case GGUFValueType::FLOAT32: return "FLOAT32";
    case GGUFValueType::BOOL: return "BOOL";
    case GGUFValueType::STRING: return "STRING";
    case GGUFValueType::ARRAY: return "ARRAY";
    case GGUFValueType::UINT64: return "UINT64";
    case GGUFValueType::INT64: return "INT64";
    case GGUFValueType::FLOAT64: return "FLOAT64";
  }
  return "unknown(" + std::to_string(static_cast<uint32_t>(type)) + ")";
}

bool GGUFValue::is_integer() const {
  switch (type) {
    case GGUFValueType::UINT8:
    case GGUFValueType::INT8:
    case GGUFValueType::UINT16:
    case GGUFValueType::INT16:
    case GGUFValueType::UINT32:
    case GGUFValueType::INT32:
    case GGUFValueType::UINT64:
    case GGUFValueType::INT64: return true;
    default: return false;
  }
}

bool GGUFValue::is_float() const { return type == GGUFValueType::FLOAT32 || type == GGUFValueType::FLOAT64; }

std::string GGUFValue::type_description() const {
  if (type != GGUFValueType::ARRAY) return gguf_value_type_name(type);
  if (element_type == GGUFValueType::ARRAY && !items.empty()) return "ARRAY[" + items.front().type_description() + "]";
  return "ARRAY[" + gguf_value_type_name(element_type) + "]";
}

struct GGUFFile::Impl {
  std::string path;
  std::shared_ptr<Mapping> mapping;
  const unsigned char* bytes = nullptr;
  uint64_t file_size = 0;
  uint32_t version = 0;
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, GGUFValue>> metadata;
  std::unordered_map<std::string, size_t> metadata_index;
  std::vector<GGUFTensorInfo> tensors;
  std::unordered_map<std::string, size_t> tensor_index;

  std::string where(const std::string& key) const {
    return "GGUF file " + path + ", metadata key '" + describe_key(key) + "'";
  }
  const GGUFValue& get(const std::string& key) const {
    auto it = metadata_index.find(key);
    LLM4DSR_CHECK(it != metadata_index.end(), "GGUF file " << path << " has no metadata key '" << describe_key(key) << "'");
    return metadata[it->second].second;
  }
  const GGUFValue* find(const std::string& key) const {
    auto it = metadata_index.find(key);
    return it == metadata_index.end() ? nullptr : &metadata[it->second].second;
  }
  [[noreturn]] void type_error(const std::string& key, const GGUFValue& v, const char* expected) const {
    LLM4DSR_THROW(where(key) << ": expected " << expected << ", found " << v.type_description());
  }
  int64_t to_int(const std::string& key, const GGUFValue& v) const {
    if (!v.is_integer()) type_error(key, v, "an integer");
    switch (v.type) {
      case GGUFValueType::UINT8:
      case GGUFValueType::UINT16:
      case GGUFValueType::UINT32:
      case GGUFValueType::UINT64:
        LLM4DSR_CHECK(v.uint_value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                      where(key) << ": UINT64 value " << v.uint_value << " does not fit in int64");
        return static_cast<int64_t>(v.uint_value);
      default: return v.int_value;
    }
  }
  double to_float(const std::string& key, const GGUFValue& v) const {
    if (v.is_float()) return v.float_value;
    if (!v.is_integer()) type_error(key, v, "a number (FLOAT32, FLOAT64 or an integer)");
    switch (v.type) {
      case GGUFValueType::UINT8:
      case GGUFValueType::UINT16:
      case GGUFValueType::UINT32:
      case GGUFValueType::UINT64: return static_cast<double>(v.uint_value);
      default: return static_cast<double>(v.int_value);
    }
  }
  const std::vector<GGUFValue>& array_of(const std::string& key, const GGUFValue& v, const char* expected,
                                         bool (*ok)(GGUFValueType)) const {
    if (v.type != GGUFValueType::ARRAY || !ok(v.element_type)) type_error(key, v, expected);
    return v.items;
  }

  void parse();
  GGUFValue parse_value(Cursor& c, uint32_t type, const std::string& key, int depth);
};

GGUFValue GGUFFile::Impl::parse_value(Cursor& c, uint32_t type, const std::string& key, int depth) {
  LLM4DSR_CHECK(is_known_value_type(type), where(key) << ": unknown value type " << type << " at offset " << c.pos()
                                                      << " (expected 0..12: UINT8 .. FLOAT64)");
  GGUFValue v;
  v.type = static_cast<GGUFValueType>(type);
  switch (v.type) {
    case GGUFValueType::UINT8: v.uint_value = c.read_uint(1, "UINT8 value"); break;
    case GGUFValueType::UINT16: v.uint_value = c.read_uint(2, "UINT16 value"); break;
    case GGUFValueType::UINT32: v.uint_value = c.read_uint(4, "UINT32 value"); break;
    case GGUFValueType::UINT64: v.uint_value = c.read_uint(8, "UINT64 value"); break;
    case GGUFValueType::INT8: v.int_value = static_cast<int8_t>(c.read_uint(1, "INT8 value")); break;
    case GGUFValueType::INT16: v.int_value = static_cast<int16_t>(c.read_uint(2, "INT16 value")); break;
    case GGUFValueType::INT32: v.int_value = static_cast<int32_t>(c.read_uint(4, "INT32 value")); break;
    case GGUFValueType::INT64: v.int_value = static_cast<int64_t>(c.read_uint(8, "INT64 value")); break;
    case GGUFValueType::FLOAT32: {
      const auto bits = static_cast<uint32_t>(c.read_uint(4, "FLOAT32 value"));
      float f;
      std::memcpy(&f, &bits, 4);
      v.float_value = f;
      break;
    }
    case GGUFValueType::FLOAT64: {
      const uint64_t bits = c.read_uint(8, "FLOAT64 value");
      std::memcpy(&v.float_value, &bits, 8);
      break;
    }
    case GGUFValueType::BOOL: {
      const uint64_t b = c.read_uint(1, "BOOL value");
      // ggml writes 0 or 1; any other byte means the file is corrupt (or misaligned by an earlier bug).
      LLM4DSR_CHECK(b <= 1, where(key) << ": BOOL byte at offset " << (c.pos() - 1) << " is " << b
                                       << ", expected 0 or 1");
      v.uint_value = b;
      break;
    }
    case GGUFValueType::STRING: v.string_value = c.string("STRING value"); break;
    case GGUFValueType::ARRAY: {
      LLM4DSR_CHECK(depth < kMaxArrayNesting, where(key) << ": arrays nested deeper than " << kMaxArrayNesting
                                                         << " levels at offset " << c.pos());
      const uint32_t elem = c.u32("array element type");
      LLM4DSR_CHECK(is_known_value_type(elem), where(key) << ": unknown array element type " << elem << " at offset "
                                                          << (c.pos() - 4) << " (expected 0..12: UINT8 .. FLOAT64)");
      v.element_type = static_cast<GGUFValueType>(elem);
      const uint64_t count = c.u64("array length");
      // Smallest encoding of one element: its fixed size, a string's 8-byte length, or a nested
      // array's 4-byte type + 8-byte length. A count the rest of the file cannot hold is corrupt, and
      // is rejected before anything is allocated for it.
      const uint64_t fixed = scalar_size(elem);
      const uint64_t min_elem = fixed ? fixed : (v.element_type == GGUFValueType::STRING ? 8 : 12);
      LLM4DSR_CHECK(count <= c.remaining() / min_elem,
                    where(key) << ": array of " << count << " " << gguf_value_type_name(v.element_type)
                               << " needs at least " << min_elem << " bytes each but only " << c.remaining()
                               << " bytes are left in the file at offset " << c.pos());
      v.items.resize(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) v.items[i] = parse_value(c, elem, key, depth + 1);
      break;
    }
  }
  return v;
}

void GGUFFile::Impl::parse() {
  Cursor c(bytes, file_size, path);
  const uint32_t magic = c.u32("the magic \"GGUF\"");
  LLM4DSR_CHECK(magic == kGGUFMagic, "GGUF file " << path << ": bad magic: expected the bytes \"GGUF\" at offset 0, found 0x"
                                                  << std::hex << magic << std::dec << " (not a GGUF file)");
  version = c.u32("the version");
  LLM4DSR_CHECK((version & 0xffff) != 0 || version == 0,
                "GGUF file " << path << ": version field reads 0x" << std::hex << version << std::dec
                             << ", which is a big-endian GGUF file; only little-endian files are supported");
  LLM4DSR_CHECK(version != 1, "GGUF file " << path << ": GGUF version 1 (32-bit counts) is not supported; expected version 2 or 3");
  LLM4DSR_CHECK(version == 2 || version == 3,
                "GGUF file " << path << ": unsupported GGUF version " << version << "; expected 2 or 3");
  const uint64_t tensor_count = c.u64("the tensor count");
  const uint64_t kv_count = c.u64("the metadata count");
  // Each key/value takes at least 13 bytes (key length, type, 1-byte value) and each tensor info at
  // least 24 (name length, n_dims, type, offset).
  LLM4DSR_CHECK(kv_count <= c.remaining() / 13,
                "GGUF file " << path << ": metadata count " << kv_count << " cannot fit in the " << c.remaining()
                             << " bytes left after the header (each entry takes at least 13 bytes)");
  LLM4DSR_CHECK(tensor_count <= c.remaining() / 24,
                "GGUF file " << path << ": tensor count " << tensor_count << " cannot fit in the " << c.remaining()
                             << " bytes left after the header (each tensor info takes at least 24 bytes)");

  metadata.reserve(static_cast<size_t>(kv_count));
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t entry_pos = c.pos();
    c.context = "metadata entry #" + std::to_string(i);
    std::string key = c.string("key");
    c.context = "metadata key '" + describe_key(key) + "'";
    const uint32_t type = c.u32("value type");
    GGUFValue v = parse_value(c, type, key, 0);
    LLM4DSR_CHECK(metadata_index.emplace(key, metadata.size()).second,
                  where(key) << ": duplicate key (second occurrence at offset " << entry_pos << ")");
    metadata.emplace_back(std::move(key), std::move(v));
  }

  if (const GGUFValue* a = find("general.alignment")) {
    // As gguf-py and ggml: a UINT32 power of two.
    LLM4DSR_CHECK(a->type == GGUFValueType::UINT32,
                  where("general.alignment") << ": expected UINT32, found " << a->type_description());
    LLM4DSR_CHECK(a->uint_value != 0 && (a->uint_value & (a->uint_value - 1)) == 0,
                  where("general.alignment") << ": expected a non-zero power of two, found " << a->uint_value);
    alignment = a->uint_value;
  }

  tensors.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GGUFTensorInfo t;
    c.context = "tensor info #" + std::to_string(i);
    t.name = c.string("name");
    const std::string w = "GGUF file " + path + ", tensor '" + describe_key(t.name) + "'";
    c.context = "tensor '" + describe_key(t.name) + "'";
    const uint32_t n_dims = c.u32("n_dims");
    LLM4DSR_CHECK(n_dims <= kMaxDims, w << ": " << n_dims << " dimensions; expected at most " << kMaxDims);
    uint64_t n_elements = 1;
    bool overflow = false, has_zero = false;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.u64("dimension");
      LLM4DSR_CHECK(ne <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                    w << ": dimension " << d << " is " << ne << ", which does not fit in int64");
      if (ne == 0) has_zero = true;
      else if (n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne) overflow = true;
      n_elements *= ne;
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    const uint32_t type = c.u32("ggml type");
    LLM4DSR_CHECK(ggml_type_is_known(type), w << ": unknown ggml type " << type);
    t.type = static_cast<GGMLType>(type);
    t.offset = c.u64("data offset");
    std::string dims;
    for (size_t d = 0; d < t.ne.size(); ++d) dims += (d ? ", " : "") + std::to_string(t.ne[d]);
    // A zero dimension makes an empty tensor even when the others' product overflows.
    if (has_zero) n_elements = 0;
    LLM4DSR_CHECK(!overflow || has_zero, w << ": element count of dimensions [" << dims << "] overflows int64");
    const auto block = static_cast<uint64_t>(ggml_block_size(t.type));
    const auto type_size = static_cast<uint64_t>(ggml_type_size(t.type));
    const uint64_t ne0 = t.ne.empty() ? 1 : static_cast<uint64_t>(t.ne[0]);
    LLM4DSR_CHECK(ne0 % block == 0, w << ": ne[0] = " << ne0 << " is not a multiple of the " << t.type_name()
                                      << " block size " << block);
    const uint64_t n_blocks = n_elements / block;
    LLM4DSR_CHECK(n_blocks <= std::numeric_limits<uint64_t>::max() / type_size,
                  w << ": byte size of " << n_elements << " " << t.type_name() << " elements overflows 64 bits");
    t.n_elements = static_cast<int64_t>(n_elements);
    t.n_bytes = n_blocks * type_size;
    t.shape.assign(t.ne.rbegin(), t.ne.rend());
    LLM4DSR_CHECK(tensor_index.emplace(t.name, tensors.size()).second, w << ": duplicate tensor name");
    tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment (a tensor-less file may end before).
  const uint64_t pos = c.pos();
  data_offset = pos + (alignment - pos % alignment) % alignment;
  for (auto& t : tensors) {
    const std::string w = "GGUF file " + path + ", tensor '" + describe_key(t.name) + "'";
    LLM4DSR_CHECK(t.offset % alignment == 0,
                  w << ": data offset " << t.offset << " is not a multiple of the alignment " << alignment);
    LLM4DSR_CHECK(data_offset <= file_size && t.offset <= file_size - data_offset &&
                      t.n_bytes <= file_size - data_offset - t.offset,
                  w << ": data [" << t.offset << ", +" << t.n_bytes << " bytes) relative to the data section at "
                    << data_offset << " runs past the end of the file (" << file_size << " bytes)");
    t.file_offset = data_offset + t.offset;
  }
}

GGUFFile::GGUFFile(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LLM4DSR_CHECK(fd >= 0, "cannot open GGUF file " << path << ": " << std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    LLM4DSR_THROW("GGUF file " << path << " is not a readable regular file");
  }
  impl->file_size = static_cast<uint64_t>(st.st_size);
  if (impl->file_size == 0) {
    ::close(fd);
    LLM4DSR_THROW("GGUF file " << path << " is empty; expected the magic \"GGUF\" and a header");
  }
  impl->mapping = std::make_shared<Mapping>();
  impl->mapping->addr = ::mmap(nullptr, impl->file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  impl->mapping->size = impl->file_size;
  const int map_errno = errno;
  ::close(fd);
  LLM4DSR_CHECK(impl->mapping->addr != MAP_FAILED, "cannot memory-map GGUF file " << path << ": " << std::strerror(map_errno));
  impl->bytes = static_cast<const unsigned char*>(impl->mapping->addr);
  impl->parse();
  impl_ = std::move(impl);
}

GGUFFile::~GGUFFile() = default;
GGUFFile::GGUFFile(const GGUFFile&) = default;
GGUFFile& GGUFFile::operator=(const GGUFFile&) = default;
GGUFFile::GGUFFile(GGUFFile&&) noexcept = default;
GGUFFile& GGUFFile::operator=(GGUFFile&&) noexcept = default;

const std::string& GGUFFile::path() const { return impl_->path; }
uint32_t GGUFFile::version() const { return impl_->version; }
uint64_t GGUFFile::alignment() const { return impl_->alignment; }
uint64_t GGUFFile::data_offset() const { return impl_->data_offset; }
uint64_t GGUFFile::file_size() const { return impl_->file_size; }

bool GGUFFile::has(const std::string& key) const { return impl_->metadata_index.count(key) > 0; }

std::vector<std::string> GGUFFile::keys() const {
  std::vector<std::string> out;
  out.reserve(impl_->metadata.size());
  for (const auto& kv : impl_->metadata) out.push_back(kv.first);
  return out;
}

const GGUFValue& GGUFFile::value(const std::string& key) const { return impl_->get(key); }

std::string GGUFFile::get_string(const std::string& key) const {
  const GGUFValue& v = impl_->get(key);
  if (v.type != GGUFValueType::STRING) impl_->type_error(key, v, "STRING");
  return v.string_value;
}
std::string GGUFFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

int64_t GGUFFile::get_int(const std::string& key) const { return impl_->to_int(key, impl_->get(key)); }
int64_t GGUFFile::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GGUFFile::get_float(const std::string& key) const { return impl_->to_float(key, impl_->get(key)); }
double GGUFFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GGUFFile::get_bool(const std::string& key) const {
  const GGUFValue& v = impl_->get(key);
  if (v.type != GGUFValueType::BOOL) impl_->type_error(key, v, "BOOL");
  return v.uint_value != 0;
}
bool GGUFFile::get_bool(const std::string& key, bool fallback) const { return has(key) ? get_bool(key) : fallback; }

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
  const auto& items = impl_->array_of(key, impl_->get(key), "ARRAY[STRING]",
                                      [](GGUFValueType t) { return t == GGUFValueType::STRING; });
  std::vector<std::string> out;
  out.reserve(items.size());
  for (const auto& v : items) out.push_back(v.string_value);
  return out;
}

std::vector<int64_t> GGUFFile::get_int_array(const std::string& key) const {
  const auto& items = impl_->array_of(key, impl_->get(key), "an ARRAY of integers", [](GGUFValueType t) {
    GGUFValue probe;
    probe.type = t;
    return probe.is_integer();
  });
  std::vector<int64_t> out;
  out.reserve(items.size());
  for (const auto& v : items) out.push_back(impl_->to_int(key, v));
  return out;
}

std::vector<double> GGUFFile::get_float_array(const std::string& key) const {
  const auto& items = impl_->array_of(key, impl_->get(key), "an ARRAY of numbers", [](GGUFValueType t) {
    GGUFValue probe;
    probe.type = t;
    return probe.is_integer() || probe.is_float();
  });
  std::vector<double> out;
  out.reserve(items.size());
  for (const auto& v : items) out.push_back(impl_->to_float(key, v));
  return out;
}

const std::vector<GGUFTensorInfo>& GGUFFile::tensors() const { return impl_->tensors; }

std::vector<std::string> GGUFFile::tensor_names() const {
  std::vector<std::string> out;
  out.reserve(impl_->tensors.size());
  for (const auto& t : impl_->tensors) out.push_back(t.name);
  return out;
}

bool GGUFFile::has_tensor(const std::string& name) const { return impl_->tensor_index.count(name) > 0; }

const GGUFTensorInfo& GGUFFile::tensor(const std::string& name) const {
  auto it = impl_->tensor_index.find(name);
  LLM4DSR_CHECK(it != impl_->tensor_index.end(), "GGUF file " << impl_->path << " has no tensor '" << describe_key(name) << "'");
  return impl_->tensors[it->second];
}

const unsigned char* GGUFFile::tensor_data(const std::string& name) const {
  return impl_->bytes + tensor(name).file_offset;
}

void GGUFFile::dequantize(const std::string& name, float* out) const {
  const GGUFTensorInfo& t = tensor(name);
  LLM4DSR_CHECK(ggml_can_dequantize(t.type), "GGUF file " << impl_->path << ", tensor '" << describe_key(name)
                                                          << "': cannot dequantize ggml type " << t.type_name()
                                                          << " (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 "
                                                             "Q2_K Q3_K Q4_K Q5_K Q6_K)");
  dequantize_ggml(t.type, impl_->bytes + t.file_offset, t.n_elements, out);
}

std::vector<float> GGUFFile::dequantize(const std::string& name) const {
  const GGUFTensorInfo& t = tensor(name);
  LLM4DSR_CHECK(static_cast<uint64_t>(t.n_elements) <= std::numeric_limits<size_t>::max() / sizeof(float),
                "GGUF file " << impl_->path << ", tensor '" << describe_key(name) << "' is too large");
  std::vector<float> out(static_cast<size_t>(t.n_elements));
  dequantize(name, out.data());
  return out;
}

}  // namespace llm4dsr::io
