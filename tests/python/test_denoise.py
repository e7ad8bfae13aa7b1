"""The denoising job end to end (Generator, Denoiser, units, metrics, CLI score/denoise, resume), on a
small synthetic dataset and a tiny random model (mechanics, not quality: the ML-100K benchmark
measures quality)."""
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import llm4dsr
from llm4dsr import pipeline

DATA = "synthetic:users=40,items=120,seed=3"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with a sentencepiece tokenizer trained on the data's titles, saved as a folder."""
    dataset = llm4dsr.read_dataset(DATA)
    titles = [t for t in dataset.catalog.titles if t]
    template = llm4dsr.PromptTemplate.get("llm4dsr-paper")
    texts = titles + [template.render_text(titles[i:i + 5], titles[i], titles[i + 1]) for i in range(0, 100, 5)]
    tok = llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=400, hard_vocab_limit=False)
    config = llm4dsr.ModelConfig.preset("tiny", tok.vocab_size)
    config.num_hidden_layers = 2
    config.bos_token_id, config.eos_token_ids, config.pad_token_id = tok.bos_id, [tok.eos_id], tok.pad_id
    model = llm4dsr.LlamaModel(config, seed=1)
    folder = tmp_path_factory.mktemp("tiny-model")
    llm4dsr.save_pretrained(llm4dsr.PretrainedModel(model, tok, llm4dsr.ModelCard()), str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def data():
    dataset = llm4dsr.read_dataset(DATA)
    splits = llm4dsr.prepare(dataset, split="windows", noise=0.1, seed=1)
    return dataset, splits


def _work(out, name):
    """The one work file `name` under <out>/work (scores-<hash>/ or scores-<hash>/reports-<hash>/)."""
    pattern = f"scores-*/{name}" if name.endswith(".scores.jsonl") else f"scores-*/reports-*/{name}"
    found = sorted(Path(out, "work").glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_generator_and_denoiser_from_python(tiny_model_dir, data):
    dataset, splits = data
    pre = llm4dsr.load_pretrained(tiny_model_dir)
    gen = llm4dsr.Generator(pre.model, pre.tokenizer, dataset.catalog, constrained=True, decoding="beam", num_beams=2)
    seq = np.asarray(splits.train[0].items[:-1])
    out = gen.generate([(seq, 2, seq), {"items": seq.tolist(), "position": 0}])
    titles = {dataset.catalog.title(i) for i in range(1, len(dataset.catalog) + 1)}
    for s in out:
        assert s.item_id >= 1 and s.finished
        assert s.text in titles
    assert out[0].item_id not in set(seq.tolist())
    scorer = llm4dsr.UncertaintyScorer(pre.model, pre.tokenizer)
    den = llm4dsr.Denoiser(dataset.catalog, scorer=scorer, generator=gen, budget=1)
    histories = llm4dsr.window_histories(splits.train)[:6]
    scores = den.score(histories)
    eta = den.threshold(scores, 0.5)
    reports = den.correct(histories, scores, eta)
    for h, s, r in zip(histories, scores, reports):
        p = np.exp(s.log_prob)
        assert len(r.flagged) <= 1
        if len(r.flagged):
            k = int(r.flagged[0])
            assert p[k] > eta and p[k] == p.max()  # budget 1: the highest score above eta
            c = r.corrections[0]
            assert c.position == k and c.original_item == h[k] and c.replacement_item not in set(h.tolist())
            assert r.items[k] == c.replacement_item
        else:
            assert (p <= eta).all()
            assert r.items.tolist() == h.tolist()
    # Saved reports / scores rebuild to equal objects (what the resumable files rely on).
    rebuilt = pipeline._report_from_record(pipeline._report_record(0, reports[0]))
    assert rebuilt.items.tolist() == reports[0].items.tolist()
    assert [c.to_dict() for c in rebuilt.corrections] == [c.to_dict() for c in reports[0].corrections]
    s2 = pipeline._scores_from_record(pipeline._scores_record(0, scores[0]))
    assert np.array_equal(s2.log_prob, scores[0].log_prob) and np.array_equal(s2.rank, scores[0].rank)


def test_metrics_against_hand_computation():
    m = llm4dsr.detection_metrics([True, True, False, False], [True, False, True, False])
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)
    # Independent computation of average precision (scikit-learn's definition) by brute force.
    rng = np.random.default_rng(0)
    scores = rng.random(200).round(2)  # rounding makes ties
    labels = rng.random(200) < 0.2
    ap = 0.0
    for t in sorted(set(scores), reverse=True):
        at = scores >= t
        new_tp = (labels & (scores == t)).sum()
        ap += new_tp / labels.sum() * (labels & at).sum() / at.sum()
    assert llm4dsr.average_precision(scores, labels) == pytest.approx(ap, abs=1e-12)


def _files(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            if "work" in root.split(os.sep) or n == "summary.json" or n.endswith(".tmp"):
                continue
            with open(os.path.join(root, n), "rb") as f:
                out[os.path.relpath(os.path.join(root, n), folder)] = f.read()
    return out


@pytest.mark.parametrize("unit", ["user", "window"])
def test_interrupted_then_resumed_denoising_equals_one_run(tiny_model_dir, data, tmp_path, unit):
    dataset, splits = data
    if unit == "window":  # ten times the sequences: a quarter of the users keeps the test quick
        subset = llm4dsr.Splits()
        for name in ("train", "valid", "test"):
            kept = [s for s in getattr(splits, name) if zlib.crc32(s.user_id.encode()) % 4 == 0]
            setattr(subset, name, llm4dsr.SequenceSet(kept))
        splits = subset
    kw = dict(denoise_splits=("train", "test"), unit=unit, quantile=0.8, progress=False, chunk_size=8,
              policy="llm4dsr", budget=2)
    one = pipeline.run_denoise(splits, dataset.catalog, tiny_model_dir, str(tmp_path / "one"), **kw)
    # A killed run: the work files cut mid-way, the last line half written, no final outputs.
    two = tmp_path / "two"
    pipeline.run_denoise(splits, dataset.catalog, tiny_model_dir, str(two), **kw)
    for name in ("train.scores.jsonl", "train.report.jsonl"):
        path = _work(two, name)
        lines = path.read_bytes().split(b"\n")
        path.write_bytes(b"\n".join(lines[:9]) + b"\n" + lines[9][: len(lines[9]) // 2])
    for name in ("test.report.jsonl",):
        _work(two, name).unlink()
    for f in ("report.jsonl",):
        (two / f).unlink()
    resumed = pipeline.run_denoise(splits, dataset.catalog, tiny_model_dir, str(two), **kw)
    assert _files(tmp_path / "one") == _files(two)
    for key in ("precision", "recall", "f1", "eta"):
        assert one[key] == resumed[key]
    assert one["splits"]["train"]["flagged"] > 0
    # Per-user: each chunk at most budget flags, protected test targets never flagged.
    if unit == "user":
        chunks = llm4dsr.user_chunks(splits.test, 10, protect_targets=True)
        for rec in map(json.loads, _work(two, "test.report.jsonl").read_text().splitlines()):
            protect = chunks.protect[rec["i"]]
            assert len(rec["flagged"]) <= 2
            assert not any(protect[k] for k in rec["flagged"])


def test_ablation_policies_change_the_output_as_specified(tiny_model_dir, data, tmp_path):
    dataset, splits = data
    assert dataset.catalog.popularity.sum() > 0  # the readers count interactions
    kw = dict(denoise_splits=("train",), unit="window", eta=0.0, progress=False)  # eta 0: flag the top item
    results = {}
    for policy in ("without-completion", "popularity-completion", "llm4dsr"):
        pipeline.run_denoise(splits, dataset.catalog, tiny_model_dir, str(tmp_path / policy), policy=policy, **kw)
        results[policy] = [json.loads(l) for l in _work(tmp_path / policy, "train.report.jsonl").read_text().splitlines()]
    for a, b, c in zip(*(results[p] for p in ("without-completion", "popularity-completion", "llm4dsr"))):
        assert a["flagged"] == b["flagged"] == c["flagged"]  # the same scores and eta flag the same items
        assert len(a["flagged"]) == 1
        k = a["flagged"][0]
        assert len(a["items"]) == len(b["items"]) - 1  # deleted
        assert a["corrections"][0]["replacement_item"] == 0
        assert b["corrections"][0]["replacement_item"] > 0 and b["corrections"][0]["generated_text"] == ""
        assert c["corrections"][0]["generated_text"] != ""  # generated, then an existing item
        assert b["items"][k] == b["corrections"][0]["replacement_item"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "llm4dsr", *args], capture_output=True, text=True)


def test_cli_score_and_denoise_json(tiny_model_dir, tmp_path):
    out = tmp_path / "den"
    r = _cli("denoise", "--data", DATA, "--noise", "0.1", "--seed", "1", "--model", tiny_model_dir, "--out", str(out),
             "--json", "--quantile", "0.8")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= summary[key] <= 1.0
    assert set(summary["random_flagger"]) == {"precision", "recall", "f1"}
    assert (summary["device"], summary["dtype"], summary["mode"]) == ("cpu", "float32", "first-token")
    assert "p_noise_histogram" in summary["splits"]["train"]
    # The denoised splits read back (labels: whether an item differs from the user's original).
    ds = llm4dsr.read_dataset(str(out / "denoised"))
    assert ds.stats()["interactions"] > 0
    report = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    assert {r["split"] for r in report} == {"train", "test"}
    catalog = llm4dsr.read_dataset(DATA).catalog
    for rec in report:
        for c in rec["corrections"]:
            assert catalog.find(c["original_item"]) is not None  # external ids
    # The scores of `score` equal those the denoiser used.
    r = _cli("score", "--data", DATA, "--noise", "0.1", "--seed", "1", "--model", tiny_model_dir, "--out",
             str(tmp_path / "sc"), "--json", "--splits", "train")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sc" / "scores-train.jsonl").read_text() == _work(out, "train.scores.jsonl").read_text()
    bad = _cli("denoise", "--data", DATA, "--model", tiny_model_dir, "--out", str(tmp_path / "x"), "--splits", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr
    # --device: an explicit cpu gives the same scores; a device that is not there is named in the error.
    r = _cli("score", "--data", DATA, "--noise", "0.1", "--seed", "1", "--model", tiny_model_dir, "--out",
             str(tmp_path / "sc_cpu"), "--json", "--splits", "train", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sc_cpu" / "scores-train.jsonl").read_text() == (tmp_path / "sc" / "scores-train.jsonl").read_text()
    for device, message in (("tpu", "unknown device 'tpu'"), ("cuda:7", "device 'cuda:7'")):
        bad = _cli("score", "--data", DATA, "--model", tiny_model_dir, "--out", str(tmp_path / "x"), "--device", device)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_dtype_auto_is_named_as_it_ran_in_the_summary(tiny_model_dir, data, tmp_path):
    dataset, splits = data
    few = llm4dsr.Splits()
    for name in ("train", "valid", "test"):
        setattr(few, name, llm4dsr.SequenceSet(list(getattr(splits, name))[:6]))
    summary = pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(tmp_path / "auto"), denoise_splits=("test",),
                                   progress=False, score_only=True, dtype="auto")
    assert summary["dtype"] == llm4dsr.auto_dtype("cpu") and summary["dtype"] in ("float32", "bfloat16")


def _few(splits, n=12):
    few = llm4dsr.Splits()
    for name in ("train", "valid", "test"):
        setattr(few, name, llm4dsr.SequenceSet(list(getattr(splits, name))[:n]))
    return few


def test_rerun_with_other_settings_works_in_its_own_folder_and_reuses_what_still_holds(tiny_model_dir, data, tmp_path):
    """Work is kept per settings: a re-run with another budget reuses the scores and corrects again;
    another mode scores again in its own folder; nothing of the first run is lost or mixed in."""
    dataset, splits = data
    few = _few(splits)
    kw = dict(denoise_splits=("train",), unit="window", progress=False, chunk_size=4, quantile=0.5)
    out = tmp_path / "out"
    pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(out), budget=1, **kw)
    scores = _work(out, "train.scores.jsonl")
    scores_before, mtime = scores.read_bytes(), scores.stat().st_mtime_ns
    for budget, mode in ((3, None), (3, "exact"), (1, None)):
        extra = dict(budget=budget, **({"mode": mode} if mode else {}))
        pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(out), **extra, **kw)
        fresh = tmp_path / f"fresh-{budget}-{mode}"
        pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(fresh), **extra, **kw)
        assert (out / "report.jsonl").read_bytes() == (fresh / "report.jsonl").read_bytes(), (budget, mode)
    assert scores.read_bytes() == scores_before and scores.stat().st_mtime_ns == mtime  # reused, never rewritten
    assert len(list((out / "work").glob("scores-*"))) == 2  # first-token and exact
    assert len(list((out / "work").glob("scores-*/reports-*"))) == 3
    # A policy without scores still checks that each report line is of this run's sequences.
    other = _few(llm4dsr.prepare(dataset, split="windows", noise=0.3, seed=9))
    nu = dict(kw, policy="without-uncertainty")
    pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(tmp_path / "nu"), **nu)
    with pytest.raises(llm4dsr.Error, match="does not belong to this run"):
        pipeline.run_denoise(other, dataset.catalog, tiny_model_dir, str(tmp_path / "nu"), **nu)


