"""The denoising job over a prepared dataset: score -> choose eta on validation -> correct -> write.

What ``llm4dsr score`` and ``llm4dsr denoise`` run, usable from a notebook too (``run_denoise``).

Units of work over the windows of a split (see ``Denoiser`` in the C++ headers):
  user    each user's history positions once, in non-overlapping chunks of the window's history
          length; corrections reach every window holding the position (the CPU default);
  window  every window's history separately (the paper's protocol: an interaction is scored once
          per window that holds it).

Resumability: scores and reports are appended to ``<out>/work/scores-<hash>/<split>.scores.jsonl`` and
``.../reports-<hash>/<split>.report.jsonl`` one chunk at a time (flushed and fsynced), so an interrupted
run loses nothing it wrote; a re-run reads them back (dropping a partly written last line) and
continues with the next chunk. The hashes are of the settings each depends on (see ``_WorkFolder``):
a re-run with other settings works in its own folders. Correction is a deterministic function of the
scores, eta and the seed, so a resumed run equals an uninterrupted one. Final outputs (the denoised
splits, ``report.jsonl``, ``summary.json``) are written to a temp file and renamed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np

import llm4dsr

SPLITS = ("train", "valid", "test")


# ---- resumable JSON-lines files ----

def _read_jsonl_prefix(path: str) -> List[dict]:
    """The complete records of a JSON-lines file, each ended by its newline; what follows the last one (a
    line a killed run left half written, or whole but without its newline) is cut off. A damaged line
    before that is an error: dropping it would silently drop every good line after it too."""
    if not os.path.exists(path):
        return []
    records, good = [], 0
    with open(path, "rb") as f:
        data = f.read()
    while True:
        end = data.find(b"\n", good)
        if end < 0:
            break
        try:
            record = json.loads(data[good:end])
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            raise llm4dsr.Error(f"{path}: line {len(records) + 1} is damaged (not a JSON object); delete the file to "
                                f"compute it again")
        records.append(record)
        good = end + 1
    if good != len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def _resume_point(path: str, chunk_size: int) -> List[dict]:
    """The records of `path` up to the last whole chunk. A re-run recomputes a partial chunk, so every
    chunk is computed with the same batch composition as in an uninterrupted run (padding and batch
    shape change floating-point rounding) and the results are identical."""
    done = _read_jsonl_prefix(path)
    keep = len(done) // chunk_size * chunk_size
    if keep != len(done):
        done = done[:keep]
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done))
    return done


def _append_jsonl(path: str, records: Sequence[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk or an interrupt: no temp file is left behind (each run's would carry its own pid).
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def _scores_record(i: int, s) -> dict:
    return {"i": i, "items": s.items.tolist(), "log_prob": [None if not math.isfinite(v) else float(v) for v in s.log_prob],
            "prob": s.prob.tolist(), "rank": s.rank.tolist(), "dropped_items": s.dropped_items}


def _scores_from_record(r: dict):
    log_prob = np.array([-np.inf if v is None else v for v in r["log_prob"]], dtype=np.float32)
    return llm4dsr.NoiseScores(np.array(r["items"], dtype=np.int64), log_prob, np.array(r["prob"], dtype=np.float32),
                               np.array(r["rank"], dtype=np.int64), r["dropped_items"])


def _report_record(i: int, rep) -> dict:
    return {"i": i, "items": rep.items.tolist(), "flagged": rep.flagged.tolist(),
            "corrections": [c.to_dict() for c in rep.corrections]}


def _report_from_record(r: dict):
    corrections = [llm4dsr.Correction(**c) for c in r["corrections"]]
    return llm4dsr.SequenceReport(np.array(r["items"], dtype=np.int64), corrections, np.array(r["flagged"], dtype=np.int64))


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="seq", dynamic_ncols=True, file=sys.stderr)


def score_resumable(denoiser, sequences: List[np.ndarray], path: str, chunk_size: int = 64,
                    progress: bool = True, desc: str = "score") -> list:
    """Scores `sequences` chunk by chunk, appending to `path`; continues what is already there."""
    done = _resume_point(path, chunk_size)
    _check_resumed(path, done, sequences)
    bar = _progress(len(sequences), desc, progress)
    if bar:
        bar.update(len(done))
    for start in range(len(done), len(sequences), chunk_size):
        chunk = sequences[start:start + chunk_size]
        scores = denoiser.score(chunk)
        _append_jsonl(path, [_scores_record(start + j, s) for j, s in enumerate(scores)])
        done.extend(_scores_record(start + j, s) for j, s in enumerate(scores))
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return [_scores_from_record(r) for r in done]


def _input_crc(sequence: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(sequence, dtype=np.int64).tobytes())


def _check_resumed(path: str, done: List[dict], sequences: List[np.ndarray]) -> None:
    """Each line a re-run keeps must be of this run's sequences, in order: a scores line holds its
    sequence's items, a report line (whose items are the corrected ones) a checksum of them."""
    for k, r in enumerate(done):
        same = k < len(sequences) and r.get("i") == k and (
            r.get("input_crc") == _input_crc(sequences[k]) if "input_crc" in r else r.get("items") == sequences[k].tolist())
        if not same:
            raise llm4dsr.Error(f"{path}: line {k + 1} does not belong to this run (sequence {k} differs); "
                                f"delete the file or use another --out")


