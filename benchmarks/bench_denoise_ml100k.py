"""Noise detection on MovieLens-100K: SmolLM2 + LoRA vs a from-scratch model vs a random flagger vs a
popularity flagger, in one run.

Protocol (LLM4DSR's): ML-100K (../shared/data/ml-100k) in sliding windows of 11 items, 10% artificial
noise (each interaction replaced by a uniformly random item with probability 0.1, test targets never),
split 8:1:1 by time. Each model is instruction-tuned on the TRAINING split only (self-supervised: one
random replacement per window; --pairs pairs). Evaluation: the histories (10 items) of --test-windows
validation windows, disjoint from the --valid-windows ones η is chosen on (the test split's histories
are nearly all never-noised test targets, about 1% noise). Each flagger flags at most b = 1 item per
window:

  smollm2-lora   SmolLM2-135M-Instruct + LoRA (default r 16, alpha 32, all linear layers, lr 2e-3: the
                 authors' r 8 on q/v learns too slowly for a 135M model in a CPU-sized run), P_noise
                 in each of --modes (exact: every title token, paper Eq. 2; first-token)
  scratch        a tiny Llama pretrained from scratch on the catalogue titles and a sample of the
                 training windows as text (sentencepiece trained by the library), then fully
                 instruction-tuned on the same pairs (lr 1e-3)
  random         one uniformly random position per window
  popularity     the least popular item of the window (popularity counted on the training split)
  seqlm-surprisal  (with --seqlm-fraction; an experiment, NOT the paper's method) SmolLM2 + LoRA trained as a
                 language model on the training split's interactions as text, each item scored by its
                 surprisal given the items before it (see sequence_lm_flagger); not counted among the "others"

Reported per flagger: precision / recall / F1 at b = 1 with η = the --quantile of the VALIDATION
windows' scores (models) or flagging every window (random, popularity: they have no calibrated score),
"top-1" P/R/F1 (every window flags its highest-scored item, the comparison that treats all four alike),
and PR-AUC (average precision of the per-item scores over all test positions; random: the noise rate;
popularity: score = -popularity). Wall time of each stage is printed. --seeds runs the whole thing per
seed (a new noise draw, pair sample and test sample) and prints the margin of SmolLM2 + LoRA over the
best other flagger per seed.

Per-window vs per-user units (--unit-users users' training windows; see compare_units) are reported
for SmolLM2 + LoRA in the last of --modes.

    .venv/bin/python benchmarks/bench_denoise_ml100k.py [--seeds 1 2] [--pairs 1000] [--epochs 1] [--test-windows 1000]
        [--device cuda] [--no-scratch] [--seqlm-fraction 0.25]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

import llm4dsr
from llm4dsr.pretraining import pretrain_from_scratch
from llm4dsr.pipeline import Unit


def lora_targets(spec):
    """--target-modules as add_lora takes it: "all-linear" or a list of module names."""
    return spec if spec == "all-linear" else spec.split(",")


def finetune(base, splits, catalog, pairs, seed, full, bf16, epochs, lr, out_dir, lora_r=8, target_modules="q_proj,v_proj",
             loss_on="response"):
    builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", chat_format=base.card.chat_format,
                                         max_pairs=pairs, seed=seed, loss_on=loss_on)
    data = builder.tokenize(builder.make_pairs(splits.train, catalog), base.tokenizer)
    model = base.model
    if not full:
        model.add_lora(r=lora_r, alpha=2 * lora_r, dropout=0.05, target_modules=lora_targets(target_modules), seed=seed)
    pad = base.tokenizer.pad_id if base.tokenizer.pad_id >= 0 else 0
    trainer = llm4dsr.Trainer(model, learning_rate=lr, num_epochs=epochs, micro_batch_size=8, bf16=bf16,
                              pad_token_id=pad, seed=seed, output_dir=out_dir, save_steps=10_000, progress=True)
    result = trainer.train(data)
    return result


def flag_metrics(flags, labels):
    f = np.concatenate(flags)
    return llm4dsr.detection_metrics(f, np.concatenate(labels))


def make_scorer(pretrained, micro_batch_size, mode):
    card = pretrained.card
    return llm4dsr.UncertaintyScorer(pretrained.model, pretrained.tokenizer, template=card.prompt_template,
                                     chat_format=card.chat_format, micro_batch_size=micro_batch_size, mode=mode)


def score_metrics(scores, labels, eta):
    """P/R/F1 with at most one flag per sequence above `eta` and at top-1, and PR-AUC of P_noise."""
    out = {}
    for key, threshold in (("at_eta", eta), ("top1", -np.inf)):
        flags = llm4dsr.flag_noise(scores, threshold, budget=1)
        out[key] = flag_metrics([np.isin(np.arange(len(l)), f) for f, l in zip(flags, labels)], labels)
    p = np.concatenate([np.exp(np.asarray(s.log_prob, np.float64)) for s in scores])
    out["pr_auc"] = llm4dsr.average_precision(p, np.concatenate(labels))
    return out


def model_flagger(name, pretrained, catalog, histories, valid_histories, labels, quantile, micro_batch_size, mode):
    scorer = make_scorer(pretrained, micro_batch_size, mode)
    t0 = time.perf_counter()
    scores = scorer.score(histories, catalog)
    score_seconds = time.perf_counter() - t0
    eta = llm4dsr.noise_threshold(scorer.score(valid_histories, catalog), quantile)
    return {"eta": eta, **score_metrics(scores, labels, eta), "score_seconds": score_seconds}


def compare_units(pretrained, catalog, train, num_users, quantile, micro_batch_size, mode, rng):
    """Per-window vs per-user denoising of the same users' TRAINING interactions (the split LLM4DSR
    cleans), one flag per sequence at most. Per window, each interaction is judged in every window that
    holds it (up to 10 times, and the verdicts may disagree); per user, once. Metrics count what each
    unit decides on: window positions for per-window, interactions for per-user. η is the --quantile
    of the unit's own scores here (there is no validation counterpart of a training sample)."""
    users = sorted({w.user_id for w in train})
    chosen = set(rng.choice(users, size=min(num_users, len(users)), replace=False).tolist())
    windows = llm4dsr.SequenceSet([w for w in train if w.user_id in chosen])
    scorer = make_scorer(pretrained, micro_batch_size, mode)
    out = {}
    for name in ("window", "user"):
        unit = Unit(windows, name, "train", chunk_length=len(train[0].items) - 1)
        t0 = time.perf_counter()
        scores = scorer.score(unit.sequences, catalog)
        seconds = time.perf_counter() - t0
        out[name] = {"sequences": len(unit.sequences), "positions": int(sum(len(x) for x in unit.sequences)),
                     "score_seconds": seconds,
                     **score_metrics(scores, [l == 1 for l in unit.labels], llm4dsr.noise_threshold(scores, quantile))}
    return out


