"""Process-wide runtime settings: intra-op threads and freed-memory retention."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import llm4dsr

# Eight 20 MB blocks filled and freed: how much of them the C heap still holds afterwards (mallinfo2's
# arena growth), and the minor page faults per round over three more rounds after five warm-up rounds.
# 40,960 pages pass through each round; memory handed back to the OS is faulted in again.
ROUNDS = """
import ctypes, resource, torch, llm4dsr
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def one_round():
    blocks = [torch.empty(5 << 20).fill_(1.0) for _ in range(8)]
    del blocks
heap_before = libc.mallinfo2().arena
one_round()
held_mb = (libc.mallinfo2().arena - heap_before) >> 20
for _ in range(4):
    one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    one_round()
print(held_mb, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def run_python(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_num_threads_setting(monkeypatch):
    monkeypatch.delenv("LLM4DSR_NUM_THREADS", raising=False)
    llm4dsr.set_num_threads(1)
    assert llm4dsr.num_threads() == 1
    llm4dsr.set_num_threads(0)
    assert llm4dsr.num_threads() == llm4dsr.default_num_threads() == os.cpu_count()
    out = run_python("import llm4dsr, torch; print(torch.get_num_threads())", LLM4DSR_NUM_THREADS="1")
    assert out.stdout.strip() == "1", out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_stays_in_the_heap_and_is_reused():
    retained = run_python(ROUNDS, LLM4DSR_RETAIN_FREED_MEMORY=str(256 << 20))
    released = run_python(ROUNDS, LLM4DSR_RETAIN_FREED_MEMORY="0")
    assert retained.returncode == 0 and released.returncode == 0, retained.stderr + released.stderr
    held_on, faults_on = map(float, retained.stdout.split())
    held_off, _ = map(float, released.stdout.split())
    # On (import llm4dsr applied it): the 160 MB freed stay in the heap and are reused in place.
    assert held_on >= 150, retained.stdout
    assert faults_on < 0.1 * 40960, retained.stdout
    # Off: glibc hands them back (trimmed, or mapped and unmapped block by block).
    assert held_off < 100, released.stdout


def test_freed_memory_retention_setting():
    assert llm4dsr.set_freed_memory_retention(0) is False  # nothing to do
    out = run_python("import llm4dsr; print(llm4dsr.default_freed_memory_retention())",
                     LLM4DSR_RETAIN_FREED_MEMORY="")
    assert out.stdout.strip() == str(256 << 20), out.stderr
    bad = run_python("import llm4dsr", LLM4DSR_RETAIN_FREED_MEMORY="lots")
    assert bad.returncode != 0 and "LLM4DSR_RETAIN_FREED_MEMORY" in bad.stderr and "'lots'" in bad.stderr


def test_cli_float32_matmul_precision_sets_torchs_switch(capsys):
    import torch

    from llm4dsr import cli

    previous = torch.get_float32_matmul_precision()
    try:
        assert cli.main(["--float32-matmul-precision", "high", "stats", "--data", "synthetic:users=5,items=20"]) == 0
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.mkldnn.matmul.fp32_precision == "tf32"  # what our products read
    finally:
        torch.set_float32_matmul_precision(previous)
    with pytest.raises(SystemExit):
        cli.main(["--float32-matmul-precision", "fast", "stats", "--data", "synthetic"])


def test_auto_dtype_follows_the_cpus_bf16_instructions():
    import torch

    # torch's own reading of the CPU (cpuinfo), apart from the library's rule.
    caps = torch._C._cpu._get_cpu_capability()
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16")) and torch.backends.mkldnn.is_available()
    assert llm4dsr.native_bf16_matmul() is native and llm4dsr.native_bf16_matmul("cpu") is native
    assert llm4dsr.auto_dtype("cpu") == ("bfloat16" if native else "float32")
    assert llm4dsr.auto_dtype("cuda") == llm4dsr.auto_dtype("cuda:1") == "bfloat16"
    assert llm4dsr.auto_dtype("meta") == "float32"
    model = llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", 64), dtype="auto", seed=1)
    assert model.dtype == llm4dsr.auto_dtype()
    model.to("cpu", "float32")
    assert model.dtype == "float32"
    model.to("cpu", "auto")
    assert model.dtype == llm4dsr.auto_dtype()
    with pytest.raises(llm4dsr.Error, match="unknown dtype 'fast'.*expected auto, float32"):
        llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", 64), dtype="fast")


def test_cli_resolves_dtype_auto_and_warns_about_emulated_bf16(capsys):
    import argparse

    from llm4dsr import cli

    args = argparse.Namespace(device="cpu", dtype="auto")
    cli._resolve_dtype(args)
    assert args.dtype == llm4dsr.auto_dtype("cpu")
    assert capsys.readouterr().err == ""  # auto never picks an emulated dtype
    for asked in (argparse.Namespace(device="cpu", dtype="bfloat16"),
                  argparse.Namespace(device="cpu", dtype="float32", bf16=True)):
        cli._resolve_dtype(asked)
        warned = "bf16 products are emulated" in capsys.readouterr().err
        assert warned is not llm4dsr.native_bf16_matmul("cpu")
    cli._resolve_dtype(argparse.Namespace(device="cpu", dtype="float32"))
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):  # argparse's own refusal names the choices
        cli.main(["finetune", "--data", "synthetic", "--base", "smollm2-135m-instruct", "--out", "x", "--dtype", "float8"])
