// KVCache: keys and values of every attention layer for incremental decoding.
//
// Storage is allocated once, for `max_length` positions, when the cache is made (or on reserve()):
// decoding a token writes into the preallocated slices and allocates nothing per step. The cache also
// keeps the attention mask of every position seen so far, so a decoding step only passes the mask of
// its new tokens (left-padded prompts keep their pads masked for the rest of the generation).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "llm4dsr/model/config.h"

namespace llm4dsr {

class KVCache {
 public:
  KVCache() = default;
  // Allocates [batch, num_key_value_heads, max_length, head_dim] keys and values per layer.
  KVCache(const ModelConfig& config, int64_t batch_size, int64_t max_length, torch::Dtype dtype,
          torch::Device device);

  // (Re)allocates storage when the shape, dtype or device differs; always resets the length.
  void reserve(const ModelConfig& config, int64_t batch_size, int64_t max_length, torch::Dtype dtype,
               torch::Device device);
  // Forgets the cached positions, keeping the storage.
  void reset() { length_ = 0; }

  bool allocated() const { return mask_.defined(); }
  int64_t length() const { return length_; }
  int64_t max_length() const { return max_length_; }
  int64_t batch_size() const { return batch_size_; }
  int64_t num_layers() const { return num_layers_; }

  // Writes `steps` new positions' keys/values [B, H_kv, steps, D] for `layer` at [length, length+steps)
  // and returns views of all cached keys and values [B, H_kv, length+steps, D]. The length itself only
  // advances on advance(), after every layer has appended.
  std::pair<torch::Tensor, torch::Tensor> append(int64_t layer, const torch::Tensor& key, const torch::Tensor& value);
  // append for a batch whose pads were not computed: key/value [N, H_kv, D] are the new positions
  // with flat index b * steps + t given by token_index (int64 [N]); every other new slot is zeroed.
  std::pair<torch::Tensor, torch::Tensor> append_packed(int64_t layer, const torch::Tensor& key,
                                                        const torch::Tensor& value, const torch::Tensor& token_index,
                                                        int64_t steps);
  // Records the new positions' mask ([B, steps], 1 = token, 0 = pad) and returns the mask of every
  // position [B, length+steps] (int64). Called once per forward, before the layers.
  torch::Tensor append_mask(const torch::Tensor& new_mask);
  // The mask of the cached positions [B, length].
  torch::Tensor mask() const;
  // Views of `layer`'s cached keys / values [B, H_kv, length, D] (the storage, not copies): for
  // callers that read a prefix out to seed other caches.
  torch::Tensor keys(int64_t layer) const;
  torch::Tensor values(int64_t layer) const;
  void advance(int64_t steps);

  // Reorders the batch rows in place (beam search): row i becomes old row index[i].
  void reorder(const torch::Tensor& index);
  // Row i of this cache becomes row index[i] of `source` (every cached position, keys, values and
  // mask), and the length becomes source's: one prefill of B prompts fans out to B x beams rows
  // without running the prompts again (the scorer fans its shared prompt head out to every row of a
  // micro-batch the same way). Storage must already hold index.size(0) rows and
  // source.length() positions; the layer count and head shapes must match.
  void assign_rows(const KVCache& source, const torch::Tensor& index);

 private:
  void check_layer(int64_t layer) const;  // throws Error for a layer outside [0, num_layers)

  std::vector<torch::Tensor> keys_;
  std::vector<torch::Tensor> values_;
  torch::Tensor mask_;  // [B, max_length] int64
  int64_t num_layers_ = 0;
  int64_t batch_size_ = 0;
  int64_t max_length_ = 0;
  int64_t length_ = 0;
};

}  // namespace llm4dsr
