#include "model/packed_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/cpu/Utils.h>

#include <atomic>
#include <optional>
#include <string_view>

#include <torch/torch.h>

#include "model/bf16x3_linear.h"
#include "model/onednn_linear.h"

namespace llm4dsr::detail {

namespace {

bool bf16_cpu(const torch::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kBFloat16; }

torch::Tensor rows_of(const torch::Tensor& x) { return x.reshape({-1, x.size(-1)}).contiguous(); }

// Row blocks only between these rows per thread; outside, a product stays one call. Below, blocks are
// too small to pay for the split; from 1,024 rows per thread on, oneDNN spreads these shapes itself
// and the split costs a little (a batch-32 LoRA step 3% slower with it, a batch-8 one 11% faster).
constexpr int64_t kMinRowsPerThread = 256;
constexpr int64_t kMaxRowsPerThread = 1024;


}  // namespace

bool row_blocks_apply(int64_t rows) {
  const int64_t threads = at::get_num_threads();
  return threads >= 2 && !at::in_parallel_region() && rows >= threads * kMinRowsPerThread &&
         rows < threads * kMaxRowsPerThread;
}

torch::Tensor by_row_blocks(int64_t rows, int64_t out_features, torch::TensorOptions options,
                            const std::function<void(int64_t first_row, int64_t n, torch::Tensor out_rows)>& fill) {
  torch::Tensor out = torch::empty({rows, out_features}, options);
  if (!row_blocks_apply(rows)) {
    fill(0, rows, out);
    return out;
  }
  const int64_t threads = at::get_num_threads();
  // The pool's threads do not inherit the caller's InferenceMode / grad mode; without them, the
  // caller's inference tensors could not be written there.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state(caller_state);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first = rows * t / threads, n = rows * (t + 1) / threads - first;
      fill(first, n, out.narrow(0, first, n));
    }
  });
  return out;
}

bool cpu_has(const char* capability) {
  const auto caps = at::cpu::get_cpu_capabilities();
  const auto it = caps.find(capability);
  return it != caps.end() && it->second.isBool() && it->second.toBool();
}

bool native_bf16_gemm() {
  static const bool yes =
      at::globalContext().userEnabledMkldnn() && (cpu_has("avx512_bf16") || cpu_has("amx_bf16"));
  return yes;
}

bool packed_product_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  if (at::GradMode::is_enabled() || onednn_failed()) return false;
  if (!bf16_cpu(x) || !bf16_cpu(weight) || weight.dim() != 2 || !native_bf16_gemm()) return false;
  return onednn_ops().present();
}

torch::Tensor PackedWeight::get(const torch::Tensor& weight) {
  if (weight.is_inference() || weight.is_mkldnn()) return {};  // no version counter to watch
  const c10::StorageImpl* storage = weight.storage().unsafeGetStorageImpl();
  const void* data = weight.data_ptr();
  const uint32_t version = weight._version();
  std::lock_guard<std::mutex> lock(mutex_);
  // The storage compared through a weak reference: a freed weight's address may be reused by a new one.
  if (packed_.defined() && storage_.lock().get() == storage && data_ == data && version_ == version) return packed_;
  packed_ = torch::Tensor();
  if (weight.scalar_type() == torch::kFloat32) {
    packed_ = bf16x3_weight(weight);
  } else {
    try {
      torch::NoGradGuard no_grad;
      packed_ = onednn_ops().reorder->call(weight.contiguous(), std::nullopt);
    } catch (const c10::Error&) {
      mark_onednn_failed();
      return {};
    }
  }
  storage_ = weight.storage().getWeakStorageImpl();
  data_ = data;
  version_ = version;
  return packed_;
}

torch::Tensor PackedWeight::for_product(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!enabled_.load() || !(packed_product_applies(x, weight) || bf16x3_product_applies(x, weight))) return weight;
  torch::Tensor packed = get(weight);
  return packed.defined() ? packed : weight;
}

void PackedWeight::set_enabled(bool enabled) {
  enabled_ = enabled;
  if (!enabled) clear();
}

bool PackedWeight::holds_copy() {
  std::lock_guard<std::mutex> lock(mutex_);
  return packed_.defined();
}

void PackedWeight::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  packed_ = torch::Tensor();
  storage_ = c10::weak_intrusive_ptr<c10::StorageImpl>(c10::intrusive_ptr<c10::StorageImpl>());
  data_ = nullptr;
}

torch::Tensor packed_linear(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& bias,
                            int64_t out_features) {
  const torch::Tensor x2 = rows_of(x);
  auto product = [&](const torch::Tensor& rows) { return onednn_rows_product(rows, packed, bias, torch::Tensor()); };
  // oneDNN's linear has no out= form: blocks are copied into place, so one call when there is no split.
  if (!row_blocks_apply(x2.size(0))) return product(x2).view(sizes_with_last(x, out_features));
  return by_row_blocks(x2.size(0), out_features, x2.options(),
                       [&](int64_t first, int64_t n, torch::Tensor out) { out.copy_(product(x2.narrow(0, first, n))); })
      .view(sizes_with_last(x, out_features));
}

torch::Tensor packed_linear_add(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& residual) {
  const torch::Tensor x2 = rows_of(x);
  const torch::Tensor r2 = residual.reshape({-1, residual.size(-1)}).contiguous();
  auto product = [&](int64_t first, int64_t n) {
    return onednn_rows_product(x2.narrow(0, first, n), packed, torch::Tensor(), r2.narrow(0, first, n));
  };
  if (!row_blocks_apply(x2.size(0))) return product(0, x2.size(0)).view(residual.sizes());
  return by_row_blocks(x2.size(0), r2.size(1), r2.options(),
                       [&](int64_t first, int64_t n, torch::Tensor out) { out.copy_(product(first, n)); })
      .view(residual.sizes());
}

torch::Tensor fused_swiglu(const torch::Tensor& x, const torch::Tensor& gate_weight, const torch::Tensor& up_weight,
                           int64_t intermediate_size) {
  if (!packed_product_applies(x, gate_weight) || !(bf16_cpu(up_weight) || up_weight.is_mkldnn())) return {};
  const OneDnnOps& ops = onednn_ops();
  try {
    const torch::Tensor x2 = rows_of(x);
    const torch::Tensor gate =
        ops.unary->call(x2, gate_weight, std::nullopt, "swish", c10::List<std::optional<at::Scalar>>(), std::nullopt);
    return ops.binary->call(x2, gate, up_weight, std::nullopt, "mul").view(sizes_with_last(x, intermediate_size));
  } catch (const c10::Error&) {
    mark_onednn_failed();
    return {};
  }
}

}  // namespace llm4dsr::detail
