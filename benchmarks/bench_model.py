"""Language-model throughput: llm4dsr.LlamaModel vs transformers' LlamaForCausalLM (+ peft), on CPU (or --device cuda).

One run, one process, the same random weights in both models (ours are drawn with a seed and copied
into the HF model through its state dict; the logits are checked to agree before anything is timed):

  forward   tokens/s of a full forward without gradients, logits at every position as HF computes
            them (B x T x vocab, in the model's dtype); a second line computes the logits of the
            last position only (ours: positions=[-1], which also runs the last layer's o_proj and MLP
            at that position only; HF: logits_to_keep=1; both are credited with the same FLOPs).
  train     tokens/s of LoRA training steps: r=8, alpha=16, dropout 0.05 on q_proj and v_proj, loss
            on every token, AdamW, gradient clipping at 1.0. Ours through llm4dsr.Trainer (one
            optimiser step per train() call, micro-batch = the whole batch); HF through
            peft.get_peft_model + loss.backward() + clip_grad_norm_ + torch.optim.AdamW.step().
  matmul    GFLOP/s of plain torch.matmul on the model's own GEMM shapes at M = B*T rows (q/o, k/v,
            gate/up, down, lm_head), in the same dtype, weighted by how often a forward runs each: the
            rate a forward made of nothing but these products would reach. It is timed in the same
            rounds as the two models, so it sees the same machine load. fp32 on a CPU where ours runs
            its fp32 products through oneDNN (llm4dsr.fp32_gemm() == "onednn": x86 CPUs with AVX-512
            not made by Intel, where MKL's sgemm, torch.matmul's and transformers', runs at about half
            the rate) times oneDNN's linear instead, so "% of matmul" stays against the GEMM ours calls;
            the header line says which.

fp32 and bf16 (bf16 = base weights stored in bf16; LoRA adapters stay fp32 in both, PEFT's
autocast_adapter_dtype default), batches 1, 8 and 32 of T = 128 tokens by default. Every figure is
the median of --repeats timed rounds (one untimed warm-up round first, per dtype and mode, at the first
batch size: it takes the one-time costs, and the median drops a slow first round at a new size);
within a round ours, transformers and the matmul reference run in turn, so that load from other
processes drifting during the run hits all three alike.

FLOPs are counted analytically and are the same for both implementations (so the GFLOP/s ratio equals
the tokens/s ratio); elementwise work (norms, RoPE, softmax, SiLU) is not counted:
  P      = per-layer projection weights (q, k, v, o, gate, up, down) * layers + lm_head (vocab * hidden)
  N      = B * T tokens
  attn   = 4 * B * T^2 * heads * head_dim * layers (QK^T and PV over the full T x T square)
  forward  = 2 * P * N + attn
  train    = forward                                  (forward pass)
           + 2 * P * N + 2 * attn                     (backward to the activations; the frozen base
                                                        weights get no gradient, so no 2 * P * N for them)
           + 6 * N * r * sum(in + out) over adapters  (LoRA: forward, input gradient, A/B gradients)
A full fine-tune would add another 2 * P * N (weight gradients): the usual "6 * params * tokens".

Default: the real SmolLM2-135M dims (ModelConfig.preset("base"): hidden 576, 30 layers, 9 heads / 3 KV
heads, intermediate 1536, vocab 49152, tied embeddings), 2 threads: about 4 minutes on two idle
cores (most of it fp32 training at batch 32), much longer when other processes compete for them (with
two OpenMP threads on two cores, any other busy process stalls both). --layers 6 (same widths, fewer
layers) or --batches 1 8 make a quick run. The targets it is judged by, printed at the end: ours >=
1.5x transformers on forward and training; ours >= 60% of the matmul GFLOP/s at batch >= 8.

    .venv/bin/python benchmarks/bench_model.py [--layers 6] [--seq-len 128] [--batches 1 8 32]
        [--dtypes fp32 fp32-high bf16] [--modes forward train] [--repeats 3] [--threads 2] [--device cuda] [--json out.json]

On a GPU (--device cuda) each timed call ends with torch.cuda.synchronize(), so the figures are the
device's work, not the launch; transformers runs with its sdpa attention there as here.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import torch

import llm4dsr
from bench_common import MatmulReference, matmul_params, synchronize

# fp32-high: fp32 models, matmul reference and all, under torch.set_float32_matmul_precision("high"): our
# forward's fp32 products then run as bf16x3 (llm4dsr.bf16x3_matmul_available()); transformers and
# torch.matmul get what PyTorch makes of "high" on a CPU (oneDNN's TF32 mode). Forward only: training
# records gradients, where our products stay fp32.
DTYPES = {"fp32": (torch.float32, "float32"), "fp32-high": (torch.float32, "float32"),
          "bf16": (torch.bfloat16, "bfloat16")}
LORA = dict(r=8, alpha=16.0, dropout=0.05, targets=("q_proj", "v_proj"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=0, help="number of layers (default: the preset's 30)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "fp32-high", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per figure (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]: both models and the matmul reference run there")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------
# Models


def make_config(layers: int) -> llm4dsr.ModelConfig:
    config = llm4dsr.ModelConfig.preset("base")
    if layers > 0:
        config.num_hidden_layers = layers
    return config


def hf_config(config: llm4dsr.ModelConfig):
    import transformers

    fields = json.loads(config.to_json())
    fields.pop("rope_parameters", None)  # rope_theta / rope_scaling carry the same
    hf = transformers.LlamaConfig(**fields)
    hf._attn_implementation = "sdpa"
    hf.use_cache = False  # no KV cache is built on either side
    return hf


def make_pair(config, dtype_name: str, seed: int, device: str = "cpu"):
    """Our model and an HF model holding the same weights, both in `dtype_name` on `device`, in eval mode."""
    import transformers

    torch_dtype, ours_dtype = DTYPES[dtype_name]
    ours = llm4dsr.LlamaModel(config, "cpu", "float32", seed)
    hf = transformers.LlamaForCausalLM(hf_config(config))
    result = hf.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"weights do not map: missing {missing}, unexpected {result.unexpected_keys}")
    if config.tie_word_embeddings and hf.lm_head.weight.data_ptr() != hf.model.embed_tokens.weight.data_ptr():
        raise RuntimeError("transformers did not tie lm_head to the embeddings")
    if torch_dtype != torch.float32 or device != "cpu":
        ours.to(device, ours_dtype)
        hf.to(device, torch_dtype)
    hf.eval()
    ours.eval()
    return ours, hf


def check_parity(ours, hf, config, dtype_name: str, device: str = "cpu") -> float:
    # fp32-high: 256 rows, the fewest the split products run on.
    length = 128 if dtype_name == "fp32-high" else 16
    ids = torch.randint(0, config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        a = ours.forward(ids).float()
        b = hf(input_ids=ids).logits.float()
    diff = (a - b).abs().max().item()
    # fp32-high: bf16x3 products carry about 10x fp32's rounding error.
    limit = {"fp32": 1e-4, "fp32-high": 1e-2}.get(dtype_name, 0.1 * max(1.0, b.abs().max().item()))
    if not diff <= limit:
        raise RuntimeError(f"{dtype_name}: logits differ by {diff} (limit {limit}): the models are not the same")
    return diff


# ---------------------------------------------------------------------------------------------------
# FLOPs


def attention_flops(config, batch: int, seq: int) -> int:
    return 4 * batch * seq * seq * config.num_attention_heads * config.head_dim * config.num_hidden_layers


def lora_flops_per_token(config) -> int:
    h, d = config.hidden_size, config.head_dim
    dims = {"q_proj": (h, config.num_attention_heads * d), "k_proj": (h, config.num_key_value_heads * d),
            "v_proj": (h, config.num_key_value_heads * d), "o_proj": (config.num_attention_heads * d, h)}
    per_layer = sum(dims[t][0] + dims[t][1] for t in LORA["targets"])
    return 6 * LORA["r"] * per_layer * config.num_hidden_layers


def forward_flops(config, batch: int, seq: int) -> int:
    return 2 * matmul_params(config) * batch * seq + attention_flops(config, batch, seq)


def forward_flops_last_only(config, batch: int, seq: int) -> int:
    lm_head = config.hidden_size * config.vocab_size
    return (2 * (matmul_params(config) - lm_head) * batch * seq + 2 * lm_head * batch
            + attention_flops(config, batch, seq))


def train_flops(config, batch: int, seq: int) -> int:
    n = batch * seq
    return (2 * forward_flops(config, batch, seq) + attention_flops(config, batch, seq)
            + lora_flops_per_token(config) * n)


# ---------------------------------------------------------------------------------------------------
# Timing


def rounds(fns: dict, repeats: int, warm_up: bool, device: str = "cpu") -> dict:
    """Median seconds of each function over `repeats` rounds in which they take turns, after one untimed
    warm-up round when asked. A function returning a float reports its own seconds (the matmul
    reference). On a GPU the clock stops after the device has finished the function's work."""
    if warm_up:
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            result = fn()
            synchronize(device)
            elapsed = time.perf_counter() - t0
            times[k].append(result if isinstance(result, float) else elapsed)
    return {k: statistics.median(v) for k, v in times.items()}


