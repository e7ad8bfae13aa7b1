"""The ``llm4dsr`` command line: thin argument parsing over the library.

Human-readable tables by default, one JSON object with ``--json``. Library errors print one line
(``llm4dsr: error: ...``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional


def _print_table(title: str, rows: List[tuple]) -> None:
    width = max(len(str(k)) for k, _ in rows) if rows else 0
    print(title)
    for key, value in rows:
        if isinstance(value, float):
            value = f"{value:,.3f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        print(f"  {str(key):<{width}}  {value}")


def _read(args):
    import llm4dsr

    dataset = llm4dsr.read_dataset(args.data, format=args.format, title_field=args.title_field,
                                   extra_field=args.extra_field)
    if args.min_user_interactions != 0 or args.min_item_interactions != 0:  # negative ones: the library's error
        llm4dsr.kcore_filter(dataset, args.min_user_interactions, args.min_item_interactions)
    return dataset


def cmd_stats(args) -> int:
    t0 = time.perf_counter()
    dataset = _read(args)
    stats = dataset.stats()
    if args.json:
        print(json.dumps({"name": dataset.name, "format": dataset.format, **stats,
                          "read_seconds": round(time.perf_counter() - t0, 3)}))
    else:
        _print_table(f"{dataset.name} ({dataset.format})", list(stats.items()))
    return 0


def cmd_prepare(args) -> int:
    import llm4dsr

    dataset = _read(args)
    splits = llm4dsr.prepare(dataset, split=args.split, noise=args.noise, seed=args.seed,
                             max_length=args.max_length)
    llm4dsr.write_splits_csv(splits, dataset.catalog, args.out)
    noisy = {name: int(sum(int((s.labels == 1).sum()) for s in getattr(splits, name)))
             for name in ("train", "valid", "test")}
    positions = {name: int(sum(len(s) for s in getattr(splits, name))) for name in ("train", "valid", "test")}
    summary: Dict[str, object] = {
        "data": args.data, "name": dataset.name, "format": dataset.format, "out": os.path.abspath(args.out),
        "split": splits.protocol, "noise": args.noise, "seed": args.seed, "max_length": args.max_length,
        "items": len(dataset.catalog),
        "train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test),
        "noisy_positions": noisy, "positions": positions,
    }
    # meta.json records how the splits were made; written last, atomically, so its presence means
    # the folder is complete.
    tmp = os.path.join(args.out, ".meta.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(args.out, "meta.json"))
    if args.json:
        print(json.dumps(summary))
    else:
        rows = [("split", splits.protocol), ("noise alpha", args.noise), ("seed", args.seed)]
        for name in ("train", "valid", "test"):
            share = noisy[name] / positions[name] if positions[name] else 0.0
            rows.append((f"{name} sequences", summary[name]))
            rows.append((f"{name} noisy positions", f"{noisy[name]:,} ({share:.1%})"))
        rows.append(("written to", summary["out"]))
        _print_table(f"prepared {dataset.name}", rows)
    return 0


def _progress_callback(desc: str, enabled: bool):
    """A tqdm bar fed by the trainer's per-step callback (None when progress is off)."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)

    def callback(p):
        if bar.total is None:
            bar.total = p["total_steps"]
            bar.n = p["step"] - 1
        bar.update(1)
        bar.set_postfix(loss=f"{p['loss']:.4f}", lr=f"{p['learning_rate']:.1e}", tok_s=f"{p['tokens_per_second']:.0f}")

    return callback, bar.close


def _splits(args, dataset):
    import llm4dsr

    return llm4dsr.prepare(dataset, split=args.split, noise=args.noise, seed=args.seed, max_length=args.max_length)


def _pretrain(dataset, splits, out: str, progress: bool, **options):
    """llm4dsr.pretraining.pretrain_from_scratch with a progress bar (unless --json)."""
    from llm4dsr.pretraining import pretrain_from_scratch

    callback, close = _progress_callback("pretrain", progress)
    try:
        return pretrain_from_scratch(dataset, splits, out, callback=callback, **options)
    finally:
        close()


def cmd_pretrain(args) -> int:
    dataset = _read(args)
    splits = _splits(args, dataset)
    t0 = time.perf_counter()
    _, result, n = _pretrain(dataset, splits, args.out, not args.json, preset=args.preset, vocab_size=args.vocab_size,
                             block_size=args.block_size, epochs=args.epochs, learning_rate=args.lr,
                             batch_size=args.batch_size, seed=args.seed, resume=args.resume)
    summary = {"out": os.path.abspath(args.out), "preset": args.preset, "examples": n, "steps": result["steps"],
               "first_loss": result["step_losses"][0] if result["step_losses"] else None,
               "final_loss": result["step_losses"][-1] if result["step_losses"] else None,
               "tokens_per_second": result["tokens_per_second"], "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table("pretrained from scratch", list(summary.items()))
    return 0


def _check_resumed_base(out: str, base_name: str, resume: bool) -> None:
    import llm4dsr
    from llm4dsr import pipeline

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "finetune_base.json")
    base = {"base": pipeline.model_fingerprint(base_name)}
    if resume and os.path.exists(path) and os.path.exists(os.path.join(out, "checkpoint.pt")):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved != base:
            raise llm4dsr.Error(f"{out}: its checkpoint was trained on base {json.dumps(saved.get('base'))}, this run's is "
                                f"{json.dumps(base['base'])}; resume with the same --base, or start without --resume")
    pipeline.write_atomic(path, json.dumps(base, indent=2))