SEQUENCE_LM_HEADER = "Here is a list of items a user interacted with, in order:\n"


def sequence_lm_text(tokenizer, catalog, items, title_ids):
    """Token ids of EOS (what precedes a text in the training blocks, which join texts with EOS), the
    header, then each title on its own line; and the (start, end) span of each title."""
    ids, spans = [tokenizer.eos_id] + tokenizer.encode(SEQUENCE_LM_HEADER), []
    newline = tokenizer.encode("\n")
    for item in items:
        item = int(item)
        if item not in title_ids:
            title_ids[item] = tokenizer.encode(catalog.title(item))
        spans.append((len(ids), len(ids) + len(title_ids[item])))
        ids = ids + title_ids[item] + newline
    return ids, spans


def sequence_lm_flagger(args, splits, catalog, histories, valid_histories, labels, seed):
    """NOT the paper's method (an experiment for comparison): SmolLM2 + LoRA trained as a language model on
    the training split's interactions as text (each user's history in chunks of 20 titles, one per line,
    loss on every token, --seqlm-fraction of the chunks), then each item scored by its surprisal in its
    window, -log P(title | header and the titles before it): under uniform replacement noise the Bayes
    posterior that item k is the noise is proportional to 1 / P_clean(s_k | the rest), and a prefix-only
    LM estimates that with the earlier items as the rest. P_noise is the softmax of the surprisals over
    the window's positions."""
    import torch
    t0 = time.perf_counter()
    base = llm4dsr.load_pretrained("smollm2-135m-instruct", device=args.device, dtype=args.dtype)
    tok, model, title_ids = base.tokenizer, base.model, {}
    chunks = list(llm4dsr.user_chunks(splits.train, 20).sequences)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(chunks))[: max(1, int(len(chunks) * args.seqlm_fraction))]
    texts = [sequence_lm_text(tok, catalog, chunks[int(i)], title_ids)[0][1:] for i in pick]  # make_lm_examples adds the EOS
    examples = llm4dsr.make_lm_examples(texts, tok.eos_id, 256)
    model.add_lora(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05, target_modules=lora_targets(args.target_modules),
                   seed=seed)
    trainer = llm4dsr.Trainer(model, learning_rate=args.lr, num_epochs=1, micro_batch_size=8,
                              pad_token_id=tok.pad_id if tok.pad_id >= 0 else 0, seed=seed, progress=True)
    trainer.train(examples)
    train_seconds = time.perf_counter() - t0
    model.eval()

    def surprisal(sequences):
        out = []
        for start in range(0, len(sequences), args.micro_batch_size):
            batch = [sequence_lm_text(tok, catalog, h, title_ids) for h in sequences[start:start + args.micro_batch_size]]
            width = max(len(ids) for ids, _ in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros_like(x)
            for r, (ids, _) in enumerate(batch):
                x[r, width - len(ids):] = torch.tensor(ids)
                mask[r, width - len(ids):] = 1
            with torch.inference_mode():
                logp = torch.log_softmax(model.logits(x, mask).float(), -1)
            token_lp = logp[:, :-1].gather(2, x[:, 1:, None])[..., 0]
            for r, (ids, spans) in enumerate(batch):
                pad = width - len(ids)
                out.append(np.array([-token_lp[r, pad + a - 1:pad + b - 1].sum().item() for a, b in spans]))
        return out

    def as_scores(sequences, surprisals):
        scores = []
        for items, s in zip(sequences, surprisals):
            log_p = (s - np.logaddexp.reduce(s)).astype(np.float32)  # log softmax over positions
            rank = np.argsort(np.argsort(-log_p, kind="stable"), kind="stable") + 1
            scores.append(llm4dsr.NoiseScores(items=np.asarray(items, np.int64), log_prob=log_p, prob=np.exp(log_p),
                                              rank=rank.astype(np.int64)))
        return scores

    t0 = time.perf_counter()
    scores = as_scores(histories, surprisal(histories))
    score_seconds = time.perf_counter() - t0
    eta = llm4dsr.noise_threshold(as_scores(valid_histories, surprisal(valid_histories)), args.quantile)
    return {"eta": eta, **score_metrics(scores, labels, eta)}, train_seconds, score_seconds


def run_seed(args, seed):
    timings = {}
    t0 = time.perf_counter()
    dataset = llm4dsr.read_dataset(args.data)
    splits = llm4dsr.prepare(dataset, split="windows", noise=args.noise, seed=seed)
    rng = np.random.default_rng(seed)
    # Evaluation windows come from the validation split, disjoint from the ones η is chosen on. The test
    # split is no use here: its windows' targets are never noised and its windows overlap, so its
    # histories are almost all protected targets (about 1% noise on ML-100K instead of 10%).
    order = rng.permutation(len(splits.valid))
    eta_idx = order[: args.valid_windows]
    eval_idx = order[args.valid_windows: args.valid_windows + args.test_windows]
    test = [splits.valid[int(i)] for i in sorted(eval_idx)]
    histories = [np.asarray(w.items[:-1]) for w in test]
    labels = [np.asarray(w.labels[:-1]) == 1 for w in test]
    valid_histories = [np.asarray(splits.valid[int(i)].items[:-1]) for i in sorted(eta_idx)]
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
        base = llm4dsr.load_pretrained("smollm2-135m-instruct", device=args.device, dtype=args.dtype)
        finetune(base, splits, dataset.catalog, args.pairs, seed, full=False, bf16=args.bf16, epochs=args.epochs, lr=args.lr,
                 out_dir=os.path.join(tmp, "smollm2"), lora_r=args.lora_r, target_modules=args.target_modules,
                 loss_on=args.loss_on)
        timings["smollm2_finetune"] = time.perf_counter() - t0
        for mode in args.modes:
            key = "smollm2-lora" + ("" if mode == args.modes[0] else f" ({mode})")
            results[key] = model_flagger(key, base, dataset.catalog, histories, valid_histories, labels, args.quantile,
                                         args.micro_batch_size, mode)
            timings[f"smollm2_score_{mode}"] = results[key].pop("score_seconds")
        units = None
        if args.unit_users > 0:
            units = compare_units(base, dataset.catalog, splits.train, args.unit_users, args.quantile,
                                  args.micro_batch_size, args.modes[-1], rng)
        del base
        if args.seqlm_fraction > 0:
            results["seqlm-surprisal"], timings["seqlm_train"], timings["seqlm_score"] = sequence_lm_flagger(
                args, splits, dataset.catalog, histories, valid_histories, labels, seed)
        if not args.scratch:
            return results, timings, {"test_windows": len(test), "noise_rate": float(np.concatenate(labels).mean()),
                                      "units": units}

        # From scratch: pretrain, then full instruction tuning (on the CPU: the model is tiny).
        t0 = time.perf_counter()
        # Pretraining text: the titles and a sample of --scratch-windows training windows (all 75k
        # windows for several epochs would take hours on two cores).
        pre_splits = llm4dsr.Splits()
        pick = rng.choice(len(splits.train), size=min(args.scratch_windows, len(splits.train)), replace=False)
        pre_splits.train = llm4dsr.SequenceSet([splits.train[int(i)] for i in sorted(pick)])
        scratch, _, _ = pretrain_from_scratch(dataset, pre_splits, os.path.join(tmp, "scratch"), preset="tiny",
                                              epochs=args.scratch_epochs, seed=seed)
        timings["scratch_pretrain"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        finetune(scratch, splits, dataset.catalog, args.pairs, seed, full=True, bf16=False, epochs=1, lr=1e-3,
                 out_dir=os.path.join(tmp, "scratch-ft"))
        timings["scratch_finetune"] = time.perf_counter() - t0
        results["scratch"] = model_flagger("scratch", scratch, dataset.catalog, histories, valid_histories, labels, args.quantile,
                                           args.micro_batch_size, args.modes[0])
        timings["scratch_score"] = results["scratch"].pop("score_seconds")
    return results, timings, {"test_windows": len(test), "noise_rate": float(np.concatenate(labels).mean()),
                              "units": units}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ml-100k"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs over the --pairs pairs (SmolLM2 + LoRA)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] for SmolLM2 + LoRA (fine-tuning and scoring)")
    p.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True,
                   help="also the from-scratch model (--no-scratch: SmolLM2 + LoRA against random and popularity only)")
    p.add_argument("--loss-on", default="response", choices=["response", "all"],
                   help="SmolLM2 + LoRA's loss mask: the response (paper Eq. 1) or every token (the authors' code)")
    p.add_argument("--lora-r", type=int, default=16, help="alpha = 2 r")
    p.add_argument("--target-modules", default="all-linear", help="comma-separated, or all-linear")
    p.add_argument("--modes", nargs="+", default=["exact", "first-token"], help="scoring modes; the first is headline")
    p.add_argument("--test-windows", type=int, default=1000)
    p.add_argument("--valid-windows", type=int, default=300)
    p.add_argument("--quantile", type=float, default=0.9)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast in training (off by default: with --dtype bfloat16 the weights are bf16 already, "
                        "and autocast only adds casts)")
    p.add_argument("--scratch-epochs", type=int, default=2)
    p.add_argument("--scratch-windows", type=int, default=5000)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--unit-users", type=int, default=40,
                   help="compare per-window and per-user denoising on this many users' training windows (0: skip)")
    p.add_argument("--seqlm-fraction", type=float, default=0.0,
                   help="also the sequence-LM surprisal flagger (not the paper's method; see sequence_lm_flagger), "
                        "trained on this fraction of the training split's per-user chunks (0: skip)")
    p.add_argument("--json", default="", help="also write the results to this file")
    a = p.parse_args()
    llm4dsr.set_num_threads(a.threads)
    print(f"threads={llm4dsr.num_threads()} device={a.device} pairs={a.pairs} epochs={a.epochs} "
          f"test_windows={a.test_windows} quantile={a.quantile}")
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
        if info["units"]:
            print(f"units (SmolLM2 + LoRA, {a.modes[-1]}, {a.unit_users} users' training windows):")
            for name, r in info["units"].items():
                e, t = r["at_eta"], r["top1"]
                print(f"  per {name:<7} {r['sequences']:6d} sequences {r['positions']:7d} positions  "
                      f"F1@eta {e['f1']:.3f}  F1 top1 {t['f1']:.3f}  PR-AUC {r['pr_auc']:.3f}  "
                      f"score {r['score_seconds']:.1f} s")
        others = [n for n in results if not n.startswith("smollm2-lora") and n != "seqlm-surprisal"]
        best_f1 = max(results[n]["top1"]["f1"] for n in others)
        best_auc = max(results[n]["pr_auc"] for n in others)
        for name in ("smollm2-lora", "seqlm-surprisal"):
            if name in results:
                print(f"margin of {name} over the best other: top-1 F1 {results[name]['top1']['f1'] - best_f1:+.3f}, "
                      f"PR-AUC {results[name]['pr_auc'] - best_auc:+.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(everything, f, indent=2, default=float)


if __name__ == "__main__":
    main()