def examples_for(config, batch: int, seq: int, seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
    return ids.to(device), [{"input_ids": row, "labels": row} for row in ids]


def bench_forward(ours, hf, config, batch: int, seq: int, repeats: int, seed: int, ref: MatmulReference,
                  warm_up: bool, device: str = "cpu") -> dict:
    ids, _ = examples_for(config, batch, seq, seed, device)
    with torch.inference_mode():
        full = rounds({"ours": lambda: ours.forward(ids), "hf": lambda: hf(input_ids=ids).logits, "mm": ref}, repeats,
                      warm_up, device)
        last = rounds({"ours": lambda: ours.logits(ids, positions=[-1]),
                       "hf": lambda: hf(input_ids=ids, logits_to_keep=1).logits}, repeats, warm_up, device)
    last["mm"] = full["mm"]
    return {"full": full, "last": last}


def bench_train(config, dtype_name: str, batches, seq: int, repeats: int, seed: int, refs: dict,
                device: str = "cpu") -> dict:
    import peft

    ours, hf = make_pair(config, dtype_name, seed, device)
    ours.add_lora(r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"], target_modules=list(LORA["targets"]),
                  seed=seed)
    peft_model = peft.get_peft_model(hf, peft.LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=list(LORA["targets"]),
        bias="none", task_type="CAUSAL_LM"))
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def hf_step(ids):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    out = {}
    for i, batch in enumerate(batches):
        ids, examples = examples_for(config, batch, seq, seed, device)
        trainer = llm4dsr.Trainer(ours, learning_rate=1e-4, micro_batch_size=batch, max_steps=1, warmup_steps=1,
                                  lr_scheduler="constant", max_grad_norm=1.0, progress=False, seed=seed)
        out[batch] = rounds({"ours": lambda: trainer.train(examples), "hf": lambda: hf_step(ids), "mm": refs[batch]},
                            repeats, warm_up=i == 0, device=device)
        del trainer
        gc.collect()
    return out