def cmd_finetune(args) -> int:
    import llm4dsr

    dataset = _read(args)
    splits = _splits(args, dataset)
    t0 = time.perf_counter()
    if args.base.startswith("scratch"):
        # "scratch" or "scratch:PRESET": pretrain a small model on this data first, then instruction-tune it
        preset = args.base.split(":", 1)[1] if ":" in args.base else "tiny"
        base_dir = os.path.join(args.out, "base")
        _pretrain(dataset, splits, base_dir, not args.json, preset=preset, seed=args.seed, resume=args.resume)
        base_name = os.path.abspath(base_dir)
        base = llm4dsr.load_pretrained(base_name, device=args.device, dtype=args.dtype)
    else:
        base_name = args.base if args.base in llm4dsr.known_model_names() else os.path.abspath(args.base)
        base = llm4dsr.load_pretrained(args.base, device=args.device, dtype=args.dtype)
    chat_format = args.chat_format if args.chat_format != "auto" else base.card.chat_format
    builder = llm4dsr.InstructionBuilder(template=args.template, chat_format=chat_format,
                                         max_prompt_tokens=args.max_prompt_tokens, loss_on=args.loss_on,
                                         max_pairs=args.pairs, seed=args.seed)
    pairs = builder.make_pairs(splits.train, dataset.catalog)
    data = builder.tokenize(pairs, base.tokenizer)
    model = base.model
    # A model trained from scratch has no pretrained knowledge for adapters to protect: it is tuned whole,
    # with the faster schedule a small model needs; a pretrained base gets the paper's LoRA settings.
    full = args.full or args.base.startswith("scratch")
    learning_rate = args.lr if args.lr is not None else (3e-3 if args.base.startswith("scratch") else 3e-4)
    epochs = args.epochs if args.epochs is not None else (3 if args.base.startswith("scratch") else 1)
    if full:
        trainable = "all parameters"
    else:
        targets = args.target_modules if args.target_modules == "all-linear" else args.target_modules.split(",")
        model.add_lora(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, target_modules=targets,
                       seed=args.seed)
        trainable = f"LoRA r={args.lora_r} on {args.target_modules}"
    # The trainer's checkpoint checks the options, examples and trainable parameters on --resume; the base
    # weights are not in it, so the base a resumed run continues on is checked here.
    _check_resumed_base(args.out, base_name, args.resume)
    callback, close = _progress_callback("finetune", not args.json)
    pad = base.tokenizer.pad_id if base.tokenizer.pad_id >= 0 else 0
    trainer = llm4dsr.Trainer(model, learning_rate=learning_rate, num_epochs=epochs, micro_batch_size=args.batch_size,
                              gradient_accumulation_steps=args.grad_accum, bf16=args.bf16, pad_token_id=pad,
                              seed=args.seed, output_dir=args.out, save_steps=args.save_steps, progress=False)
    # The held-out loss is on the response tokens whatever --loss-on trains on: tokenized by its own
    # builder (the training builder would label the prompt too under --loss-on all).
    held_out_builder = llm4dsr.InstructionBuilder(
        template=args.template, chat_format=chat_format, max_prompt_tokens=args.max_prompt_tokens,
        loss_on="response", max_pairs=min(200, len(splits.valid)), seed=args.seed + 1)
    held_out = held_out_builder.tokenize(held_out_builder.make_pairs(splits.valid, dataset.catalog),
                                         base.tokenizer) if len(splits.valid) else None
    loss_before = trainer.evaluate(held_out) if held_out else None
    try:
        result = trainer.train(data, resume=args.resume, callback=callback)
    finally:
        close()
    loss_after = trainer.evaluate(held_out) if held_out else None
    card = llm4dsr.ModelCard()
    card.base_model = "" if full else base_name
    card.prompt_template = args.template
    card.chat_format = chat_format
    card.max_prompt_tokens = args.max_prompt_tokens
    llm4dsr.save_pretrained(llm4dsr.PretrainedModel(model, base.tokenizer, card), args.out, with_base=full)
    summary = {"out": os.path.abspath(args.out), "base": base_name, "trainable": trainable, "pairs": len(data),
               "steps": result["steps"], "resumed_from_step": result["resumed_from_step"],
               "valid_response_loss_before": loss_before, "valid_response_loss_after": loss_after,
               "tokens_per_second": result["tokens_per_second"], "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table("fine-tuned", list(summary.items()))
    return 0


def _denoise_summary_rows(summary: Dict[str, object]) -> List[tuple]:
    rows = [(k, summary[k]) for k in ("policy", "unit", "budget", "quantile", "eta") if summary.get(k) is not None]
    for name, split in summary["splits"].items():
        for key in ("sequences", "flagged", "replaced", "deleted", "precision", "recall", "f1", "pr_auc"):
            if key in split:
                rows.append((f"{name}.{key}", split[key]))
        if "random_flagger" in split:
            r = split["random_flagger"]
            rows.append((f"{name}.random_flagger", f"P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}"))
    for key in ("precision", "recall", "f1", "seconds"):
        if key in summary:
            rows.append((key, summary[key]))
    if "random_flagger" in summary:
        r = summary["random_flagger"]
        rows.append(("random_flagger", f"P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}"))
    for key in ("denoised", "report"):
        if key in summary:
            rows.append((key, summary[key]))
    return rows


def _run_pipeline(args, score_only: bool) -> int:
    from llm4dsr import pipeline

    dataset = _read(args)
    splits = _splits(args, dataset)
    names = [s for s in args.splits.split(",") if s]
    options = dict(device=args.device, dtype=args.dtype, mode=args.mode, micro_batch_size=args.micro_batch_size, seed=args.seed)
    if not score_only:
        options.update(policy=args.policy, budget=args.budget, constrained=not args.unconstrained,
                       decoding=args.decoding, num_beams=args.num_beams)
    summary = pipeline.run_denoise(splits, dataset.catalog, args.model, args.out, denoise_splits=names, unit=args.unit,
                                   quantile=args.quantile, eta=args.eta, progress=not args.json,
                                   chunk_size=args.chunk_size, score_only=score_only, **options)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table("scored" if score_only else "denoised", _denoise_summary_rows(summary))
    return 0


def cmd_score(args) -> int:
    return _run_pipeline(args, score_only=True)


def cmd_denoise(args) -> int:
    return _run_pipeline(args, score_only=False)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="dataset path (RecBole .inter or folder, ML-100K raw folder, Amazon JSON folder, LLM4DSR CSV "
                        "folder) or 'synthetic[:users=N,items=M,seed=S]' for the embedded default")
    p.add_argument("--format", default="auto",
                   choices=["auto", "recbole", "movielens", "amazon-json", "llm4dsr-csv", "synthetic"])
    p.add_argument("--title-field", default="", help="RecBole .item column used as title (default: auto)")
    p.add_argument("--extra-field", default="", help="RecBole .item column used as extra text (e.g. class)")
    p.add_argument("--min-user-interactions", type=int, default=0, help="k-core filter on users")
    p.add_argument("--min-item-interactions", type=int, default=0, help="k-core filter on items")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="windows", choices=["windows", "loo"])
    p.add_argument("--noise", type=float, default=0.0, help="artificial noise ratio alpha (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=11, help="window length, history + target")


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                   help="auto: bfloat16 where the device multiplies it natively (AVX512-BF16 / AMX-BF16 CPUs, "
                        "CUDA), float32 elsewhere")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (bf16 with --dtype bfloat16 on either)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm4dsr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--threads", type=int, default=0, help="libtorch intra-op threads (default: all cores)")
    parser.add_argument("--float32-matmul-precision", default="", choices=["highest", "high", "medium"],
                        help="torch.set_float32_matmul_precision for float32 models (default: torch's, 'highest'). "
                             "'high': products of 256 rows or more run as bf16x3 on AMX-BF16 CPUs (scoring and prompt "
                             "processing 1.2-1.4x faster) at about 10x fp32's rounding error (see README, Stack); 'medium': "
                             "one bf16 pass")
    parser.add_argument("--fp32-gemm", default="", choices=["auto", "onednn", "aten"],
                        help="library for a float32 model's products (default: $LLM4DSR_FP32_GEMM, else 'auto': oneDNN "
                             "on x86 CPUs with AVX-512 not made by Intel, where MKL's sgemm is 2x slower; see "
                             "llm4dsr.set_fp32_gemm)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("stats", help="dataset statistics")
    _add_data_args(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prepare", help="split a dataset (optionally with artificial noise) and write it")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="output folder (LLM4DSR CSV layout + meta.json)")
    _add_split_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="train a small Llama from scratch on the catalogue and training windows")
    _add_data_args(p)
    _add_split_args(p)
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"])
    p.add_argument("--vocab-size", type=int, default=2000)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="self-supervised instruction tuning (LoRA by default) on the training split")
    _add_data_args(p)
    _add_split_args(p)
    p.add_argument("--base", "--model", dest="base", required=True,
                   help="base model: a short name (smollm2-135m-instruct), an HF/llm4dsr folder, a GGUF file, or "
                        "'scratch[:tiny|small]' to pretrain one on this data first")
    p.add_argument("--out", required=True, help="model folder to write (adapter + tokenizer + llm4dsr.json)")
    p.add_argument("--template", default="llm4dsr-paper", help="prompt template name")
    p.add_argument("--chat-format", default="auto", help="auto (the base's), none, chatml, smollm2")
    p.add_argument("--pairs", type=int, default=5000, help="instruction pairs sampled (the paper: 5,000; 0 = all)")
    p.add_argument("--loss-on", default="response", choices=["response", "all"])
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="q_proj,v_proj", help="comma-separated, or all-linear")
    p.add_argument("--full", action="store_true",
                   help="train every parameter instead of LoRA adapters (always so for --base scratch)")
    p.add_argument("--epochs", type=int, default=None, help="default 1 (3 for --base scratch)")
    p.add_argument("--lr", type=float, default=None, help="default 3e-4 (3e-3 for --base scratch)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast over fp32 weights (where bf16 is native, --dtype bfloat16 trains faster to "
                        "the same loss)")
    _add_device_args(p)
    p.add_argument("--save-steps", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.set_defaults(func=cmd_finetune)

    def add_pipeline_args(p: argparse.ArgumentParser, default_splits: str) -> None:
        _add_data_args(p)
        _add_split_args(p)
        p.add_argument("--model", required=True, help="a fine-tuned model folder (finetune --out), or any model name/path")
        p.add_argument("--out", required=True, help="output folder (work/ holds the resumable per-chunk files)")
        p.add_argument("--splits", default=default_splits, help="comma-separated splits to process")
        p.add_argument("--unit", default="user", choices=["user", "window"],
                       help="user: each interaction scored once per user (default); window: every window (paper)")
        p.add_argument("--mode", default="first-token", choices=["first-token", "exact"])
        p.add_argument("--quantile", type=float, default=0.9, help="eta as this quantile of the VALIDATION scores")
        p.add_argument("--eta", type=float, default=None, help="absolute eta (overrides --quantile)")
        _add_device_args(p)
        p.add_argument("--micro-batch-size", type=int, default=None,
                       help="sequences per forward (default: the scorer's 32, the generator's 16)")
        p.add_argument("--chunk-size", type=int, default=64, help="sequences per resumable chunk")

    p = sub.add_parser("score", help="P_noise of every item of the chosen splits (JSON lines)")
    add_pipeline_args(p, "train,valid,test")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("denoise", help="score, threshold on validation, replace; write the denoised dataset")
    add_pipeline_args(p, "train,test")
    p.add_argument("--policy", default="llm4dsr",
                   choices=["llm4dsr", "without-uncertainty", "without-completion", "popularity-completion"])
    p.add_argument("--budget", type=int, default=1, help="most items modified per sequence (b; 0 = no limit)")
    p.add_argument("--unconstrained", action="store_true",
                   help="free generation + embedding grounding (the paper) instead of catalogue-constrained decoding")
    p.add_argument("--decoding", default="greedy", choices=["greedy", "beam"])
    p.add_argument("--num-beams", type=int, default=4)
    p.set_defaults(func=cmd_denoise)
    return parser


def _resolve_dtype(args) -> None:
    """--dtype auto becomes the device's dtype here, so that summaries and model cards name the real one;
    bf16 asked for where it is emulated gets a warning, since it then runs several times slower than fp32."""
    import llm4dsr

    device = getattr(args, "device", "cpu")
    if getattr(args, "dtype", None) == "auto":
        args.dtype = llm4dsr.auto_dtype(device)
    wants_bf16 = getattr(args, "dtype", None) == "bfloat16" or getattr(args, "bf16", False)
    if wants_bf16 and not llm4dsr.native_bf16_matmul(device):
        print(f"llm4dsr: warning: no bf16 matrix instructions on '{device}' (AVX512-BF16 or AMX-BF16): bf16 products "
              "are emulated there, several times slower than float32 (--dtype auto, without --bf16, runs float32 here)",
              file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import llm4dsr

    if args.version:
        print(llm4dsr.__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    if args.threads:
        llm4dsr.set_num_threads(args.threads)
    if args.float32_matmul_precision:
        import torch

        torch.set_float32_matmul_precision(args.float32_matmul_precision)
    try:
        if args.fp32_gemm:
            llm4dsr.set_fp32_gemm(args.fp32_gemm)
        _resolve_dtype(args)
        return args.func(args)
    except (llm4dsr.Error, OSError) as e:  # OSError: an output folder that cannot be made or written, a full disk
        print(f"llm4dsr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
