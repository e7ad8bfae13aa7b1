#include "llm4dsr/model/kv_cache.h"

#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "llm4dsr/error.h"

namespace llm4dsr {

KVCache::KVCache(const ModelConfig& config, int64_t batch_size, int64_t max_length, torch::Dtype dtype,
                 torch::Device device) {
  reserve(config, batch_size, max_length, dtype, device);
}

void KVCache::reserve(const ModelConfig& config, int64_t batch_size, int64_t max_length, torch::Dtype dtype,
                      torch::Device device) {
  LLM4DSR_CHECK(batch_size > 0, "KVCache: batch_size must be > 0, got " << batch_size);
  LLM4DSR_CHECK(max_length > 0, "KVCache: max_length must be > 0, got " << max_length);
  length_ = 0;
  const std::vector<int64_t> shape = {batch_size, config.num_key_value_heads, max_length, config.head_dim};
  const bool same = num_layers_ == config.num_hidden_layers && batch_size_ == batch_size && max_length_ == max_length &&
                    static_cast<int64_t>(keys_.size()) == num_layers_ &&
                    (keys_.empty() || (keys_[0].sizes() == torch::IntArrayRef(shape) && keys_[0].scalar_type() == dtype &&
                                       keys_[0].device() == device)) &&
                    mask_.defined() && mask_.device() == device;
  if (same) return;
  num_layers_ = config.num_hidden_layers;
  batch_size_ = batch_size;
  max_length_ = max_length;
  keys_.clear();
  values_.clear();
  auto options = torch::TensorOptions().dtype(dtype).device(device);
  for (int64_t i = 0; i < num_layers_; ++i) {
    keys_.push_back(torch::zeros(shape, options));
    values_.push_back(torch::zeros(shape, options));
  }
  mask_ = torch::zeros({batch_size, max_length}, torch::TensorOptions().dtype(torch::kInt64).device(device));
}

std::pair<torch::Tensor, torch::Tensor> KVCache::append(int64_t layer, const torch::Tensor& key,
                                                        const torch::Tensor& value) {
  check_layer(layer);
  const int64_t steps = key.size(2);
  LLM4DSR_CHECK(key.size(0) == batch_size_, "KVCache: batch of " << key.size(0) << " rows, cache holds " << batch_size_);
  LLM4DSR_CHECK(length_ + steps <= max_length_, "KVCache: " << length_ << " cached + " << steps
                                                              << " new positions exceed max_length " << max_length_);
  keys_[layer].narrow(2, length_, steps).copy_(key);
  values_[layer].narrow(2, length_, steps).copy_(value);
  return {keys_[layer].narrow(2, 0, length_ + steps), values_[layer].narrow(2, 0, length_ + steps)};
}

std::pair<torch::Tensor, torch::Tensor> KVCache::append_packed(int64_t layer, const torch::Tensor& key,
                                                               const torch::Tensor& value,
                                                               const torch::Tensor& token_index, int64_t steps) {
  check_layer(layer);
  LLM4DSR_CHECK(length_ + steps <= max_length_, "KVCache: " << length_ << " cached + " << steps
                                                              << " new positions exceed max_length " << max_length_);
  const int64_t N = token_index.numel(), heads = keys_[layer].size(1), D = keys_[layer].size(3);
  LLM4DSR_CHECK(key.dim() == 3 && key.size(0) == N && key.size(1) == heads && key.size(2) == D && key.sizes() == value.sizes(),
                "KVCache: packed keys/values must be [" << N << ", " << heads << ", " << D << "], got " << key.sizes()
                                                        << " and " << value.sizes());
  const int64_t B = batch_size_;
  const bool cpu = keys_[layer].device().is_cpu();
  // CPU: one pass over the new slots, a row copy per (token, head) and zeros at the pads (index_put_
  // goes element by element, and zeroing all first writes everything twice). row_of: each slot's
  // packed token, -1 at pads.
  std::vector<int64_t> row_of;
  if (cpu) {
    const auto index_t = token_index.to(torch::kCPU).contiguous();
    const auto* index = index_t.data_ptr<int64_t>();
    row_of.assign(static_cast<size_t>(B * steps), -1);
    for (int64_t n = 0; n < N; ++n) {
      LLM4DSR_CHECK(index[n] >= 0 && index[n] < B * steps,
                    "KVCache: packed token index " << index[n] << " outside [0, " << B * steps << ")");
      row_of[static_cast<size_t>(index[n])] = n;
    }
  }
  for (auto [store, source] : {std::make_pair(&keys_[layer], &key), std::make_pair(&values_[layer], &value)}) {
    auto slots = store->narrow(2, length_, steps);  // [B, H_kv, steps, D]
    const auto src = source->to(store->scalar_type()).contiguous();
    if (cpu) {
      const auto bytes = static_cast<size_t>(D * store->element_size());
      const auto* from = static_cast<const char*>(src.data_ptr());
      auto* to = static_cast<char*>(slots.data_ptr());
      const int64_t s0 = slots.stride(0) * store->element_size(), s1 = slots.stride(1) * store->element_size(),
                    s2 = slots.stride(2) * store->element_size();
      at::parallel_for(0, B * steps, 64, [&](int64_t begin, int64_t end) {
        for (int64_t f = begin; f < end; ++f) {
          const int64_t n = row_of[static_cast<size_t>(f)];
          for (int64_t h = 0; h < heads; ++h) {
            char* slot = to + (f / steps) * s0 + h * s1 + (f % steps) * s2;
            if (n >= 0) std::memcpy(slot, from + (n * heads + h) * static_cast<int64_t>(bytes), bytes);
            else std::memset(slot, 0, bytes);
          }
        }
      });
    } else {
      slots.zero_();
      const auto index = token_index.to(store->device());
      slots.index_put_({index.div(steps, "floor"), torch::indexing::Slice(), index.remainder(steps)}, src);
    }
  }
  return {keys_[layer].narrow(2, 0, length_ + steps), values_[layer].narrow(2, 0, length_ + steps)};
}

torch::Tensor KVCache::append_mask(const torch::Tensor& new_mask) {
  const int64_t steps = new_mask.size(1);
  LLM4DSR_CHECK(new_mask.dim() == 2 && new_mask.size(0) == batch_size_,
                "KVCache: mask must be [" << batch_size_ << ", steps], got " << new_mask.sizes());
  LLM4DSR_CHECK(length_ + steps <= max_length_, "KVCache: " << length_ << " cached + " << steps
                                                              << " new positions exceed max_length " << max_length_);
  mask_.narrow(1, length_, steps).copy_(new_mask);
  return mask_.narrow(1, 0, length_ + steps);
}

void KVCache::check_layer(int64_t layer) const {
  LLM4DSR_CHECK(layer >= 0 && layer < num_layers_, "KVCache: layer " << layer << " out of range [0, " << num_layers_ << ")");
}

torch::Tensor KVCache::mask() const { return mask_.narrow(1, 0, length_); }

torch::Tensor KVCache::keys(int64_t layer) const {
  check_layer(layer);
  return keys_[static_cast<size_t>(layer)].narrow(2, 0, length_);
}

torch::Tensor KVCache::values(int64_t layer) const {
  check_layer(layer);
  return values_[static_cast<size_t>(layer)].narrow(2, 0, length_);
}

void KVCache::advance(int64_t steps) {
  LLM4DSR_CHECK(steps >= 0 && length_ + steps <= max_length_, "KVCache: cannot advance " << steps << " positions from "
                                                                                       << length_ << " (max " << max_length_ << ")");
  length_ += steps;
}

void KVCache::reorder(const torch::Tensor& index) {
  LLM4DSR_CHECK(index.dim() == 1 && index.size(0) == batch_size_,
                "KVCache: reorder index must be [" << batch_size_ << "], got " << index.sizes());
  auto idx = index.to(mask_.device(), torch::kInt64);
  for (auto* store : {&keys_, &values_})
    for (auto& t : *store) {
      auto live = t.narrow(2, 0, length_);
      live.copy_(live.index_select(0, idx));
    }
  auto live = mask_.narrow(1, 0, length_);
  live.copy_(live.index_select(0, idx));
}

void KVCache::assign_rows(const KVCache& source, const torch::Tensor& index) {
  LLM4DSR_CHECK(source.allocated() && allocated(), "KVCache::assign_rows: both caches must be allocated");
  LLM4DSR_CHECK(index.dim() == 1 && index.size(0) == batch_size_,
                "KVCache::assign_rows: index must be [" << batch_size_ << "], got " << index.sizes());
  LLM4DSR_CHECK(source.num_layers_ == num_layers_, "KVCache::assign_rows: source has " << source.num_layers_
                                                                                      << " layers, this cache " << num_layers_);
  LLM4DSR_CHECK(source.length_ <= max_length_, "KVCache::assign_rows: source holds " << source.length_
                                                                                  << " positions, max_length is " << max_length_);
  auto idx = index.to(mask_.device(), torch::kInt64);
  const int64_t n = source.length_;
  for (int64_t l = 0; l < num_layers_; ++l) {
    LLM4DSR_CHECK(source.keys_[l].size(1) == keys_[l].size(1) && source.keys_[l].size(3) == keys_[l].size(3),
                  "KVCache::assign_rows: layer " << l << " head shapes differ");
    keys_[l].narrow(2, 0, n).copy_(source.keys_[l].narrow(2, 0, n).index_select(0, idx));
    values_[l].narrow(2, 0, n).copy_(source.values_[l].narrow(2, 0, n).index_select(0, idx));
  }
  mask_.narrow(1, 0, n).copy_(source.mask_.narrow(1, 0, n).index_select(0, idx));
  length_ = n;
}

}  // namespace llm4dsr
