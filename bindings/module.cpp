// The extension module: one place that maps llm4dsr::Error to llm4dsr.Error, then one bind_<area>
// function per folder of include/llm4dsr.
#include <pybind11/pybind11.h>

#include <filesystem>
#include <string>

#include <c10/util/Exception.h>

#include "bindings.h"
#include "llm4dsr/error.h"
#include "llm4dsr/runtime.h"

namespace py = pybind11;

namespace {

// A message as valid UTF-8, each byte that is not part of a valid sequence written as \xNN: an error
// can quote a line of a Latin-1 file, and Python would otherwise raise UnicodeDecodeError instead.
std::string valid_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok && n > 1) {  // what Python's decoder refuses too: overlong forms, surrogates, beyond U+10FFFF
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(n == 2 && c < 0xC2) && !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0) &&
           !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90) && c <= 0xF4;
    }
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
      ++i;
    }
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_llm4dsr, m) {
  m.doc() = "llm4dsr: denoising sequential recommendation with a fine-tuned language model";
  m.attr("__version__") = LLM4DSR_VERSION_STRING;

  static py::exception<llm4dsr::Error> error(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const llm4dsr::Error& e) {
      py::set_error(error, valid_utf8(e.what()).c_str());
    }
  });
  // Failures from below our checks, raised inside this module's calls, reach Python as llm4dsr.Error too
  // (local: torch's own functions keep their exception types): a file system refusal names the path,
  // a libtorch error comes without its C++ backtrace.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::filesystem::filesystem_error& e) {
      py::set_error(error, valid_utf8(e.what()).c_str());
    } catch (const c10::Error& e) {
      py::set_error(error, valid_utf8(e.what_without_backtrace()).c_str());
    }
  });

  m.def("set_num_threads", &llm4dsr::set_num_threads, py::arg("n"),
        "Set libtorch's intra-op threads (n <= 0: $LLM4DSR_NUM_THREADS or the number of cores).");
  m.def("num_threads", &llm4dsr::num_threads, "libtorch's current intra-op thread count.");
  m.def("default_num_threads", &llm4dsr::default_num_threads);
  m.def("set_freed_memory_retention", &llm4dsr::set_freed_memory_retention, py::arg("bytes"),
        "Keep up to `bytes` of freed memory in the C heap for reuse instead of returning it to the OS\n"
        "(glibc's M_TRIM_THRESHOLD; M_MMAP_THRESHOLD fixed at 32 MB), so that the activations a forward\n"
        "pass frees layer after layer are not page-faulted in again. Per malloc arena (the main heap, and\n"
        "worker threads' arenas stop shrinking), process-wide and final; bytes <= 0 does nothing. Returns\n"
        "whether glibc accepted it (False without glibc). `import llm4dsr` applies\n"
        "default_freed_memory_retention().");
  m.def("bf16x3_matmul_available", &llm4dsr::bf16x3_matmul_available,
        "Whether fp32 CPU products follow torch.set_float32_matmul_precision('high') as bf16x3 (each fp32\n"
        "factor the sum of two bf16 numbers, three bf16 products accumulated in fp32 on AMX-BF16):\n"
        "a CPU with AMX-BF16 and a libtorch carrying MKL's gemm_bf16bf16f32. Without recorded\n"
        "gradients, from 256 rows on; about 10x fp32's rounding error, 500x less than one bf16 pass.");
  m.def(
      "set_fp32_gemm", [](const std::string& name) { llm4dsr::set_fp32_gemm(llm4dsr::parse_fp32_gemm(name)); },
      py::arg("name"),
      "Which library runs the model's fp32 CPU products (projections and lm_head, with and without\n"
      "gradients): 'aten' (libtorch's own: MKL's sgemm, as transformers gets it), 'onednn' (oneDNN's\n"
      "fp32 GEMM from 4 rows on, and for weights of 4M elements or more at any row count), or 'auto'\n"
      "(oneDNN on x86 CPUs with AVX-512 not made by Intel, where MKL runs its AVX2 code: 2x slower on\n"
      "an AMD EPYC; libtorch's elsewhere). Both are IEEE fp32; results differ in the last bits. The\n"
      "default is $LLM4DSR_FP32_GEMM if set, otherwise 'auto'.");
  m.def(
      "fp32_gemm", [] { return llm4dsr::to_string(llm4dsr::fp32_gemm()); },
      "The library running fp32 CPU products now: 'onednn' or 'aten' (see set_fp32_gemm).");
  m.def("native_bf16_matmul", &llm4dsr::native_bf16_matmul, py::arg("device") = "cpu",
        "Whether bf16 matrix products run on the device's own instructions: on the CPU AVX512-BF16 or\n"
        "AMX-BF16 (with oneDNN on), on CUDA always (as torch.cuda.is_bf16_supported() by default). Without\n"
        "them libtorch emulates bf16 products, several times slower than float32.");
  m.def("auto_dtype", &llm4dsr::auto_dtype, py::arg("device") = "cpu",
        "What dtype='auto' means on `device`: 'bfloat16' where native_bf16_matmul(device), else 'float32'.");
  m.def("default_freed_memory_retention", &llm4dsr::default_freed_memory_retention,
        "$LLM4DSR_RETAIN_FREED_MEMORY in bytes if set (0: off), otherwise 256 MiB.");

  llm4dsr::bindings::bind_data(m);
  llm4dsr::bindings::bind_text(m);
  llm4dsr::bindings::bind_model(m);
  llm4dsr::bindings::bind_instructions(m);
  llm4dsr::bindings::bind_gguf(m);
  llm4dsr::bindings::bind_bpe(m);
  llm4dsr::bindings::bind_train(m);
  llm4dsr::bindings::bind_io(m);
  llm4dsr::bindings::bind_denoise(m);
  llm4dsr::bindings::bind_grounding(m);
  llm4dsr::bindings::bind_denoiser(m);
}
