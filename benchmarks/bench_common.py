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


class MatmulReference:
    """torch.matmul on a forward's GEMM shapes, in `dtype`: the projections at `rows` rows, lm_head at
    `logit_rows` (default `rows`). A call times each shape and returns the seconds a forward made of
    nothing but these products would take (each shape's time times how often a forward runs it).
    With min_flops_per_shape, each shape is repeated until it does at least that much work and its mean
    time is used (one product at a small batch lasts tens of microseconds, where a single interruption
    swamps it)."""

    def __init__(self, config, dtype, rows: int, logit_rows: int | None = None, min_flops_per_shape: float = 0.0,
                 device: str = "cpu"):
        import torch

        self.device = device
        g = torch.Generator().manual_seed(0)
        shapes = gemm_shapes(config)
        self.items, self.flops = [], 0.0
        for idx, (k, n, count) in enumerate(shapes):
            m = logit_rows if logit_rows is not None and idx == len(shapes) - 1 else rows
            a = torch.randn(m, k, generator=g).to(device, dtype)
            w = torch.randn(n, k, generator=g).to(device, dtype)  # stored [out, in] like a Linear weight
            reps = max(1, -(-int(min_flops_per_shape) // int(2 * m * k * n)))
            self.items.append((a, w, count, reps))
            self.flops += 2.0 * m * k * n * count

    def __call__(self) -> float:
        import torch

        total = 0.0
        with torch.inference_mode():
            for a, w, count, reps in self.items:
                synchronize(self.device)
                t0 = time.perf_counter()
                for _ in range(reps):
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