def correct_resumable(denoiser, sequences: List[np.ndarray], scores: list, eta: float, protect, path: str,
                      chunk_size: int = 64, progress: bool = True, desc: str = "correct") -> list:
    done = _resume_point(path, chunk_size)
    _check_resumed(path, done, sequences)
    bar = _progress(len(sequences), desc, progress)
    if bar:
        bar.update(len(done))
    for start in range(len(done), len(sequences), chunk_size):
        end = min(len(sequences), start + chunk_size)
        reports = denoiser.correct(sequences[start:end], scores[start:end] if scores else [], eta,
                                   protect[start:end] if protect is not None else None, first_index=start)
        records = [dict(_report_record(start + j, r), input_crc=_input_crc(sequences[start + j]))
                   for j, r in enumerate(reports)]
        _append_jsonl(path, records)
        done.extend(records)
        if bar:
            bar.update(end - start)
    if bar:
        bar.close()
    return [_report_from_record(r) for r in done]


# ---- what a work folder was written with ----

def model_fingerprint(model_path: str) -> dict:
    """The model as loaded: its resolved path and the size and modification time of each file under it
    (training checkpoints aside), so that a model folder written again is a different model."""
    if model_path in llm4dsr.known_model_names():
        return {"name": model_path}
    path = os.path.abspath(model_path)
    files = {}
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                if name.startswith("checkpoint"):
                    continue
                full = os.path.join(root, name)
                st = os.stat(full)
                files[os.path.relpath(full, path)] = [st.st_size, st.st_mtime_ns]
    elif os.path.exists(path):
        st = os.stat(path)
        files[os.path.basename(path)] = [st.st_size, st.st_mtime_ns]
    return {"path": path, "files": dict(sorted(files.items()))}


def _settings_folder(parent: str, prefix: str, settings: dict) -> str:
    """parent/<prefix>-<hash of settings>, made with a settings.json that says what it holds."""
    text = json.dumps(settings, indent=2, sort_keys=True)
    folder = os.path.join(parent, f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:12]}")
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "settings.json")):
        write_atomic(os.path.join(folder, "settings.json"), text + "\n")
    return folder


