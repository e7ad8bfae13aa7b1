"""Noise scoring (P_noise, paper Eq. 2) on CPU (or --device cuda): llm4dsr.UncertaintyScorer vs the authors' way,
same model, same run.

Two parts (--parts; both by default):

throughput  SmolLM2-135M-Instruct (llm4dsr.load_pretrained("smollm2-135m-instruct"): the Q4_1 GGUF dequantised
            to fp32), prompt template and chat format from its model card. The sequences are the histories
            (window minus its target, 10 items) of the first --sequences test windows of the synthetic dataset
            (llm4dsr.make_synthetic(), prepare(split="windows", noise=0.1)), or of --data.
  ours      UncertaintyScorer(mode=..., micro_batch_size=B).score(sequences): tokenisation (the scoring plan)
            included, for B in --batches and both modes:
              first-token  one prefix forward per sequence, batched B at a time (left padding, similar
                           lengths together), lm_head only at the positions read; the prompt head every
                           sequence shares (BOS, chat header, the template's opening words: S tokens) runs
                           once and each micro-batch continues from its keys/values;
              exact        the same prefix forward (keeping its KV cache), then one teacher-forced pass over
                           the rest of all the micro-batch's distinct titles, packed in their sequence's row
                           and reading that cache in place.
  authors   what their generate_noise_prob_data.py does, faithfully: for each sequence separately, the HF
            tokenizer on the prompt text, one transformers forward at batch 1 under torch.no_grad() with the
            default call (logits at every position), softmax of the last position's logits, and the
            probability of the first token of each title tokenised standalone. The prompt text is our
            template's scoring prefix, so both sides feed the model identical token ids (checked), and the
            model is ours saved with llm4dsr.save_pretrained and loaded with transformers'
            AutoModelForCausalLM / AutoTokenizer (logits checked to agree; its scores checked to equal ours in
            first_token_context="standalone", which reproduces their token choice).
  matmul    torch.matmul (oneDNN's fp32 linear where ours runs fp32 products through it:
            bench_common.reference_library) at the model's GEMM shapes for a prefix forward of a micro-batch: the projections at
            M = B * (mean prefix length - S) rows, lm_head at B rows, weighted by how often a forward runs each.
            The rate a scorer made of nothing but these products would reach; exact mode's title passes run
            at smaller shapes (about 10 titles x 4 tokens rows), so its fraction is lower by construction.

  Figures per row: sequences/s, prompt tokens/s (prefix tokens of the scoring plans, no padding, / seconds;
  the same count for both modes), GFLOP/s, its fraction of the matmul GFLOP/s at that B, and ours/authors
  (sequences/s ratio against the authors' way measured in the same rounds). FLOPs count the useful work
  analytically (no pads), elementwise work (norms, RoPE, softmax, SiLU) not counted:
      Pm      matmul weights (q, k, v, o, gate, up, down per layer; lm_head = vocab * hidden)
      prefix  2 * (Pm - lm_head) * P + 2 * lm_head * K + 4 * P^2 * heads * head_dim * layers
              (P prefix tokens, K logit positions read, almost always 1; attention over the full P x P square
              as in bench_model.py)
      exact   + per distinct title of n > 1 tokens, n - 1 teacher-forced tokens, each
              2 * Pm + 4 * (keys) * heads * head_dim * layers with keys = context + its position + 1
  The authors' row is credited with the first-token prefix FLOPs (the task's work); their forward also
  computes the full-vocabulary logits at every other position, which is not counted. Our rows are
  credited with what they compute: the shared head once (S tokens, attention S x S) and per sequence
  the P - S tokens after it (attention (P - S) x P), so their GFLOP/s stays a measure of efficiency and
  the head's saving shows in sequences/s only.

  Timing: the scorers (one per mode and B) are built once and warmed up on min(B, 8) sequences; then
  --repeats rounds, in each of which the authors' way, every (mode, B) of ours and the matmul references
  run in turn over all the sequences, so load from other processes drifting during the run falls on all
  of them alike. Each figure is the median over the rounds.

memory      peak memory of scoring N short synthetic sequences (--memory-items titles each) with a tiny model
            (ModelConfig.preset("tiny"), SmolLM2's tokenizer when its GGUF is there, else a sentencepiece
            model trained on the titles), each N in a fresh process so that every peak is its own:
  streamed  the sequences are generated, scored and written (log_prob, float32, to a file) --memory-chunk at a
            time; nothing is kept across chunks (the chunks are scorer.score calls made from Python).
  score_chunks  the whole split generated up front as one array (as a user's split would be), then one
            scorer.score_chunks(split, catalog, sink) call whose sink writes each chunk of --memory-chunk
            results: the split's own ids grow with N, the results do not accumulate.
  all       one scorer.score() call over all N, the results kept in a list, then written: what accumulating
            looks like, for contrast.
  Figures: VmRSS after setup (model, tokenizer, catalogue), VmHWM (peak resident set) after the first chunk
  and at the end, and the growth of the peak beyond the first chunk: flat in N when scoring streams.

Threads: --threads (default 2) for libtorch in every process (llm4dsr.set_num_threads and
torch.set_num_threads); OMP_WAIT_POLICY defaults to PASSIVE (see bench_smollm2.py: with spinning waiters, a
busy two-core machine stalls at random). --dtype bfloat16 runs both sides in bf16 (the peer checks still run
in float32 first, then both models are converted). The default run takes about 10 minutes on two idle
cores, most of it exact mode, and 15 with other work on them; --quick (32 sequences, batches 1 8 32, 1
round, memory at 5k and 20k) about 2 minutes.

Target it is judged by, printed at the end: ours >= 3x the authors' way (sequences/s).

    .venv/bin/python benchmarks/bench_scoring.py [--sequences 64] [--batches 1 2 4 8 16 32 64]
        [--modes first-token exact] [--repeats 3] [--threads 2] [--data PATH] [--parts throughput memory]
        [--memory] [--memory-sizes 10000 100000] [--quick] [--json out.json]
"""
from __future__ import annotations

