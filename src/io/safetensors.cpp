#include "llm4dsr/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "internal/atomic_output.h"
#include "llm4dsr/error.h"

namespace llm4dsr::io {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

struct DtypeInfo {
  const char* name;
  torch::Dtype dtype;
  uint64_t size;
};

const DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2}, {"I8", torch::kInt8, 1}, {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// The mapping outlives the file object for as long as a tensor made from it is alive.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) ::munmap(addr, size);
  }
};

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

torch::Dtype safetensors_dtype_from_name(const std::string& name) {
  const DtypeInfo* d = find_dtype(name);
  LLM4DSR_CHECK(d, "unknown safetensors dtype '" << name
                                                  << "' (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  return d->dtype;
}

std::string safetensors_dtype_name(torch::Dtype dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  LLM4DSR_THROW("dtype " << dtype << " cannot be written to safetensors (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

struct SafetensorsFile::Impl {
  std::string path;
  std::shared_ptr<Mapping> mapping;
  const unsigned char* data = nullptr;  // start of the data block
  uint64_t data_size = 0;
  std::vector<SafetensorsEntry> entries;  // sorted by data_begin
  std::map<std::string, size_t> by_name;
  std::map<std::string, std::string> metadata;
};

SafetensorsFile::SafetensorsFile(const std::string& path) : impl_(std::make_shared<Impl>()) {
  Impl& s = *impl_;
  s.path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LLM4DSR_CHECK(fd >= 0, "cannot open safetensors file " << path << ": " << std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    LLM4DSR_THROW("safetensors file " << path << " is not a readable regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    LLM4DSR_THROW("safetensors file " << path << " is " << file_size
                                      << " bytes; expected at least the 8-byte header length");
  }
  s.mapping = std::make_shared<Mapping>();
  // Private + writable: copy-on-write, so tensors over the mapping may be modified in place without
  // touching the file.
  s.mapping->addr = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  s.mapping->size = file_size;
  const int map_errno = errno;
  ::close(fd);
  LLM4DSR_CHECK(s.mapping->addr != MAP_FAILED, "cannot memory-map " << path << ": " << std::strerror(map_errno));
  const auto* bytes = static_cast<const unsigned char*>(s.mapping->addr);

  const uint64_t header_len = read_le64(bytes);
  LLM4DSR_CHECK(header_len <= kMaxHeaderBytes, "safetensors file " << path << ": header length " << header_len
                                                                   << " exceeds the limit of " << kMaxHeaderBytes << " bytes");
  LLM4DSR_CHECK(header_len <= file_size - 8, "safetensors file " << path << ": header length " << header_len
                                                                 << " runs past the end of the file (" << file_size
                                                                 << " bytes)");
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, nullptr, false);
  LLM4DSR_CHECK(!header.is_discarded(), "safetensors file " << path << ": header (" << header_len
                                                            << " bytes at offset 8) is not valid JSON");
  LLM4DSR_CHECK(header.is_object(), "safetensors file " << path << ": header must be a JSON object, found "
                                                        << header.type_name());
  s.data = bytes + 8 + header_len;
  s.data_size = file_size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      LLM4DSR_CHECK(v.is_object(), "safetensors file " << path << ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        LLM4DSR_CHECK(m.value().is_string(), "safetensors file " << path << ": __metadata__ value for '" << m.key()
                                                                 << "' must be a string, found " << m.value().type_name());
        s.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "safetensors file " + path + ", tensor '" + name + "'";
    LLM4DSR_CHECK(v.is_object(), where << ": expected an object {dtype, shape, data_offsets}, found " << v.type_name());
    LLM4DSR_CHECK(v.contains("dtype") && v["dtype"].is_string(), where << ": missing string 'dtype'");
    LLM4DSR_CHECK(v.contains("shape") && v["shape"].is_array(), where << ": missing array 'shape'");
    LLM4DSR_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
                  where << ": 'data_offsets' must be an array [begin, end]");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = v["dtype"].get<std::string>();
    const DtypeInfo* d = find_dtype(e.dtype);
    LLM4DSR_CHECK(d, where << ": unknown dtype '" << e.dtype << "' (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    uint64_t bytes_needed = d->size;
    for (const auto& dim : v["shape"]) {
      LLM4DSR_CHECK(dim.is_number_integer() && dim.get<int64_t>() >= 0,
                    where << ": shape entries must be non-negative integers, found " << dim.dump());
      const auto n = static_cast<uint64_t>(dim.get<int64_t>());
      LLM4DSR_CHECK(n == 0 || bytes_needed <= std::numeric_limits<uint64_t>::max() / n,
                    where << ": shape " << v["shape"].dump() << " overflows 64-bit byte size");
      bytes_needed *= n;
      e.shape.push_back(static_cast<int64_t>(n));
    }
    for (const auto& off : v["data_offsets"])
      LLM4DSR_CHECK(off.is_number_integer() && off.get<int64_t>() >= 0,
                    where << ": data_offsets must be non-negative integers, found " << off.dump());
    e.data_begin = v["data_offsets"][0].get<uint64_t>();
    e.data_end = v["data_offsets"][1].get<uint64_t>();
    LLM4DSR_CHECK(e.data_begin <= e.data_end, where << ": data_offsets [" << e.data_begin << ", " << e.data_end
                                                    << "] have begin > end");
    LLM4DSR_CHECK(e.data_end <= s.data_size, where << ": data_offsets end " << e.data_end
                                                   << " lies beyond the data block of " << s.data_size << " bytes");
    LLM4DSR_CHECK(e.data_end - e.data_begin == bytes_needed,
                  where << ": byte size " << (e.data_end - e.data_begin) << " from data_offsets differs from "
                        << bytes_needed << " = " << e.dtype << " size x product of shape " << v["shape"].dump());
    s.entries.push_back(std::move(e));
  }

  std::sort(s.entries.begin(), s.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.data_end < b.data_end;
  });
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < s.entries.size(); ++i) {
    const auto& e = s.entries[i];
    LLM4DSR_CHECK(e.data_begin == expected_begin,
                  "safetensors file " << path << ", tensor '" << e.name << "': data begins at " << e.data_begin
                                      << " but the previous tensor ends at " << expected_begin
                                      << (e.data_begin < expected_begin ? " (overlap)" : " (gap)"));
    expected_begin = e.data_end;
    s.by_name[e.name] = i;
  }
  LLM4DSR_CHECK(expected_begin == s.data_size, "safetensors file " << path << ": tensors cover " << expected_begin
                                                                   << " bytes of data but the data block holds "
                                                                   << s.data_size << " bytes");
}

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

