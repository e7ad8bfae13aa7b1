"""SmolLM2-135M-Instruct on CPU: llm4dsr vs transformers vs llama.cpp, on the same GGUF file.

Engines, each in its own process (so that its peak memory is its own):
  ours-fp32, ours-bf16   llm4dsr.LlamaModel.from_pretrained(GGUF, dtype=...): Q4_1 dequantised at load.
  hf-fp32, hf-bf16       transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=...): its own
                         dequantisation of the same file (bit-identical weights; tests/python/test_smollm2.py).
  llama.cpp              llama-cpp-python's low-level API on the Q4_1 file as it is (quantised matmuls).
                         It lives in its own virtual environment, build/bench-venv (no torch there), made by
                         --setup-llama-cpp: `pip install llama-cpp-python` compiles llama.cpp from source with
                         the system cmake/gcc (CMAKE_ARGS=-DGGML_NATIVE=ON; 10+ minutes on two cores). When it
                         is missing or fails to import, the table says so and why.

  *-fp32-high            the same fp32 engines after torch.set_float32_matmul_precision("high"): ours then
                         runs its fp32 products of 256 rows or more as bf16x3 (each factor the sum of two bf16
                         numbers, on AMX-BF16; src/model/bf16x3_linear.h), transformers gets
                         what PyTorch makes of "high" on a CPU (oneDNN's TF32 mode: IEEE fp32 without TF32 units).

Figures (all engines get the same token ids, made by our tokenizer from the synthetic dataset's prompts):
  pp B      prompt processing: tokens/s of one forward over B prompts of --prompt-len tokens, logits of the
            last position only (ours: positions=[-1]; transformers: logits_to_keep=1, use_cache=False;
            llama.cpp: one llama_decode of B sequences with the output flag on each last token, a cleared
            KV cache, default n_batch 2048 / n_ubatch 512).
  decode    tokens/s of greedy decoding, batch 1, --new-tokens tokens after the first prompt, with a KV cache
            and no stop token: (time of prompt + N new tokens - time of prompt + 1 new token) / (N - 1).
            Ours: LlamaModel.generate_greedy; transformers: generate(do_sample=False, min_new_tokens=N);
            llama.cpp: llama_decode of one token per step, argmax over the logits in NumPy.
  memory    VmHWM (peak resident set) of the engine's process at the end, and its RSS right after loading.

Every engine runs with the same --threads (default: all cores) and OMP_WAIT_POLICY (default PASSIVE:
with OpenMP's default spinning, a thread that waits at a barrier for a thread another process preempted
burns the core that thread needs, and on a busy two-core machine runs of small ops such as decoding took
up to ten times longer, at random). The engines stay loaded and take turns:
within each repeat the engines run one after another, so load from other processes falls on all of them
alike, and each figure is the best (shortest) of --repeats timed runs (at most 2 for batches >= 32) after
one untimed warm-up call: on a machine shared with other work, a run that another process interrupted
only adds time, so the shortest run is the closest to what the engine itself needs. The ratios
ours/transformers pair equal dtypes; ours/llama.cpp sets each of ours against the one llama.cpp run.
A sanity line reports, per engine, how many of the decoded tokens equal ours-fp32's.

Targets it is judged by: ours >= 1.5x transformers and >= 1.0x llama.cpp on prompt processing at batch >= 8.

    .venv/bin/python benchmarks/bench_smollm2.py [--batches 1 8 32] [--prompt-len 128] [--new-tokens 64]
        [--engines ours-fp32 ours-fp32-high ours-bf16 hf-fp32 hf-fp32-high hf-bf16 llama.cpp] [--repeats 3] [--threads 2] [--json out.json]
    .venv/bin/python benchmarks/bench_smollm2.py --setup-llama-cpp     # builds build/bench-venv first
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from bench_common import memory_mb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_VENV = os.path.join(REPO, "build", "bench-venv")
BENCH_PYTHON = os.path.join(BENCH_VENV, "bin", "python")
ENGINES = ["ours-fp32", "ours-fp32-high", "ours-bf16", "hf-fp32", "hf-fp32-high", "hf-bf16", "llama.cpp"]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ----------------------------------------------------------------------------------------------------
# Worker side: one engine per process, driven by JSON lines on stdin, answering JSON lines on stdout.
# ----------------------------------------------------------------------------------------------------

class OursEngine:
    def __init__(self, gguf, dtype, threads, device="cpu"):
        import numpy as np
        import torch

        import llm4dsr

        torch.set_num_threads(threads)
        llm4dsr.set_num_threads(threads)
        self.np = np
        self.model = llm4dsr.LlamaModel.from_pretrained(gguf, device=device, dtype=dtype)
        self.model.eval()
        self.version = llm4dsr.__version__

    def prompt_processing(self, rows):
        # The logits come back to the host as a CPU tensor: on a GPU that waits for the device's work.
        self.model.logits(self.np.asarray(rows, dtype=self.np.int64), positions=[-1])

    def generate(self, prompt, new_tokens):
        return self.model.generate_greedy([prompt], max_new_tokens=new_tokens, stop_token_ids=[]).sequences[0]


class HFEngine:
    def __init__(self, gguf, dtype, threads, device="cpu"):
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch_dtype).to(device).eval()
        self.device = device
        self.version = transformers.__version__

    def prompt_processing(self, rows):
        with self.torch.inference_mode():
            # .cpu(): the host waits for the device's work, as ours does
            self.model(input_ids=self.torch.tensor(rows, device=self.device), logits_to_keep=1, use_cache=False).logits.cpu()

    def generate(self, prompt, new_tokens):
        x = self.torch.tensor([prompt], device=self.device)
        with self.torch.inference_mode():
            out = self.model.generate(x, attention_mask=self.torch.ones_like(x), do_sample=False,
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=2)
        return out[0, len(prompt):].tolist()


class LlamaCppEngine:
    def __init__(self, gguf, threads, max_batch, max_len, extra_buffers):
        import ctypes

        import llama_cpp
        import numpy as np

        self.ll, self.np, self.ctypes = llama_cpp, np, ctypes
        llama_cpp.llama_backend_init()
        self._quiet = llama_cpp.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp holds the pointer
        llama_cpp.llama_log_set(self._quiet, ctypes.c_void_p(0))
        mp = llama_cpp.llama_model_default_params()
        # Extra buffer types are where llama.cpp repacks weights for AMX (this file's Q4_1 tensors) or other
        # repacked kernels; off, every matmul runs its plain AVX-512/AVX2 kernels on the file's layout.
        mp.use_extra_bufts = extra_buffers
        self.model = llama_cpp.llama_model_load_from_file(gguf.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        cp = llama_cpp.llama_context_default_params()
        cp.n_seq_max = max_batch
        cp.n_ctx = max_batch * max_len
        cp.n_threads = threads
        cp.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, max_batch)
        self.version = llama_cpp.__version__
        self.system_info = llama_cpp.llama_print_system_info().decode()
        # A crash in the first computation (see --no-llama-extra-buffers) shows before the engine says ready.
        self.generate([1, 2, 3, 4], 2)

    def _clear(self):
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)

    def _decode(self, tokens):
        """tokens: [(token, pos, seq, wants_logits)], submitted in chunks of n_batch like llama.cpp's tools."""
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            b = self.batch
            b.n_tokens = len(chunk)
            for i, (tok, pos, seq, out) in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = out
            rc = self.ll.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")

    def prompt_processing(self, rows):
        self._clear()
        self._decode([(t, p, s, p == len(r) - 1) for s, r in enumerate(rows) for p, t in enumerate(r)])

    def _argmax_last(self):
        ptr = self.ll.llama_get_logits_ith(self.ctx, -1)
        return int(self.np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def generate(self, prompt, new_tokens):
        self._clear()
        self._decode([(t, p, 0, p == len(prompt) - 1) for p, t in enumerate(prompt)])
        out = [self._argmax_last()]
        for k in range(1, new_tokens):
            self._decode([(out[-1], len(prompt) + k - 1, 0, True)])
            out.append(self._argmax_last())
        return out


def worker(args) -> int:
    t0 = time.perf_counter()
    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)
    max_batch = max(args.batches)
    try:
        dtype = "float32" if "-fp32" in args.worker else "bfloat16"
        if args.worker.endswith("-high"):
            import torch

            # The same switch for both engines: torch's own float32 matmul precision.
            torch.set_float32_matmul_precision("high")
        if args.worker.startswith("ours-"):
            engine = OursEngine(args.gguf, dtype, args.threads, args.device)
        elif args.worker.startswith("hf-"):
            engine = HFEngine(args.gguf, dtype, args.threads, args.device)
        else:
            engine = LlamaCppEngine(args.gguf, args.threads, max_batch, args.prompt_len + args.new_tokens + 8,
                                    extra_buffers=not args.no_llama_extra_buffers)
    except Exception as e:  # reported in the table instead of ending the whole run
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 0
    hello = {"ready": True, "load_seconds": time.perf_counter() - t0, "version": engine.version,
             "rss_after_load_mb": memory_mb()["VmRSS"]}
    if hasattr(engine, "system_info"):
        hello["system_info"] = engine.system_info
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "pp":
                rows = prompts[: cmd["batch"]]
                t = time.perf_counter()
                engine.prompt_processing(rows)
                reply = {"seconds": time.perf_counter() - t}
            elif op == "gen":
                t = time.perf_counter()
                ids = engine.generate(prompts[0], cmd["new_tokens"])
                reply = {"seconds": time.perf_counter() - t, "ids": ids}
            elif op == "mem":
                m = memory_mb()
                import resource

                reply = {"peak_rss_mb": m["VmHWM"], "rss_mb": m["VmRSS"],
                         "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
                if args.device != "cpu":
                    import torch

                    torch.cuda.init()  # the stats read empty until Python's side of CUDA is initialised (ours allocates from C++)
                    reply["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            elif op == "quit":
                return 0
            else:
                reply = {"error": f"unknown op {op}"}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------
# Driver side.
# ----------------------------------------------------------------------------------------------------

def setup_llama_cpp() -> str:
    """Creates build/bench-venv (no system site packages) and pip-installs llama-cpp-python into it."""
    log = os.path.join(REPO, "build", "bench-venv-install.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    if not os.path.exists(BENCH_PYTHON):
        subprocess.run([sys.executable, "-m", "venv", BENCH_VENV], check=True)
    env = dict(os.environ, CMAKE_ARGS=os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=ON"))
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.run([BENCH_PYTHON, "-m", "pip", "install", "-v", "llama-cpp-python"], stdout=f,
                            stderr=subprocess.STDOUT, env=env).returncode
    return f"pip install llama-cpp-python exited {rc} (log: {log})"


def llama_cpp_unavailable_reason():
    if not os.path.exists(BENCH_PYTHON):
        return f"{BENCH_PYTHON} is missing: run this script with --setup-llama-cpp (compiles llama.cpp, 10+ minutes)"
    proc = subprocess.run([BENCH_PYTHON, "-c", "import llama_cpp"], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        log = os.path.join(REPO, "build", "bench-venv-install.log")
        return f"llama_cpp does not import in {BENCH_VENV}: {last} (install log: {log})"
    return None


def make_prompts(tokenizer, count, length):
    """`count` rows of exactly `length` token ids cut from the pipeline's instruction prompts on the
    synthetic dataset: real text, all rows different, no padding."""
    import llm4dsr

    ds = llm4dsr.make_synthetic(num_users=60, num_items=200)
    splits = llm4dsr.prepare(ds, noise=0.1, seed=0)
    builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", chat_format="chatml", max_pairs=0, seed=0)
    stream = []
    for x in builder.tokenize(builder.make_pairs(splits.train, ds.catalog), tokenizer):
        stream.extend(int(i) for i in x.input_ids)
        if len(stream) >= count * length:
            break
    if len(stream) < count * length:
        raise SystemExit(f"the synthetic prompts give {len(stream)} tokens, {count * length} needed")
    return [stream[i * length:(i + 1) * length] for i in range(count)]


class Engine:
    def __init__(self, name, python, args, prompts_file, extra=()):
        self.name, self.error, self.info = name, None, {}
        cmd = [python, os.path.abspath(__file__), "--worker", name, "--gguf", args.gguf, "--prompts", prompts_file,
               "--threads", str(args.threads), "--device", args.device, "--prompt-len", str(args.prompt_len), "--new-tokens",
               str(args.new_tokens), "--batches", *[str(b) for b in args.batches], *extra]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1",
                   OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY=args.omp_wait_policy)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        first = self._read()
        if first.get("error") or not first.get("ready"):
            self.error = first.get("error", "no answer")
            self.close()
        else:
            self.info = first

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = [l for l in self.proc.stderr.read().strip().splitlines() if l.strip()]
                rc = self.proc.wait()
                why = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
                return {"error": f"worker ended ({why}): " + (err[-1] if err else "no message"), "returncode": rc}
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **cmd):
        if self.error:
            return {"error": self.error}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            self.error = reply["error"]
        return reply

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--omp-wait-policy", default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                   choices=["PASSIVE", "ACTIVE", "passive", "active"], help="OMP_WAIT_POLICY of every engine")
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda[:N] for ours and transformers (llama.cpp is measured on the CPU only)")
    p.add_argument("--gguf", default="", help="the GGUF file (default: SmolLM2-135M-Instruct in the model cache)")
    p.add_argument("--json", default="", help="also write every figure to this file")
    p.add_argument("--setup-llama-cpp", action="store_true", help="build build/bench-venv with llama-cpp-python first")
    p.add_argument("--no-llama-extra-buffers", action="store_true",
                   help="run llama.cpp without extra buffer types (AMX) from the start; by default they are tried "
                        "first and dropped when the first computation crashes")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--prompts", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    import llm4dsr

    if not args.gguf:
        args.gguf = os.path.join(llm4dsr.model_cache_dir(), GGUF_NAME)
    if not os.path.isfile(args.gguf):
        print(f"bench_smollm2: {args.gguf} is missing (scripts/setup fetches it)", file=sys.stderr)
        return 2
    setup_note = setup_llama_cpp() if args.setup_llama_cpp else None
    t_start = time.perf_counter()
    load_before = os.getloadavg()

    tokenizer = llm4dsr.load_tokenizer(args.gguf)
    prompts = make_prompts(tokenizer, max(args.batches), args.prompt_len)
    os.makedirs(os.path.join(REPO, "build"), exist_ok=True)
    prompts_file = os.path.join(REPO, "build", f"bench_smollm2_prompts_{os.getpid()}.json")
    with open(prompts_file, "w", encoding="utf-8") as f:
        json.dump(prompts, f)

    engines = []
    skipped = {}
    notes = []
    try:
        for name in args.engines:
            if name == "llama.cpp":
                reason = llama_cpp_unavailable_reason() if args.device == "cpu" else \
                    f"llama.cpp runs on the CPU; --device {args.device} compares ours with transformers on the GPU"
                if reason:
                    skipped[name] = reason
                    continue
                python = BENCH_PYTHON
            else:
                python = sys.executable
            e = Engine(name, python, args, prompts_file,
                       ["--no-llama-extra-buffers"] if name == "llama.cpp" and args.no_llama_extra_buffers else [])
            if name == "llama.cpp" and e.error and "signal" in e.error and not args.no_llama_extra_buffers:
                # llama.cpp's AMX matmul (ggml_backend_amx_mul_mat) segfaults on some Sapphire Rapids
                # machines (llama.cpp issue 20824); its plain CPU kernels are what such a machine can run.
                notes.append(f"llama.cpp crashed with its AMX/extra weight buffers ({e.error}); measured without "
                             "them (use_extra_bufts=False: plain AVX-512 kernels on the Q4_1 weights)")
                e = Engine(name, python, args, prompts_file, ["--no-llama-extra-buffers"])
            if e.error:
                skipped[name] = e.error
            else:
                engines.append(e)

        pp = {e.name: {b: [] for b in args.batches} for e in engines}
        gen = {e.name: {"full": [], "one": []} for e in engines}
        ids = {}
        # One untimed warm-up call per engine, then the timed repeats, engines in turn.
        for e in engines:
            e.ask(op="pp", batch=min(args.batches))
            e.ask(op="gen", new_tokens=2)
        for rep in range(args.repeats):
            for e in engines:
                for b in args.batches:
                    if b >= 32 and rep >= 2:
                        continue
                    r = e.ask(op="pp", batch=b)
                    if "seconds" in r:
                        pp[e.name][b].append(r["seconds"])
                r = e.ask(op="gen", new_tokens=args.new_tokens)
                if "seconds" in r:
                    gen[e.name]["full"].append(r["seconds"])
                    ids[e.name] = r["ids"]
                r = e.ask(op="gen", new_tokens=1)
                if "seconds" in r:
                    gen[e.name]["one"].append(r["seconds"])
        memory = {e.name: e.ask(op="mem") for e in engines}
    finally:
        for e in engines:
            e.close()
        os.remove(prompts_file)

    results = {}
    for e in engines:
        r = {"load_seconds": e.info.get("load_seconds"), "version": e.info.get("version"),
             "rss_after_load_mb": e.info.get("rss_after_load_mb"), "peak_rss_mb": memory[e.name].get("peak_rss_mb"),
             "peak_gpu_mb": memory[e.name].get("peak_gpu_mb"), "error": e.error}
        for b in args.batches:
            times = pp[e.name][b]
            r[f"pp{b}_tokens_per_second"] = b * args.prompt_len / min(times) if times else None
        full, one = gen[e.name]["full"], gen[e.name]["one"]
        if full and one and args.new_tokens > 1:
            decode_s = min(full) - min(one)
            r["decode_tokens_per_second"] = (args.new_tokens - 1) / decode_s if decode_s > 0 else None
        else:
            r["decode_tokens_per_second"] = None
        if e.name in ids and "ours-fp32" in ids:
            ref, got = ids["ours-fp32"], ids[e.name]
            r["decoded_equal_to_ours_fp32"] = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b),
                                                   min(len(ref), len(got)))
        if "system_info" in e.info:
            r["system_info"] = e.info["system_info"]
        results[e.name] = r

    cols = [f"pp{b}" for b in args.batches] + ["decode"]
    keys = [f"pp{b}_tokens_per_second" for b in args.batches] + ["decode_tokens_per_second"]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    where = ""
    if args.device != "cpu":
        import torch

        where = f"; ours and transformers on {args.device} ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"SmolLM2-135M-Instruct ({os.path.basename(args.gguf)}), {args.threads} threads "
          f"(OMP_WAIT_POLICY={args.omp_wait_policy}), {cpu}{where}")
    print(f"prompt length {args.prompt_len}, decode {args.new_tokens} new tokens at batch 1, best of {args.repeats}; "
          f"load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print()
    head = f"{'engine':<15}" + "".join(f"{c + ' tok/s':>14}" for c in cols) + f"{'peak RSS MB':>13}{'RSS@load MB':>13}{'load s':>8}"
    print(head)
    print("-" * len(head))
    for name in args.engines:
        if name in results:
            r = results[name]
            print(f"{name:<15}" + "".join(f"{fmt(r[k], 1):>14}" for k in keys) +
                  f"{fmt(r['peak_rss_mb']):>13}{fmt(r['rss_after_load_mb']):>13}{fmt(r['load_seconds'], 1):>8}")
        elif name in skipped:
            print(f"{name:<15}  not run: {skipped[name]}")
    if args.device != "cpu":
        print("peak GPU memory (torch.cuda.max_memory_allocated): " +
              ", ".join(f"{n} {fmt(r['peak_gpu_mb'])} MB" for n, r in results.items()))
    for name, r in results.items():
        if r["error"]:
            print(f"{name}: failed during the run: {r['error']}")
    print()
    comparisons = [("ours-fp32", "hf-fp32"), ("ours-fp32-high", "hf-fp32-high"), ("ours-bf16", "hf-bf16"),
                   ("ours-fp32", "llama.cpp"), ("ours-fp32-high", "llama.cpp"), ("ours-bf16", "llama.cpp")]
    ratios = {}
    for a, b in comparisons:
        if a in results and b in results:
            vals = {k: ratio(results[a][k], results[b][k]) for k in keys}
            mem = ratio(results[a]["peak_rss_mb"], results[b]["peak_rss_mb"])
            ratios[f"{a}/{b}"] = {**vals, "peak_rss": mem}
            print(f"{a + '/' + b:<29}" + "".join(f"{fmt(vals[k], 2) + 'x':>12}" for k in keys) +
                  f"   peak RSS {fmt(mem, 2)}x")
    print()
    big = [b for b in args.batches if b >= 8]
    verdicts = {}
    for dt in ("fp32", "fp32-high", "bf16"):
        ours, hf = f"ours-{dt}", f"hf-{dt}"
        for target, other, need in ((f"{ours} >= 1.5x {hf}", hf, 1.5), (f"{ours} >= 1.0x llama.cpp", "llama.cpp", 1.0)):
            if ours not in results or other not in results or not big:
                continue
            rs = [ratio(results[ours][f"pp{b}_tokens_per_second"], results[other][f"pp{b}_tokens_per_second"]) for b in big]
            met = all(x is not None and x >= need for x in rs)
            verdicts[target] = met
            print(f"target {target} on prompt processing at batch {','.join(map(str, big))}: "
                  f"{'met' if met else 'NOT met'} ({', '.join(fmt(x, 2) + 'x' for x in rs)})")
    if "ours-fp32" in ids:
        # Decoding runs past EOS (transformers' min_new_tokens forbids it instead), so the engines are only
        # expected to agree before ours' first EOS.
        eos = [i for i, t in enumerate(ids["ours-fp32"]) if t == tokenizer.eos_id]
        upto = eos[0] if eos else args.new_tokens
        for name, r in results.items():
            if "decoded_equal_to_ours_fp32" in r and name != "ours-fp32":
                print(f"sanity: {name} decodes the same first {min(r['decoded_equal_to_ours_fp32'], upto)} of the "
                      f"{upto} tokens before ours-fp32's first EOS")
    if "llama.cpp" in results:
        print(f"llama.cpp {results['llama.cpp']['version']}: {results['llama.cpp'].get('system_info', '').strip()}")
    for note in notes:
        print("note:", note)
    if setup_note:
        print(setup_note)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"results": results, "ratios": ratios, "targets": verdicts, "skipped": skipped, "notes": notes,
                       "threads": args.threads, "omp_wait_policy": args.omp_wait_policy, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                       "repeats": args.repeats, "cpu": cpu, "device": args.device, "load_average_start": load_before[0]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
