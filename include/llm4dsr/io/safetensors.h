// Safetensors: the tensor file format of HuggingFace checkpoints and PEFT adapters.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data
// block. Offsets are relative to the data block. Every file is validated before any tensor is made:
// header length (<= 100 MB and inside the file), JSON object, known dtype, non-negative shapes whose
// byte size fits in 64 bits and equals dtype size x element count, and data that tiles the data block
// exactly (sorted by begin: first begin 0, each begin == previous end, last end == data size).
// Any violation throws llm4dsr::Error naming the file and tensor.
//
// Reading memory-maps the file. Tensors returned by SafetensorsFile::tensor() are views into a
// private copy-on-write mapping that the tensor itself keeps alive (the mapping is unmapped when the
// file object and every tensor made from it are gone), so loading costs no copy and writing into a
// returned tensor never changes the file. A tensor whose data is not aligned to its element size (the
// format does not require it) is copied into aligned memory instead.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace llm4dsr::io {

// The dtype names of the format: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
torch::Dtype safetensors_dtype_from_name(const std::string& name);  // throws on unknown names
std::string safetensors_dtype_name(torch::Dtype dtype);              // throws on unsupported dtypes

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // format name, e.g. "BF16"
  std::vector<int64_t> shape;
  uint64_t data_begin = 0;  // relative to the data block
  uint64_t data_end = 0;
};

// One open, validated, memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;

  const std::string& path() const;
  // Tensor names in the order of their data in the file.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;  // throws when absent
  const std::map<std::string, std::string>& metadata() const;

  // A CPU tensor over the mapping (see the file comment); throws when absent.
  torch::Tensor tensor(const std::string& name) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Every tensor of one file, by name.
std::map<std::string, torch::Tensor> load_safetensors(const std::string& path);

// Writes tensors (any device, any layout; copied to contiguous CPU) in the given order, with
// __metadata__ {"format": "pt"} plus `metadata`, the header padded with spaces to a multiple of 8 bytes.
// Written to a temporary file and renamed. Names must be unique and not "__metadata__".
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A checkpoint folder's weights: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` (weight_map: name -> shard file). Every name of the index must be in
// its shard and no shard may hold tensors the index does not list.
std::map<std::string, torch::Tensor> load_safetensors_checkpoint(const std::string& folder);

}  // namespace llm4dsr::io