class _WorkFolder:
    """<out>/work: the chunks of scores and reports a re-run continues from, one folder per set of
    settings they depend on, and a lock that keeps a second run from appending to the same files.

    Scores live in work/scores-<hash>/ of the settings that make them (model files, mode, dtype, device,
    unit, batch and chunk sizes), reports below it in reports-<hash>/ of the settings added on top
    (policy, budget, eta, seed, decoding). A re-run under the same settings continues where it stopped;
    under others it starts its own folder and loses nothing: trying another budget or eta reuses the
    scores, and going back to earlier settings finds their work again."""

    def __init__(self, out: str):
        import fcntl

        self.path = os.path.join(out, "work")
        os.makedirs(self.path, exist_ok=True)
        self._lock = open(os.path.join(self.path, ".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise llm4dsr.Error(f"{out}: another llm4dsr run is writing there; wait for it to end or use another --out")
        self.scores_dir: Optional[str] = None
        self.reports_dir: Optional[str] = None

    def use_scoring(self, settings: dict) -> None:
        self.scores_dir = _settings_folder(self.path, "scores", settings)

    def use_correction(self, settings: dict) -> None:
        self.reports_dir = _settings_folder(self.scores_dir, "reports", settings)

    def scores_file(self, split: str) -> str:
        return os.path.join(self.scores_dir, f"{split}.scores.jsonl")

    def report_file(self, split: str) -> str:
        return os.path.join(self.reports_dir, f"{split}.report.jsonl")

    def close(self) -> None:
        self._lock.close()


# ---- units of work ----

class Unit:
    """The sequences a split is denoised as, with their labels and protected positions."""

    def __init__(self, windows, unit: str, split: str, chunk_length: int):
        self.windows, self.unit = windows, unit
        if unit == "user":
            self.chunks = llm4dsr.user_chunks(windows, chunk_length, protect_targets=split != "train")
            self.sequences = list(self.chunks.sequences)
            self.labels = [np.asarray(l, dtype=np.uint8) for l in self.chunks.labels]
            self.protect = [list(p) for p in self.chunks.protect]
        elif unit == "window":
            self.chunks = None
            self.sequences = list(llm4dsr.window_histories(windows))
            self.labels = [np.asarray(w.labels[:-1], dtype=np.uint8) for w in windows]
            self.protect = None
        else:
            raise llm4dsr.Error(f"unknown unit '{unit}' (expected 'user' or 'window')")
        self.labelled = all(len(l) == len(s) for l, s in zip(self.labels, self.sequences)) and len(self.sequences) > 0

    def apply(self, reports):
        if self.unit == "user":
            return llm4dsr.apply_user_corrections(self.windows, self.chunks, reports)
        return llm4dsr.apply_window_corrections(self.windows, reports)

    def eligible(self, i: int) -> np.ndarray:
        n = len(self.sequences[i])
        if self.protect is None:
            return np.ones(n, dtype=bool)
        return ~np.asarray(self.protect[i], dtype=bool)


def detection_summary(unit: Unit, scores: list, reports: list, seed: int = 0,
                      collect: Optional[Dict[str, list]] = None) -> Dict[str, object]:
    """Noise-detection metrics of one split against its labels (eligible positions only), with a random
    flagger that flags as many eligible positions per sequence as the denoiser did. `collect` gathers
    the per-position arrays (flagged, noise, random) for metrics over several splits."""
    flagged, noise, p_noise, rand_flagged = [], [], [], []
    rng = random.Random(seed)
    for i, rep in enumerate(reports):
        ok = unit.eligible(i)
        f = np.zeros(len(ok), dtype=bool)
        f[np.asarray(rep.flagged, dtype=np.int64)] = True
        lab = unit.labels[i] == 1
        idx = np.flatnonzero(ok)
        r = np.zeros(len(ok), dtype=bool)
        k = int(f.sum())
        if k:
            r[rng.sample(list(idx), min(k, len(idx)))] = True
        flagged.append(f[ok]); noise.append(lab[ok]); rand_flagged.append(r[ok])
        if scores:
            p = np.exp(np.asarray(scores[i].log_prob, dtype=np.float64))
            p_noise.append(p[ok])
    flagged_all, noise_all = np.concatenate(flagged), np.concatenate(noise)
    if collect is not None:
        collect.setdefault("flagged", []).append(flagged_all)
        collect.setdefault("noise", []).append(noise_all)
        collect.setdefault("random", []).append(np.concatenate(rand_flagged))
    out: Dict[str, object] = dict(llm4dsr.detection_metrics(flagged_all, noise_all))
    out["noise_rate"] = float(noise_all.mean()) if len(noise_all) else 0.0
    out["random_flagger"] = dict(llm4dsr.detection_metrics(np.concatenate(rand_flagged), noise_all))
    if scores:
        p_all = np.concatenate(p_noise)
        out["pr_auc"] = llm4dsr.average_precision(p_all, noise_all)
        out["random_pr_auc"] = out["noise_rate"]  # a random scorer's expected average precision
        h = llm4dsr.score_histogram(p_all, noise_all, 20)
        out["p_noise_histogram"] = {k: np.asarray(v).tolist() for k, v in h.items()}
    return out


def build_denoiser(model_path: str, catalog, device: str = "cpu", dtype: str = "float32", mode: str = "first-token",
                   policy: str = "llm4dsr", budget: int = 1, constrained: bool = True, decoding: str = "greedy",
                   num_beams: int = 4, micro_batch_size: Optional[int] = None, seed: int = 0):
    pretrained = llm4dsr.load_pretrained(model_path, device=device, dtype=dtype)
    card = pretrained.card
    if card.prompt_template not in llm4dsr.PromptTemplate.names():  # checked here: templates may be registered late
        raise llm4dsr.Error(f"{os.path.join(model_path, 'llm4dsr.json')}: key 'prompt_template': unknown template "
                            f"'{card.prompt_template}' (known: {', '.join(llm4dsr.PromptTemplate.names())})")
    common = dict(template=card.prompt_template, chat_format=card.chat_format, max_prompt_tokens=card.max_prompt_tokens)
    if micro_batch_size is not None:  # else each class's own default (scorer 32, generator 16)
        common["micro_batch_size"] = micro_batch_size
    scorer = None
    if policy != "without-uncertainty":
        scorer = llm4dsr.UncertaintyScorer(pretrained.model, pretrained.tokenizer, mode=mode, **common)
    generator = grounder = embedder = None
    if policy in ("llm4dsr", "without-uncertainty"):
        generator = llm4dsr.Generator(pretrained.model, pretrained.tokenizer, catalog, decoding=decoding,
                                      num_beams=num_beams, constrained=constrained, **common)
        if not constrained:
            embedder = llm4dsr.Embedder(pretrained.model, pretrained.tokenizer)
            grounder = llm4dsr.Grounder.from_catalog(catalog, embedder=embedder)
    return llm4dsr.Denoiser(catalog, scorer=scorer, generator=generator, grounder=grounder, embedder=embedder,
                            policy=policy, budget=budget, seed=seed)


def run_denoise(splits, catalog, model_path: str, out: str, denoise_splits: Sequence[str] = ("train", "test"),
                unit: str = "user", quantile: float = 0.9, eta: Optional[float] = None, progress: bool = True,
                chunk_size: int = 64, score_only: bool = False, **denoiser_options) -> Dict[str, object]:
    """Runs the job; returns the summary (also written to <out>/summary.json)."""
    if chunk_size < 1:
        raise llm4dsr.Error(f"chunk_size must be >= 1, got {chunk_size}")
    work = _WorkFolder(out)
    try:
        return _run_denoise(work, splits, catalog, model_path, out, denoise_splits, unit, quantile, eta, progress,
                            chunk_size, score_only, denoiser_options)
    finally:
        work.close()


def _run_denoise(work: _WorkFolder, splits, catalog, model_path: str, out: str, denoise_splits: Sequence[str],
                 unit: str, quantile: float, eta: Optional[float], progress: bool, chunk_size: int, score_only: bool,
                 denoiser_options: dict) -> Dict[str, object]:
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    denoiser = build_denoiser(model_path, catalog, **denoiser_options)
    timings["load_seconds"] = round(time.perf_counter() - t0, 2)
    policy = denoiser.policy
    chunk_length = max(1, max((len(w) for w in splits.train), default=2) - 1)
    units = {name: Unit(getattr(splits, name), unit, name, chunk_length)
             for name in SPLITS if len(getattr(splits, name))}
    for name in denoise_splits:
        if name not in units:
            raise llm4dsr.Error(f"split '{name}' is empty or unknown (have {sorted(units)})")

    dtype = denoiser_options.get("dtype", "float32")
    if dtype == "auto":  # the summary names the dtype that ran
        dtype = llm4dsr.auto_dtype(denoiser_options.get("device", "cpu"))
    scoring = {"model": model_fingerprint(model_path), "unit": unit, "chunk_size": chunk_size, "dtype": dtype,
               **{k: denoiser_options.get(k) for k in ("device", "mode", "micro_batch_size")}}
    work.use_scoring(scoring)

    scores: Dict[str, list] = {}
    needs_scores = policy != "without-uncertainty"
    if needs_scores:
        # eta on the validation split, never on the splits it is applied to.
        wanted = list(denoise_splits) + (["valid"] if eta is None and "valid" not in denoise_splits else [])
        for name in wanted:
            t0 = time.perf_counter()
            scores[name] = score_resumable(denoiser, units[name].sequences, work.scores_file(name),
                                           chunk_size, progress, desc=f"score {name}")
            timings[f"score_{name}_seconds"] = round(time.perf_counter() - t0, 2)
        if eta is None:
            eta = denoiser.threshold(scores["valid"], quantile)
    summary: Dict[str, object] = {"model": model_path, "device": denoiser_options.get("device", "cpu"),
                                  "dtype": dtype, "mode": denoiser_options.get("mode", "first-token"),
                                  "policy": policy, "unit": unit, "budget": denoiser.budget,
                                  "quantile": quantile if needs_scores else None,
                                  "eta": eta if needs_scores else None, "splits": {}}
    if score_only:
        for name in denoise_splits:
            final = os.path.join(out, f"scores-{name}.jsonl")
            with open(work.scores_file(name), encoding="utf-8") as f:
                write_atomic(final, f.read())
            summary["splits"][name] = {"sequences": len(units[name].sequences), "scores": os.path.abspath(final)}
        summary.update(timings)
        summary["seconds"] = round(time.perf_counter() - t_start, 2)
        write_atomic(os.path.join(out, "summary.json"), json.dumps(summary, indent=2))
        return summary

    work.use_correction({"policy": policy, "budget": denoiser.budget, "eta": eta if needs_scores else None,
                         **{k: denoiser_options.get(k) for k in ("seed", "constrained", "decoding", "num_beams")}})
    denoised = {name: getattr(splits, name) for name in SPLITS}
    report_lines: List[str] = []
    totals: Dict[str, list] = {}
    for name in denoise_splits:
        u = units[name]
        t0 = time.perf_counter()
        reports = correct_resumable(denoiser, u.sequences, scores.get(name, []), eta if eta is not None else 0.0,
                                    u.protect, work.report_file(name), chunk_size, progress,
                                    desc=f"correct {name}")
        timings[f"correct_{name}_seconds"] = round(time.perf_counter() - t0, 2)
        denoised[name] = u.apply(reports)
        split_summary: Dict[str, object] = {
            "sequences": len(u.sequences),
            "flagged": int(sum(len(r.flagged) for r in reports)),
            "replaced": int(sum(sum(1 for c in r.corrections if c.replacement_item > 0) for r in reports)),
            "deleted": int(sum(sum(1 for c in r.corrections if c.replacement_item == 0) for r in reports)),
        }
        if u.labelled:
            split_summary.update(detection_summary(u, scores.get(name, []), reports, seed=denoiser_options.get("seed", 0),
                                                   collect=totals))
        summary["splits"][name] = split_summary
        for i, rep in enumerate(reports):
            rec = _report_record(i, rep)
            rec["split"] = name
            rec["items"] = [catalog.external_id(int(x)) for x in rec["items"]]
            for c in rec["corrections"]:
                c["original_item"] = catalog.external_id(c["original_item"])
                c["replacement_item"] = catalog.external_id(c["replacement_item"]) if c["replacement_item"] else None
            report_lines.append(json.dumps(rec, ensure_ascii=False))

    result = llm4dsr.Splits()
    result.train, result.valid, result.test = denoised["train"], denoised["valid"], denoised["test"]
    out_dir = os.path.join(out, "denoised")
    llm4dsr.write_splits_csv(result, catalog, out_dir)
    write_atomic(os.path.join(out, "report.jsonl"), "\n".join(report_lines) + ("\n" if report_lines else ""))
    if totals:
        noise_all = np.concatenate(totals["noise"])
        overall = llm4dsr.detection_metrics(np.concatenate(totals["flagged"]), noise_all)
        summary.update({k: overall[k] for k in ("precision", "recall", "f1")})
        rand = llm4dsr.detection_metrics(np.concatenate(totals["random"]), noise_all)
        summary["random_flagger"] = {k: rand[k] for k in ("precision", "recall", "f1")}
    summary.update(timings)
    summary["denoised"] = os.path.abspath(out_dir)
    summary["report"] = os.path.abspath(os.path.join(out, "report.jsonl"))
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    write_atomic(os.path.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary
