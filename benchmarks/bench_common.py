"""Pieces shared by the benchmarks: the model's GEMM shapes and the plain-matmul reference the
"% of matmul" figures divide by, and the process's peak memory. Standard library only at import time
(bench_smollm2's llama.cpp workers run in an environment without torch)."""
from __future__ import annotations

import time


def gemm_shapes(config):
    """(in, out, count per forward) of every projection; lm_head last."""
    h, d = config.hidden_size, config.head_dim
    q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
    i, L = config.intermediate_size, config.num_hidden_layers
    return [(h, q, L), (h, kv, 2 * L), (q, h, L), (h, i, 2 * L), (i, h, L), (h, config.vocab_size, 1)]


def matmul_params(config) -> int:
    return sum(a * b * n for a, b, n in gemm_shapes(config))


def reference_library(dtype, device: str = "cpu") -> str:
    """The GEMM library the reference times: the one llm4dsr runs this dtype's products with. "onednn" for
    fp32 on a CPU where llm4dsr.fp32_gemm() says oneDNN (x86 CPUs with AVX-512 not made by Intel, where
    MKL's sgemm, torch.matmul's, is about half as fast), "torch" (torch.matmul) otherwise."""
    import torch

    import llm4dsr

    if device == "cpu" and dtype == torch.float32 and llm4dsr.fp32_gemm() == "onednn":
        return "onednn"
    return "torch"


class MatmulReference:
    """A plain product on a forward's GEMM shapes, in `dtype`: the projections at `rows` rows, lm_head at
    `logit_rows` (default `rows`). A call times each shape and returns the seconds a forward made of
    nothing but these products would take (each shape's time times how often a forward runs it).
    Each shape runs as many times as a forward runs it, or more with min_flops_per_shape, until it does
    at least that much work, and its mean time is used (one product at a small batch lasts tens of
    microseconds, where a single interruption swamps it). The product is torch.matmul, or oneDNN's fp32 linear where llm4dsr runs fp32 products
    through it (reference_library), so that "% of matmul" compares with the GEMM ours actually calls.

    On the CPU each product runs in row blocks of at most OUTPUT_BLOCK_BYTES of output: below glibc's
    mmap threshold (32 MB, fixed by llm4dsr's freed-memory retention), so the heap hands each block the
    last one's memory. One product into a fresh [4096, 49152] lm_head output instead maps and faults in
    800 MB (fp32) per call: a quarter of that product's time on an idle machine (bf16 640 against 850
    GFLOP/s, fp32 oneDNN 320 against 395), and after a training step had churned memory, rounds of the
    same reference ranged 3.5-9.5 s at batch 32. The reference is the GEMMs' rate, not the kernel's
    page faults."""

    OUTPUT_BLOCK_BYTES = 24 << 20

    def __init__(self, config, dtype, rows: int, logit_rows: int | None = None, min_flops_per_shape: float = 0.0,
                 device: str = "cpu"):
        import torch

        self.device = device
        self.library = reference_library(dtype, device)
        g = torch.Generator().manual_seed(0)
        shapes = gemm_shapes(config)
        self.items, self.flops = [], 0.0
        for idx, (k, n, count) in enumerate(shapes):
            m = logit_rows if logit_rows is not None and idx == len(shapes) - 1 else rows
            a = torch.randn(m, k, generator=g).to(device, dtype)
            w = torch.randn(n, k, generator=g).to(device, dtype)  # stored [out, in] like a Linear weight
            # Each shape as often as a forward runs it (at least): timed once and multiplied by its count,
            # one interruption of a 6 ms product counted 30 or 60 times swung batch-32 rounds by 2.5x.
            reps = max(count, -(-int(min_flops_per_shape) // int(2 * m * k * n)))
            block = m if device != "cpu" else max(1, self.OUTPUT_BLOCK_BYTES // (n * a.element_size()))
            self.items.append((list(a.split(block)), w, count, reps))
            self.flops += 2.0 * m * k * n * count

    def __call__(self) -> float:
        import torch

        total = 0.0
        with torch.inference_mode():
            onednn = torch.ops.mkldnn._linear_pointwise if self.library == "onednn" else None
            for blocks, w, count, reps in self.items:
                synchronize(self.device)
                t0 = time.perf_counter()
                for _ in range(reps):
                    for a in blocks:
                        if onednn is not None:
                            onednn(a, w, None, "none", [], "")
                        else:
                            torch.matmul(a, w.t())
                synchronize(self.device)
                total += (time.perf_counter() - t0) / reps * count
        return total

    def gflops(self, seconds: float) -> float:
        return self.flops / seconds / 1e9


def synchronize(device: str) -> None:
    """Waits for the GPU's queued work (a no-op on the CPU), so that a host clock times the work itself."""
    if device != "cpu":
        import torch

        torch.cuda.synchronize(torch.device(device))


def memory_mb() -> dict:
    """VmRSS and VmHWM (peak resident set) of this process, in MB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) / 1024.0
    return out