# ---------------------------------------------------------------------------------------------------
# Report


def as_dict(row, seq: int) -> dict:
    mode, dtype_name, batch, seconds, flops, reference = row
    tokens = batch * seq
    ref = reference.gflops(seconds["mm"])
    d = {"mode": mode, "dtype": dtype_name, "batch": batch, "tokens": tokens, "flops": flops, "matmul_gflops": ref}
    for who in ("ours", "hf"):
        d[f"{who}_seconds"] = seconds[who]
        d[f"{who}_tokens_per_second"] = tokens / seconds[who]
        d[f"{who}_gflops"] = flops / seconds[who] / 1e9
        d[f"{who}_fraction_of_matmul"] = d[f"{who}_gflops"] / ref
    d["ours_over_hf"] = seconds["hf"] / seconds["ours"]
    return d


HEADER = (f"{'mode':<21} {'dtype':<9} {'batch':>5} {'ours tok/s':>11} {'HF tok/s':>10} {'ours/HF':>8} "
          f"{'ours GF/s':>10} {'HF GF/s':>8} {'matmul GF/s':>11} {'ours/mm':>8} {'HF/mm':>6}")


def format_row(row, seq: int) -> str:
    d = as_dict(row, seq)
    return (f"{d['mode']:<21} {d['dtype']:<9} {d['batch']:>5} {d['ours_tokens_per_second']:>11.0f} "
            f"{d['hf_tokens_per_second']:>10.0f} {d['ours_over_hf']:>7.2f}x {d['ours_gflops']:>10.1f} "
            f"{d['hf_gflops']:>8.1f} {d['matmul_gflops']:>11.1f} {100 * d['ours_fraction_of_matmul']:>7.0f}% "
            f"{100 * d['hf_fraction_of_matmul']:>5.0f}%")


