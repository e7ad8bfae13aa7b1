"""Noise detection on MovieLens-100K: SmolLM2 + LoRA vs a from-scratch model vs a random flagger vs a
popularity flagger, in one run.

Protocol (LLM4DSR's): ML-100K (../shared/data/ml-100k) in sliding windows of 11 items, 10% artificial
noise (each interaction replaced by a uniformly random item with probability 0.1, test targets never),
split 8:1:1 by time. Each model is instruction-tuned on the TRAINING split only (self-supervised: one
random replacement per window; --pairs pairs). The test windows' histories (10 items; --test-windows
of them, drawn with a fixed seed) are scored; each flagger flags at most b = 1 item per window:

  smollm2-lora   SmolLM2-135M-Instruct + LoRA (r 8, alpha 16, q/v), P_noise first-token (paper Eq. 2)
  scratch        a tiny Llama pretrained from scratch on the catalogue titles and training windows
                 (sentencepiece trained by the library), then fully instruction-tuned the same way
  random         one uniformly random position per window
  popularity     the least popular item of the window (popularity counted on the training split)

Reported per flagger: precision / recall / F1 at b = 1 with η = the --quantile of the VALIDATION
windows' scores (models) or flagging every window (random, popularity: they have no calibrated score),
"top-1" P/R/F1 (every window flags its highest-scored item, the comparison that treats all four alike),
and PR-AUC (average precision of the per-item scores over all test positions; random: the noise rate;
popularity: score = -popularity). Wall time of each stage is printed. --seeds runs the whole thing per
seed (a new noise draw, pair sample and test sample) and prints the margin of SmolLM2 + LoRA over the
best other flagger per seed.

    .venv/bin/python benchmarks/bench_denoise_ml100k.py [--seeds 1 2] [--pairs 1000] [--test-windows 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

import llm4dsr
from llm4dsr.cli import pretrain_from_scratch


def finetune(base, splits, catalog, pairs, seed, full, bf16, epochs, lr, out_dir):
    builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", chat_format=base.card.chat_format,
                                         max_pairs=pairs, seed=seed)
    data = builder.tokenize(builder.make_pairs(splits.train, catalog), base.tokenizer)
    model = base.model
    if not full:
        model.add_lora(r=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"], seed=seed)
    pad = base.tokenizer.pad_id if base.tokenizer.pad_id >= 0 else 0
    trainer = llm4dsr.Trainer(model, learning_rate=lr, num_epochs=epochs, micro_batch_size=8, bf16=bf16,
                              pad_token_id=pad, seed=seed, output_dir=out_dir, save_steps=10_000, progress=True)
    result = trainer.train(data)
    return result


def flag_metrics(flags, labels):
    f = np.concatenate(flags)
    return llm4dsr.detection_metrics(f, np.concatenate(labels))


def model_flagger(name, pretrained, histories, valid_histories, labels, quantile, micro_batch_size):
    card = pretrained.card
    scorer = llm4dsr.UncertaintyScorer(pretrained.model, pretrained.tokenizer, template=card.prompt_template,
                                       chat_format=card.chat_format, micro_batch_size=micro_batch_size)
    t0 = time.perf_counter()
    scores = scorer.score(histories)
    score_seconds = time.perf_counter() - t0
    valid_scores = scorer.score(valid_histories)
    eta = llm4dsr.noise_threshold(valid_scores, quantile)
    at_eta = llm4dsr.flag_noise(scores, eta, budget=1)
    top1 = llm4dsr.flag_noise(scores, -np.inf, budget=1)
    p = [np.exp(s.log_prob.astype(np.float64)) for s in scores]
    return {
        "eta": eta,
        "at_eta": flag_metrics([np.isin(np.arange(len(l)), f) for f, l in zip(at_eta, labels)], labels),
        "top1": flag_metrics([np.isin(np.arange(len(l)), f) for f, l in zip(top1, labels)], labels),
        "pr_auc": llm4dsr.average_precision(np.concatenate(p), np.concatenate(labels)),
        "score_seconds": score_seconds,
    }


def run_seed(args, seed):
    timings = {}
    t0 = time.perf_counter()
    dataset = llm4dsr.read_dataset(args.data)
    splits = llm4dsr.prepare(dataset, split="windows", noise=args.noise, seed=seed)
    rng = np.random.default_rng(seed)
    test_idx = rng.choice(len(splits.test), size=min(args.test_windows, len(splits.test)), replace=False)
    valid_idx = rng.choice(len(splits.valid), size=min(args.valid_windows, len(splits.valid)), replace=False)
    test = [splits.test[int(i)] for i in sorted(test_idx)]
    histories = [np.asarray(w.items[:-1]) for w in test]
    labels = [np.asarray(w.labels[:-1]) == 1 for w in test]
    valid_histories = [np.asarray(splits.valid[int(i)].items[:-1]) for i in sorted(valid_idx)]
    timings["data"] = time.perf_counter() - t0
    results = {}

    # Random and popularity flaggers.
    t0 = time.perf_counter()
    random_flags = [np.arange(len(l)) == rng.integers(len(l)) for l in labels]
    results["random"] = {"at_eta": flag_metrics(random_flags, labels), "top1": flag_metrics(random_flags, labels),
                         "pr_auc": float(np.concatenate(labels).mean())}
    popularity = np.zeros(len(dataset.catalog) + 1)
    for w in splits.train:
        np.add.at(popularity, np.asarray(w.items[-1:]), 1)  # each training interaction counted once, as a target
    pop_scores = [-popularity[h] for h in histories]
    pop_flags = [np.arange(len(s)) == np.argmax(s) for s in pop_scores]
    results["popularity"] = {"at_eta": flag_metrics(pop_flags, labels), "top1": flag_metrics(pop_flags, labels),
                             "pr_auc": llm4dsr.average_precision(np.concatenate(pop_scores), np.concatenate(labels))}
    timings["baselines"] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        # SmolLM2 + LoRA.
        t0 = time.perf_counter()
        base = llm4dsr.load_pretrained("smollm2-135m-instruct", dtype=args.dtype)
        finetune(base, splits, dataset.catalog, args.pairs, seed, full=False, bf16=args.bf16, epochs=1, lr=args.lr,
                 out_dir=os.path.join(tmp, "smollm2"))
        timings["smollm2_finetune"] = time.perf_counter() - t0
        results["smollm2-lora"] = model_flagger("smollm2-lora", base, histories, valid_histories, labels, args.quantile,
                                                args.micro_batch_size)
        timings["smollm2_score"] = results["smollm2-lora"].pop("score_seconds")
        del base

        # From scratch: pretrain, then full instruction tuning.
        t0 = time.perf_counter()
        scratch, _, _ = pretrain_from_scratch(dataset, splits, os.path.join(tmp, "scratch"), preset="tiny",
                                              epochs=args.scratch_epochs, seed=seed, progress=True)
        timings["scratch_pretrain"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        finetune(scratch, splits, dataset.catalog, args.pairs, seed, full=True, bf16=False, epochs=1, lr=1e-3,
                 out_dir=os.path.join(tmp, "scratch-ft"))
        timings["scratch_finetune"] = time.perf_counter() - t0
        results["scratch"] = model_flagger("scratch", scratch, histories, valid_histories, labels, args.quantile,
                                           args.micro_batch_size)
        timings["scratch_score"] = results["scratch"].pop("score_seconds")
    return results, timings, {"test_windows": len(test), "noise_rate": float(np.concatenate(labels).mean())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ml-100k"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--test-windows", type=int, default=1000)
    p.add_argument("--valid-windows", type=int, default=300)
    p.add_argument("--quantile", type=float, default=0.9)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--bf16", action="store_true", default=True, help="bf16 autocast in training")
    p.add_argument("--scratch-epochs", type=int, default=3)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="", help="also write the results to this file")
    a = p.parse_args()
    llm4dsr.set_num_threads(a.threads)
    print(f"threads={llm4dsr.num_threads()} pairs={a.pairs} test_windows={a.test_windows} quantile={a.quantile}")
    everything = {}
    for seed in a.seeds:
        results, timings, info = run_seed(a, seed)
        everything[seed] = {"results": results, "timings": timings, **info}
        print(f"\nseed {seed}: {info['test_windows']} test windows, noise rate {info['noise_rate']:.3f}")
        print(f"{'flagger':<14} {'P@eta':>7} {'R@eta':>7} {'F1@eta':>7} {'P top1':>7} {'R top1':>7} {'F1 top1':>7} {'PR-AUC':>7}")
        for name, r in results.items():
            e, t = r["at_eta"], r["top1"]
            print(f"{name:<14} {e['precision']:7.3f} {e['recall']:7.3f} {e['f1']:7.3f} "
                  f"{t['precision']:7.3f} {t['recall']:7.3f} {t['f1']:7.3f} {r['pr_auc']:7.3f}")
        print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        others = [n for n in results if n != "smollm2-lora"]
        best_f1 = max(results[n]["top1"]["f1"] for n in others)
        best_auc = max(results[n]["pr_auc"] for n in others)
        print(f"margin of smollm2-lora over the best other: top-1 F1 {results['smollm2-lora']['top1']['f1'] - best_f1:+.3f}, "
              f"PR-AUC {results['smollm2-lora']['pr_auc'] - best_auc:+.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(everything, f, indent=2, default=float)


if __name__ == "__main__":
    main()
