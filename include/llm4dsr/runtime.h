// Process-wide runtime settings: libtorch's intra-op thread count, how much freed memory the C heap
// keeps for reuse, which library runs fp32 products, and whether fp32 products can run as bf16x3.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace llm4dsr {

// Sets libtorch's intra-op threads. n <= 0 means "the default": $LLM4DSR_NUM_THREADS if set,
// otherwise the number of hardware threads. Called once when the library is first used (and at
// Python import); call again to override.
void set_num_threads(int n);
int num_threads();

// The default set_num_threads(0) would pick (reads the environment variable each time).
int default_num_threads();

// Keeps up to `bytes` of freed memory in the heap for reuse instead of handing it back to the OS.
//
// Why: glibc trims the heap as soon as its free top exceeds M_TRIM_THRESHOLD, which it keeps at
// twice the largest freed block it has seen (a few tens of MB). A forward pass allocates and frees
// activations of that size in every layer, so the heap shrinks and grows again layer after layer
// and each new page costs a page fault: 50,000 to 180,000 of them per bf16 forward of SmolLM2 at
// batch 8-32 on two cores, a quarter of the batch-8 forward's time. Retaining the freed memory takes
// them to zero (the resident size stays at the pass's peak instead).
//
// With glibc this sets M_TRIM_THRESHOLD to `bytes` and fixes M_MMAP_THRESHOLD at 32 MB, the bound
// glibc's own adjustment stops at (blocks from 32 MB up are still mapped and unmapped one by one).
// glibc applies the trim threshold to each malloc arena on its own: the main heap keeps up to `bytes`
// of free memory, and the arenas of worker threads (at most 64 MB each) stop shrinking. Setting these
// ends glibc's automatic adjustment for the rest of the process; there is no way back. bytes <= 0
// leaves the allocator untouched. Returns whether glibc accepted the values (false without glibc; with
// another allocator preloaded, glibc's mallopt still accepts them and nothing changes). Python's
// `import llm4dsr` applies the default below.
bool set_freed_memory_retention(int64_t bytes);

// $LLM4DSR_RETAIN_FREED_MEMORY in bytes if set (0 turns the retention off), otherwise 256 MiB.
int64_t default_freed_memory_retention();

// Whether fp32 products on the CPU follow torch's float32 matmul precision "high"
// (torch.set_float32_matmul_precision("high") in Python; at::globalContext().setFloat32MatmulPrecision
// in C++) by running as bf16x3: each fp32 factor taken as the sum of two bf16 numbers, three bf16
// products accumulated in fp32 on the machine's bf16 matrix units. True on CPUs with AMX-BF16
// (AVX512-BF16 alone is too slow for three products) and a libtorch that carries MKL's
// gemm_bf16bf16f32 (the x86-64 Linux wheels). The products keep about 16 significant bits per factor:
// about 10x fp32's rounding error, 500x less than one bf16 pass. Only without recorded gradients
// (forward, scoring, generation) and outside autocast, from 256 rows on; the split weights take 1.5x
// the fp32 weights' memory. "highest", PyTorch's default, is never affected.
bool bf16x3_matmul_available();

// Whether bf16 matrix products run on the device's own instructions. `device` is a torch device name
// ("cpu", "cuda", "cuda:1"). On the CPU: AVX512-BF16 or AMX-BF16, with libtorch's oneDNN enabled (the
// products our bf16 CPU path and libtorch's own bf16 matmul run on). On CUDA: true, as
// torch.cuda.is_bf16_supported() answers by default (GPUs before compute capability 8.0 emulate bf16:
// ask for float32 there). Other devices: false.
// Why it matters: without those instructions libtorch computes bf16 products through fp32 conversions,
// several times slower than fp32 itself (SmolLM2's 576 x 1536 product at 1,024 rows on an AVX2-only
// AMD EPYC (Zen 3), two threads: 18 GFLOP/s in bf16 against 146 in fp32), so "bf16 to go faster"
// backfires there.
bool native_bf16_matmul(std::string_view device = "cpu");

// The compute dtype that the dtype name "auto" stands for on `device`: "bfloat16" where
// native_bf16_matmul(device), "float32" elsewhere. The Python API and the CLI accept "auto" wherever
// they take a model's dtype.
std::string auto_dtype(std::string_view device = "cpu");

// Which library runs the model's fp32 matrix products on the CPU (the projections and the lm_head, with
// and without gradients; attention stays libtorch's).
//   kATen    libtorch's own (MKL's sgemm in the x86-64 wheels), as transformers gets it.
//   kOneDnn  oneDNN's fp32 GEMM (libtorch's bundled oneDNN), from 4 rows on, and at any row count for
//            weights of 4M elements or more (the lm_head); fewer rows stay on libtorch's.
//   kAuto    kOneDnn on x86 CPUs with AVX-512 whose vendor is not Intel, kATen elsewhere.
// Why: on CPUs not made by Intel, MKL runs its AVX2 code even where AVX-512 is there; on an AMD EPYC
// (Zen 5) oneDNN's fp32 GEMM ran SmolLM2's products 2.0-2.3x faster (430-480 against 205-215 GFLOP/s
// on two threads). Both are IEEE fp32 with the same order of rounding error; results differ from one
// setting to the other in the last bits (a different summation order). The default is
// $LLM4DSR_FP32_GEMM (auto, onednn or aten) if set, otherwise kAuto. Asking for kOneDnn where
// libtorch has no oneDNN linear ops raises llm4dsr::Error; while oneDNN is switched off in torch
// (torch.backends.mkldnn.enabled = False) products take libtorch's path whatever the setting.
enum class Fp32Gemm { kAuto, kOneDnn, kATen };
void set_fp32_gemm(Fp32Gemm gemm);
// The library in use, kAuto resolved: kOneDnn or kATen.
Fp32Gemm fp32_gemm();
std::string to_string(Fp32Gemm gemm);  // "auto", "onednn", "aten"
Fp32Gemm parse_fp32_gemm(std::string_view name);

}  // namespace llm4dsr