def print_targets(rows, seq: int) -> None:
    """Which rows meet the targets (the last-logits lines are informative only)."""
    judged = [as_dict(r, seq) for r in rows if r[0] in ("forward", "LoRA train")]

    def label(d):
        return f"{d['mode']} {d['dtype']} b{d['batch']}"

    slow = [f"{label(d)} ({d['ours_over_hf']:.2f}x)" for d in judged if d["ours_over_hf"] < 1.5]
    big = [d for d in judged if d["batch"] >= 8]
    low = [f"{label(d)} ({100 * d['ours_fraction_of_matmul']:.0f}%)" for d in big if d["ours_fraction_of_matmul"] < 0.6]
    print(f"\nours >= 1.5x transformers: {len(judged) - len(slow)}/{len(judged)} rows"
          + (f"; below: {', '.join(slow)}" if slow else ""))
    print(f"ours >= 60% of matmul GFLOP/s at batch >= 8: {len(big) - len(low)}/{len(big)} rows"
          + (f"; below: {', '.join(low)}" if low else ""))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # after importing llm4dsr, which sets its own default
    device = args.device
    torch.manual_seed(args.seed)
    config = make_config(args.layers)
    seq = args.seq_len
    started = time.perf_counter()
    where = f"{torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name(torch.device(device))
    print(f"llm4dsr {llm4dsr.__version__} vs transformers; torch {torch.__version__}, {where}")
    print(f"model: hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads "
          f"/ {config.num_key_value_heads} KV, intermediate {config.intermediate_size}, vocab {config.vocab_size}; "
          f"{matmul_params(config) / 1e6:.1f}M matmul weights; T = {seq}; median of {args.repeats} rounds")
    if device == "cpu":
        print(f"fp32 products: ours through {llm4dsr.fp32_gemm()} (llm4dsr.fp32_gemm()), transformers through "
              f"torch.matmul; the fp32 matmul reference times "
              f"{'oneDNN' if llm4dsr.fp32_gemm() == 'onednn' else 'torch.matmul'}")
    print(HEADER)

    rows = []
    for dtype_name in args.dtypes:
        torch.set_float32_matmul_precision("high" if dtype_name == "fp32-high" else "highest")
        modes = [m for m in args.modes if dtype_name != "fp32-high" or m == "forward"]
        refs = {b: MatmulReference(config, DTYPES[dtype_name][0], b * seq, device=device) for b in args.batches}
        if "forward" in modes:
            ours, hf = make_pair(config, dtype_name, args.seed, device)
            diff = check_parity(ours, hf, config, dtype_name, device)
            print(f"[{dtype_name}: logits max |ours - transformers| = {diff:.2e}]")
            for i, b in enumerate(args.batches):
                r = bench_forward(ours, hf, config, b, seq, args.repeats, args.seed, refs[b], warm_up=i == 0,
                                  device=device)
                rows.append(("forward", dtype_name, b, r["full"], forward_flops(config, b, seq), refs[b]))
                print(format_row(rows[-1], seq), flush=True)
                rows.append(("forward, last logits", dtype_name, b, r["last"], forward_flops_last_only(config, b, seq),
                             refs[b]))
                print(format_row(rows[-1], seq), flush=True)
            del ours, hf
            gc.collect()
        if "train" in modes:
            res = bench_train(config, dtype_name, args.batches, seq, args.repeats, args.seed, refs, device)
            for b in args.batches:
                rows.append(("LoRA train", dtype_name, b, res[b], train_flops(config, b, seq), refs[b]))
                print(format_row(rows[-1], seq), flush=True)
            gc.collect()
        del refs
    torch.set_float32_matmul_precision("highest")

    print("\nsummary (batch >= 8 is where the matmul target applies)")
    print(HEADER)
    for row in rows:
        print(format_row(row, seq))
    print_targets(rows, seq)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": json.loads(config.to_json()), "seq_len": seq, "threads": torch.get_num_threads(),
                       "device": device,
                       "repeats": args.repeats, "results": [as_dict(r, seq) for r in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