def test_work_folder_lock_damaged_lines_and_temp_files(tiny_model_dir, data, tmp_path, monkeypatch):
    dataset, splits = data
    few = _few(splits, 8)
    kw = dict(denoise_splits=("test",), unit="window", progress=False, chunk_size=4, score_only=True)
    out = tmp_path / "out"
    held = pipeline._WorkFolder(str(out))  # another run holding the folder
    try:
        with pytest.raises(llm4dsr.Error, match="another llm4dsr run is writing there"):
            pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(out), **kw)
    finally:
        held.close()
    pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(out), **kw)
    path = _work(out, "test.scores.jsonl")
    whole = path.read_bytes()
    # The last record whole but its newline missing (a kill between two writes): cut off and made again,
    # with no byte added (the file used to grow a NUL there).
    path.write_bytes(whole[:-1])
    pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(out), **kw)
    assert path.read_bytes() == whole
    # A damaged line before the end is an error, not a silent loss of every line after it.
    lines = whole.split(b"\n")
    lines[1] = lines[1][:10] + b"\xff" + lines[1][11:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(llm4dsr.Error, match="test.scores.jsonl: line 2 is damaged"):
        pipeline.run_denoise(few, dataset.catalog, tiny_model_dir, str(out), **kw)
    # A write that fails leaves no temp file.
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        pipeline.write_atomic(str(tmp_path / "x.json"), "{}")
    assert os.listdir(tmp_path).count("x.json") == 0 and not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_cli_reports_bad_output_folders_and_options_as_errors(tiny_model_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for args in (("score", "--out", str(afile)), ("score", "--out", str(tmp_path / "o"), "--chunk-size", "0")):
        r = _cli(*args[:1], "--data", DATA, "--model", tiny_model_dir, *args[1:])
        assert r.returncode == 2 and r.stderr.startswith("llm4dsr: error:") and "Traceback" not in r.stderr, r.stderr
    r = _cli("finetune", "--data", DATA, "--base", tiny_model_dir, "--out", str(afile / "m"), "--pairs", "4")
    assert r.returncode == 2 and "llm4dsr: error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