import os

# Before torch (through llm4dsr) loads its OpenMP runtime, which reads it once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import llm4dsr  # noqa: E402
from bench_common import MatmulReference, matmul_params, memory_mb  # noqa: E402

MODEL = "smollm2-135m-instruct"
MODES = ["first-token", "exact"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_MICRO_BATCH = 32  # UncertaintyScorer's default
TARGET = 3.0


MEMORY_VARIANTS = ["streamed", "score_chunks", "all"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["throughput", "memory"], choices=["throughput", "memory"])
    p.add_argument("--memory", action="store_true", help="the memory part only (same as --parts memory)")
    p.add_argument("--quick", action="store_true",
                   help="32 sequences, batches 1 8 32, 1 round, memory at 5000 and 20000 sequences")
    p.add_argument("--sequences", type=int, default=64, help="sequences scored per timed run")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per figure (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda[:N]: the throughput part's two scorers and matmul reference run there (the "
                        "peer checks run on the CPU in float32 first); the memory part stays on the CPU")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="weights and activations of both sides (the checks run in float32 first)")
    p.add_argument("--float32-matmul-precision", default="highest", choices=["highest", "high"],
                   help="torch.set_float32_matmul_precision for the timed part, both sides and the matmul "
                        "reference (the peer checks run at 'highest' first). 'high': ours runs its fp32 products "
                        "of 256 rows or more as bf16x3 (llm4dsr.bf16x3_matmul_available())")
    p.add_argument("--data", default="", help="a dataset path for llm4dsr.read_dataset (default: the synthetic one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-sizes", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--memory-variants", nargs="+", default=list(MEMORY_VARIANTS), choices=MEMORY_VARIANTS)
    p.add_argument("--memory-items", type=int, default=5, help="titles per sequence in the memory part")
    p.add_argument("--memory-chunk", type=int, default=1024, help="sequences per streamed chunk")
    p.add_argument("--json", default="", help="also write every figure to this file")
    p.add_argument("--memory-worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--memory-variant", default="streamed", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory:
        args.parts = ["memory"]
    if args.quick:
        args.sequences, args.batches, args.repeats = 32, [1, 8, 32], 1
        args.memory_sizes = [5000, 20000]
    args.batches = sorted(set(args.batches))
    if "throughput" in args.parts and args.batches[-1] > args.sequences:
        p.error(f"micro-batch {args.batches[-1]} is larger than --sequences {args.sequences}")
    return args


def set_threads(n: int) -> None:
    llm4dsr.set_num_threads(n)
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------
# FLOPs (conventions of bench_model.py)


def attention_per_query_key(config) -> int:
    return 4 * config.num_attention_heads * config.head_dim * config.num_hidden_layers


def shared_head_length(plans) -> int:
    """UncertaintyScorer.shared_prefix_length, recomputed: the plans' longest common prefix, short of
    every read (a title read after context c needs the logits at c - 1 computed per sequence)."""
    first = list(plans[0]["prefix_ids"])
    shared = len(first)
    for p in plans:
        ids = list(p["prefix_ids"])
        n = 0
        while n < min(shared, len(ids)) and ids[n] == first[n]:
            n += 1
        shared = n
        for c, e in zip(p["context_length"], p["event"]):
            if e >= 0:
                shared = min(shared, max(0, int(c) - 1))
    return shared


class Workload:
    """Token and FLOP counts of scoring `sequences`, from the scorers' own plans."""

    def __init__(self, config, plans_first, plans_exact):
        pm, lm_head, a = matmul_params(config), config.hidden_size * config.vocab_size, attention_per_query_key(config)
        self.sequences = len(plans_first)
        self.prefix_tokens = sum(len(p["prefix_ids"]) for p in plans_first)
        self.mean_prefix = self.prefix_tokens / self.sequences
        self.flops = {}         # the task's work: every prefix token of every sequence
        self.flops_ours = {}    # what our scorer computes: the shared head once
        self.shared_head = {}
        self.title_tokens = 0
        for mode, plans in (("first-token", plans_first), ("exact", plans_exact)):
            S = shared_head_length(plans)
            self.shared_head[mode] = S
            total, ours = 0, 2 * (pm - lm_head) * S + a * S * S
            for p in plans:
                P = len(p["prefix_ids"])
                contexts = {int(c) for c, e in zip(p["context_length"], p["event"]) if e >= 0}
                total += 2 * (pm - lm_head) * P + 2 * lm_head * len(contexts) + a * P * P
                ours += 2 * (pm - lm_head) * (P - S) + 2 * lm_head * len(contexts) + a * (P - S) * P
                title_flops = 0
                if mode == "exact":
                    seen = set()
                    for c, ids, e in zip(p["context_length"], p["scored_ids"], p["event"]):
                        if e < 0 or e in seen:
                            continue
                        seen.add(e)
                        for j in range(len(ids) - 1):
                            title_flops += 2 * pm + a * (int(c) + j + 1)
                            self.title_tokens += 1
                total += title_flops
                ours += title_flops
            self.flops[mode] = total
            self.flops_ours[mode] = ours


# ---------------------------------------------------------------------------------------------------
# The authors' way


class AuthorsScorer:
    """generate_noise_prob_data.py's loop: per sequence one HF forward at batch 1, softmax of the last
    position's logits, the first token of each title tokenised alone."""

    def __init__(self, hf_model, hf_tokenizer, template, chat):
        self.model, self.tokenizer, self.template, self.chat = hf_model, hf_tokenizer, template, chat

    def prompt(self, titles):
        return self.template.scoring_prefix(titles, self.chat)

    def score(self, sequences, catalog):
        out = []
        for items in sequences:
            titles = [self.template.sanitize_title(catalog.title(int(i))) for i in items]
            inputs = self.tokenizer(self.prompt(titles), return_tensors="pt").to(self.model.device)
            with torch.no_grad():
                logits = self.model(**inputs).logits
            probs = torch.softmax(logits[0, -1], dim=-1)
            first = [self.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in titles]
            out.append(probs[first].tolist())
        return out


def load_authors_peer(pm, folder):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    llm4dsr.save_pretrained(pm, folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return model, tokenizer, transformers.__version__


def check_peer(pm, authors, scorer_standalone, sequences, catalog, plans) -> dict:
    """Same input ids, same logits, same scores as ours with the authors' token choice."""
    same_ids = 0
    for items, p in zip(sequences, plans):
        titles = [authors.template.sanitize_title(catalog.title(int(i))) for i in items]
        ids = authors.tokenizer(authors.prompt(titles))["input_ids"]
        same_ids += int(list(ids) == [int(x) for x in p["prefix_ids"]])
    if same_ids != len(sequences):
        raise RuntimeError(f"the HF tokenizer gives our prefix ids for only {same_ids} of {len(sequences)} prompts")
    ids = np.asarray([plans[0]["prefix_ids"]], dtype=np.int64)
    with torch.no_grad():
        ref = authors.model(input_ids=torch.as_tensor(ids)).logits[0].float()
    ours = pm.model.logits(ids)[0].float()
    logit_diff = (ours - ref).abs().max().item()
    if not logit_diff <= 1e-3:
        raise RuntimeError(f"logits differ by {logit_diff}: the two models are not the same")
    few = sequences[:8]
    theirs = authors.score(few, catalog)
    mine = scorer_standalone.score(few, catalog)
    prob_diff = max(float(np.abs(np.exp(m.log_prob.astype(np.float64)) - np.asarray(t)).max())
                    for m, t in zip(mine, theirs))
    if not prob_diff <= 1e-4:
        raise RuntimeError(f"the authors' probabilities differ from ours (standalone) by {prob_diff}")
    return {"same_input_ids": same_ids, "logits_max_abs_diff": logit_diff, "prob_max_abs_diff": prob_diff}


# ---------------------------------------------------------------------------------------------------
# Throughput


def load_sequences(args):
    if args.data:
        ds = llm4dsr.read_dataset(args.data)
        source = f"{args.data} ({ds.name})"
    else:
        ds = llm4dsr.make_synthetic()
        source = "synthetic (make_synthetic())"
    splits = llm4dsr.prepare(ds, split="windows", noise=0.1, seed=args.seed)
    histories = [np.asarray(s.items[:-1], dtype=np.int64) for s in splits.test]
    histories = [h for h in histories if len(h) > 0 and all(ds.catalog.has_title(int(i)) for i in h)]
    if len(histories) < args.sequences:
        raise SystemExit(f"the test split has {len(histories)} usable windows, --sequences {args.sequences} asked")
    return ds.catalog, histories[: args.sequences], source


def median_rounds(fns: dict, repeats: int) -> dict:
    """Median seconds of each function over `repeats` rounds in which they take turns. A function returning
    a float reports its own seconds (the matmul references)."""
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - t0
            times[k].append(result if isinstance(result, float) else elapsed)
        print(f"  round {r + 1}/{repeats} done", flush=True)
    return {k: statistics.median(v) for k, v in times.items()}, times


def run_throughput(args) -> dict:
    pm = llm4dsr.load_pretrained(MODEL)
    pm.model.eval()
    card = pm.card
    config = pm.model.config
    catalog, sequences, source = load_sequences(args)
    template = llm4dsr.PromptTemplate.get(card.prompt_template)
    chat = llm4dsr.ChatFormat.get(card.chat_format)

    def make_scorer(mode, b, context="in-context"):
        return llm4dsr.UncertaintyScorer(pm.model, pm.tokenizer, template=card.prompt_template,
                                         chat_format=card.chat_format, mode=mode, first_token_context=context,
                                         micro_batch_size=b, max_prompt_tokens=card.max_prompt_tokens)

    plans_first = [make_scorer("first-token", 1).plan(s, catalog) for s in sequences]
    plans_exact = [make_scorer("exact", 1).plan(s, catalog) for s in sequences]
    work = Workload(config, plans_first, plans_exact)

    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as folder:
        hf_model, hf_tokenizer, hf_version = load_authors_peer(pm, folder)
    authors = AuthorsScorer(hf_model, hf_tokenizer, template, chat)
    checks = check_peer(pm, authors, make_scorer("first-token", DEFAULT_MICRO_BATCH, "standalone"), sequences,
                        catalog, plans_first)

    torch.set_float32_matmul_precision(args.float32_matmul_precision)
    where = "" if args.device == "cpu" else \
        f"; both scorers on {args.device} ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"llm4dsr {llm4dsr.__version__} vs transformers {hf_version}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}{where}")
    print(f"model {MODEL} ({args.dtype}, float32 matmul precision {args.float32_matmul_precision}; {matmul_params(config) / 1e6:.1f}M matmul weights), "
          f"template {card.prompt_template}, chat {card.chat_format}; data {source}: {work.sequences} test histories, "
          f"prefix {work.mean_prefix:.1f} tokens on average ({work.shared_head['first-token']} shared by all, run once "
          f"by ours), {work.title_tokens} teacher-forced title tokens in exact mode")
    print(f"peer check (float32): identical input ids for {checks['same_input_ids']}/{work.sequences} prompts, "
          f"logits max |diff| {checks['logits_max_abs_diff']:.1e}, authors' probs vs ours (standalone) max |diff| "
          f"{checks['prob_max_abs_diff']:.1e}")
    if args.device == "cpu":
        print(f"fp32 products: ours through {llm4dsr.fp32_gemm()} (llm4dsr.fp32_gemm()), the authors' through "
              f"torch.matmul; the matmul reference times the library ours uses (bench_common.reference_library)")

    if args.dtype != "float32" or args.device != "cpu":
        pm.model.to(args.device, args.dtype)
        hf_model.to(args.device, DTYPES[args.dtype])
    scorers = {(m, b): make_scorer(m, b) for m in args.modes for b in args.batches}
    per_sequence = work.mean_prefix - work.shared_head["first-token"]
    refs = {b: MatmulReference(config, DTYPES[args.dtype], max(1, round(b * per_sequence)), logit_rows=b,
                               min_flops_per_shape=1e9, device=args.device)
            for b in args.batches}
    t0 = time.perf_counter()
    authors.score(sequences[:2], catalog)
    for (m, b), s in scorers.items():
        s.score(sequences[: min(b, 8)], catalog)
    for ref in refs.values():
        ref()
    print(f"warm-up {time.perf_counter() - t0:.0f} s; {args.repeats} timed rounds of {work.sequences} sequences each",
          flush=True)

    fns = {"authors": lambda: authors.score(sequences, catalog)}
    for (m, b), s in scorers.items():
        fns[(m, b)] = (lambda s=s: s.score(sequences, catalog))
    for b, ref in refs.items():
        fns[("matmul", b)] = ref
    med, raw = median_rounds(fns, args.repeats)

    n, tokens = work.sequences, work.prefix_tokens
    rows = []

    def row(who, mode, b, key, flops, ref_b):
        seconds = med[key]
        mm = refs[ref_b].gflops(med[("matmul", ref_b)])
        gf = flops / seconds / 1e9
        return {"who": who, "mode": mode, "micro_batch": b, "seconds": seconds,
                "sequences_per_second": n / seconds, "tokens_per_second": tokens / seconds, "gflops": gf,
                "matmul_gflops": mm, "fraction_of_matmul": gf / mm, "over_authors": med["authors"] / seconds,
                "over_authors_best": min(raw["authors"]) / min(raw[key])}

    authors_row = row("authors", "first-token (standalone)", 1, "authors", work.flops["first-token"],
                      args.batches[0])
    for m in args.modes:
        for b in args.batches:
            rows.append(row("ours", m, b, (m, b), work.flops_ours[m], b))
    return {"model": MODEL, "data": source, "sequences": n, "prefix_tokens": tokens, "mean_prefix": work.mean_prefix,
            "title_tokens_exact": work.title_tokens, "flops": work.flops, "flops_ours": work.flops_ours,
            "shared_head_tokens": work.shared_head, "checks": checks, "authors": authors_row,
            "rows": rows, "raw_seconds": {str(k): v for k, v in raw.items()}, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "transformers": hf_version, "dtype": args.dtype, "device": args.device,
            "float32_matmul_precision": args.float32_matmul_precision}


HEADER = (f"{'':<8} {'mode':<25} {'B':>3} {'seq/s':>8} {'tok/s':>8} {'GFLOP/s':>8} {'matmul':>7} {'of mm':>6} "
          f"{'vs authors':>10} {'(best)':>7}")


def format_row(d) -> str:
    mark = " *" if d["who"] == "ours" and d["micro_batch"] == DEFAULT_MICRO_BATCH else ""
    return (f"{d['who']:<8} {d['mode']:<25} {d['micro_batch']:>3} {d['sequences_per_second']:>8.2f} "
            f"{d['tokens_per_second']:>8.0f} {d['gflops']:>8.1f} {d['matmul_gflops']:>7.1f} "
            f"{100 * d['fraction_of_matmul']:>5.0f}% {d['over_authors']:>9.2f}x {d['over_authors_best']:>6.2f}x{mark}")


def print_throughput(res) -> None:
    print()
    print(HEADER)
    print(format_row(res["authors"]))
    for d in res["rows"]:
        print(format_row(d))
    print(f"(* the scorer's default micro-batch; matmul = the plain product's GFLOP/s (torch.matmul, or oneDNN for fp32 as above) at that B's prefix shapes, the "
          f"authors' row against B = {res['authors']['micro_batch']}'s; tok/s = prefix tokens/s;\n vs authors = ratio "
          f"of the medians, (best) = ratio of the shortest rounds)")
    print()
    for mode in sorted({d["mode"] for d in res["rows"]}, key=MODES.index):
        rs = [d for d in res["rows"] if d["mode"] == mode]
        met = [d for d in rs if d["over_authors"] >= TARGET]
        best = max(rs, key=lambda d: d["over_authors"])
        default = [d for d in rs if d["micro_batch"] == DEFAULT_MICRO_BATCH]
        print(f"target ours >= {TARGET:.0f}x the authors' way, {mode}: {len(met)}/{len(rs)} micro-batch sizes "
              f"(best {best['over_authors']:.2f}x at B = {best['micro_batch']}"
              + (f"; default B = {DEFAULT_MICRO_BATCH}: {default[0]['over_authors']:.2f}x" if default else "") + ")")


# ---------------------------------------------------------------------------------------------------
# Peak memory


def _chunk(seed: int, index: int, count: int, length: int, num_items: int) -> np.ndarray:
    """Chunk `index` of the synthetic sequences: the same rows whichever way they are scored."""
    return np.random.default_rng([seed, index]).integers(1, num_items + 1, size=(count, length), dtype=np.int64)


def memory_worker(args) -> int:
    """One process, one N: prints a JSON line with its memory figures."""
    set_threads(args.threads)
    n, chunk, length = args.memory_worker, args.memory_chunk, args.memory_items
    ds = llm4dsr.make_synthetic()
    catalog = ds.catalog
    gguf = os.path.join(llm4dsr.model_cache_dir(), "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.isfile(gguf):
        tokenizer, tok_name = llm4dsr.load_tokenizer(gguf), "SmolLM2 BPE"
    else:
        tokenizer = llm4dsr.SentencePieceTokenizer.train(catalog.titles, vocab_size=2000, hard_vocab_limit=False)
        tok_name = "sentencepiece trained on the titles"
    model = llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size), "cpu", "float32",
                               args.seed)
    model.eval()
    scorer = llm4dsr.UncertaintyScorer(model, tokenizer, chat_format="none", micro_batch_size=64, chunk_size=chunk)
    chunks = (n + chunk - 1) // chunk
    sizes = [min(chunk, n - c * chunk) for c in range(chunks)]
    out_path = os.path.join(tempfile.gettempdir(), f"bench_scoring_{os.getpid()}.f32")
    setup = memory_mb()
    t0 = time.perf_counter()
    after_first = None
    try:
        with open(out_path, "wb") as f:
            if args.memory_variant == "streamed":
                for c, count in enumerate(sizes):
                    scores = scorer.score(_chunk(args.seed, c, count, length, len(catalog)), catalog)
                    np.concatenate([s.log_prob for s in scores]).tofile(f)
                    del scores
                    if c == 0:
                        after_first = memory_mb()["VmHWM"]
            elif args.memory_variant == "score_chunks":
                split = np.concatenate([_chunk(args.seed, c, count, length, len(catalog))
                                        for c, count in enumerate(sizes)])

                def sink(first, scores):
                    nonlocal after_first
                    np.concatenate([s.log_prob for s in scores]).tofile(f)
                    if first == 0:
                        after_first = memory_mb()["VmHWM"]

                scorer.score_chunks(split, catalog, sink)
            else:
                every = np.concatenate([_chunk(args.seed, c, count, length, len(catalog))
                                        for c, count in enumerate(sizes)])
                scores = scorer.score(every, catalog)
                np.concatenate([s.log_prob for s in scores]).tofile(f)
        seconds = time.perf_counter() - t0
        written = os.path.getsize(out_path)
    finally:
        if os.path.exists(out_path):
            os.remove(out_path)
    end = memory_mb()
    if written != n * length * 4:
        raise RuntimeError(f"wrote {written} bytes, {n * length * 4} expected")
    print(json.dumps({"sequences": n, "variant": args.memory_variant, "tokenizer": tok_name, "seconds": seconds,
                      "sequences_per_second": n / seconds, "rss_setup_mb": setup["VmRSS"],
                      "hwm_setup_mb": setup["VmHWM"], "hwm_first_chunk_mb": after_first, "hwm_end_mb": end["VmHWM"],
                      "rss_end_mb": end["VmRSS"], "bytes_written": written}), flush=True)
    return 0


def run_memory(args) -> list:
    results = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for variant in args.memory_variants:
        for n in args.memory_sizes:
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", str(n), "--memory-variant", variant,
                   "--memory-items", str(args.memory_items), "--memory-chunk", str(args.memory_chunk), "--threads",
                   str(args.threads), "--seed", str(args.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
            if proc.returncode != 0 or not lines:
                err = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                raise RuntimeError(f"memory worker {variant} N={n} failed ({proc.returncode}): {err}")
            results.append(json.loads(lines[-1]))
            r = results[-1]
            print(f"  {variant} N={n}: peak {r['hwm_end_mb']:.1f} MB, {r['sequences_per_second']:.0f} seq/s",
                  flush=True)
    return results


def print_memory(results, args) -> None:
    print()
    print(f"peak memory, tiny model ({results[0]['tokenizer']} tokenizer), {args.memory_items} titles per sequence, "
          f"streamed chunks of {args.memory_chunk}; one process per row")
    head = (f"{'variant':<12} {'N':>7} {'seq/s':>7} {'RSS setup MB':>13} {'peak@chunk1':>12} {'peak end MB':>12} "
            f"{'peak - setup':>13} {'peak - chunk1':>14}")
    print(head)
    for r in results:
        first = r["hwm_first_chunk_mb"]
        print(f"{r['variant']:<12} {r['sequences']:>7} {r['sequences_per_second']:>7.0f} {r['rss_setup_mb']:>13.1f} "
              f"{(first if first is not None else float('nan')):>12.1f} {r['hwm_end_mb']:>12.1f} "
              f"{r['hwm_end_mb'] - r['rss_setup_mb']:>13.1f} "
              + (f"{r['hwm_end_mb'] - first:>14.1f}" if first is not None else f"{'-':>14}"))
    for variant in MEMORY_VARIANTS:
        rows = [r for r in results if r["variant"] == variant]
        if len(rows) >= 2:
            lo, hi = min(rows, key=lambda r: r["sequences"]), max(rows, key=lambda r: r["sequences"])
            growth = hi["hwm_end_mb"] - lo["hwm_end_mb"]
            print(f"{variant}: peak at N={hi['sequences']} is {growth:+.1f} MB from N={lo['sequences']} "
                  f"({growth * 1024 * 1024 / max(1, hi['sequences'] - lo['sequences']):.0f} bytes per extra sequence)")


# ---------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        return memory_worker(args)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    out = {"load_average_start": os.getloadavg()[0]}
    if "throughput" in args.parts:
        out["throughput"] = run_throughput(args)
        print_throughput(out["throughput"])
    if "memory" in args.parts:
        print("\nmemory part", flush=True)
        out["memory"] = run_memory(args)
        print_memory(out["memory"], args)
    out["load_average_end"] = os.getloadavg()[0]
    print(f"\nload average {out['load_average_start']:.1f} at start, {out['load_average_end']:.1f} at end; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