const std::string& SafetensorsFile::path() const { return impl_->path; }

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& e : impl_->entries) out.push_back(e.name);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return impl_->by_name.count(name) > 0; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = impl_->by_name.find(name);
  LLM4DSR_CHECK(it != impl_->by_name.end(), "safetensors file " << impl_->path << " has no tensor '" << name << "'");
  return impl_->entries[it->second];
}

const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const DtypeInfo* d = find_dtype(e.dtype);
  auto options = torch::TensorOptions().dtype(d->dtype);
  if (e.data_end == e.data_begin) return torch::empty(e.shape, options);
  auto* ptr = const_cast<unsigned char*>(impl_->data + e.data_begin);
  if (d->dtype == torch::kBool) {
    for (uint64_t i = 0; i < e.data_end - e.data_begin; ++i)
      LLM4DSR_CHECK(ptr[i] <= 1, "safetensors file " << impl_->path << ", tensor '" << name << "': BOOL byte " << i
                                                     << " is " << int(ptr[i]) << ", expected 0 or 1");
  }
  if (reinterpret_cast<uintptr_t>(ptr) % d->size != 0) {
    torch::Tensor out = torch::empty(e.shape, options);
    std::memcpy(out.data_ptr(), ptr, e.data_end - e.data_begin);
    return out;
  }
  std::shared_ptr<Mapping> keep = impl_->mapping;
  return torch::from_blob(ptr, e.shape, [keep](void*) mutable { keep.reset(); }, options);
}

std::map<std::string, torch::Tensor> load_safetensors(const std::string& path) {
  SafetensorsFile file(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : file.names()) out.emplace(name, file.tensor(name));
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;

  std::vector<torch::Tensor> data;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    LLM4DSR_CHECK(name != "__metadata__", "cannot save a tensor named __metadata__ to " << path);
    LLM4DSR_CHECK(seen.insert(name).second, "duplicate tensor name '" << name << "' when saving " << path);
    LLM4DSR_CHECK(t.defined(), "tensor '" << name << "' is undefined; cannot save it to " << path);
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const std::string dtype = safetensors_dtype_name(c.scalar_type());
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    nlohmann::ordered_json entry;
    entry["dtype"] = dtype;
    entry["shape"] = c.sizes().vec();
    entry["data_offsets"] = {offset, offset + nbytes};
    header[name] = entry;
    offset += nbytes;
    data.push_back(c);
  }
  std::string header_str = header.dump();
  header_str.append((8 - header_str.size() % 8) % 8, ' ');

  internal::AtomicOutput out(path);
  unsigned char len_bytes[8];
  uint64_t n = header_str.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  out.stream().write(reinterpret_cast<const char*>(len_bytes), 8);
  out.stream().write(header_str.data(), static_cast<std::streamsize>(header_str.size()));
  for (const auto& c : data)
    out.stream().write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
  out.commit();
}

std::map<std::string, torch::Tensor> load_safetensors_checkpoint(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  const fs::path index_path = dir / "model.safetensors.index.json";
  const fs::path single = dir / "model.safetensors";
  if (!fs::exists(index_path)) {
    LLM4DSR_CHECK(fs::exists(single), "checkpoint folder " << folder
                                                           << " has neither model.safetensors nor model.safetensors.index.json");
    return load_safetensors(single.string());
  }
  std::ifstream in(index_path);
  LLM4DSR_CHECK(in, "cannot open " << index_path.string());
  nlohmann::json index = nlohmann::json::parse(in, nullptr, false);
  LLM4DSR_CHECK(!index.is_discarded() && index.is_object(), index_path.string() << " is not a JSON object");
  LLM4DSR_CHECK(index.contains("weight_map") && index["weight_map"].is_object(),
                index_path.string() << " has no object 'weight_map'");
  std::map<std::string, std::set<std::string>> shards;  // file -> names
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    LLM4DSR_CHECK(it.value().is_string(), index_path.string() << ": weight_map['" << it.key() << "'] must be a file name");
    const std::string file = it.value().get<std::string>();
    LLM4DSR_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..",
                  index_path.string() << ": weight_map['" << it.key() << "'] = '" << file
                                      << "' must be a file name inside the folder");
    shards[file].insert(it.key());
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& [file, names] : shards) {
    SafetensorsFile shard((dir / file).string());
    for (const auto& name : names)
      LLM4DSR_CHECK(shard.contains(name), index_path.string() << " maps '" << name << "' to " << file
                                                              << " but that shard has no such tensor");
    for (const auto& name : shard.names()) {
      LLM4DSR_CHECK(names.count(name), "shard " << (dir / file).string() << " holds '" << name << "', which "
                                                << index_path.string() << " does not map to it");
      out.emplace(name, shard.tensor(name));
    }
  }
  return out;
}

}  // namespace llm4dsr::io
