"""The data layer through the Python bindings and the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import llm4dsr

CLI = [sys.executable, "-m", "llm4dsr"]


def run_cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


@pytest.mark.parametrize("folder,expected", [
    ("ml-100k", (943, 1682, 100000)),
    ("ml-100k-raw", (943, 1682, 100000)),
    ("amazon-beauty", (22363, 12101, 198502)),
])
def test_stats_json_matches_published_sizes(shared_data, folder, expected):
    out = run_cli("stats", "--data", str(shared_data / folder), "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert (stats["users"], stats["items"], stats["interactions"]) == expected


def test_stats_table_is_human_readable(shared_data):
    out = run_cli("stats", "--data", str(shared_data / "ml-100k"))
    assert out.returncode == 0, out.stderr
    assert "100,000" in out.stdout and "943" in out.stdout


def test_bad_input_is_one_clear_error(tmp_path):
    bad = tmp_path / "broken.inter"
    bad.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n4\t5\n", encoding="utf-8")
    with pytest.raises(llm4dsr.Error, match="broken.inter.*3|3.*broken.inter"):
        llm4dsr.read_dataset(str(bad))
    out = run_cli("stats", "--data", str(bad))
    assert out.returncode == 2
    assert out.stderr.startswith("llm4dsr: error:") and "broken.inter" in out.stderr


def test_sequences_are_chronological_and_match_the_file(shared_data):
    ds = llm4dsr.read_dataset(str(shared_data / "ml-100k"))
    # independent reading of the same file with numpy: user 196's items sorted by time (stable)
    rows = np.loadtxt(shared_data / "ml-100k" / "ml-100k.inter", skiprows=1, dtype=np.int64)
    mine = rows[rows[:, 0] == 196]
    order = np.argsort(mine[:, 3], kind="stable")
    expected_external = [str(i) for i in mine[order, 1]]
    user = next(s for s in ds.users if s.user_id == "196")
    assert [ds.catalog.external_id(int(i)) for i in user.items] == expected_external
    assert np.all(np.diff(user.timestamps) >= 0)
    pop = ds.catalog.popularity
    assert pop.sum() == 100000 and pop[0] == 0


def test_prepare_windows_with_noise_keeps_labels_and_never_noises_test_targets():
    ds = llm4dsr.make_synthetic(num_users=120, num_items=300, seed=3)
    splits = llm4dsr.prepare(ds, split="windows", noise=0.2, seed=11)
    assert splits.protocol == "windows"
    n = len(splits.train) + len(splits.valid) + len(splits.test)
    assert len(splits.train) == int(n * 0.8) and len(splits.valid) == int(n * 0.1)
    for s in splits.test:
        assert s.labels[-1] == 0 and s.items[-1] == s.original_items[-1]
    noisy = [(s.labels == 1) for s in splits.train]
    for s in splits.train:
        assert np.array_equal(s.labels == 1, s.items != s.original_items)
    rate = np.concatenate(noisy).mean()
    assert 0.15 < rate < 0.25
    again = llm4dsr.prepare(ds, split="windows", noise=0.2, seed=11)
    assert all(np.array_equal(a.items, b.items) for a, b in zip(splits.train, again.train))


def test_prepare_loo_hand_checked():
    users = llm4dsr.SequenceSet([llm4dsr.Sequence("u", np.array([5, 6, 7, 8]))])
    splits = llm4dsr.split_leave_one_out(users)
    assert [list(s.items) for s in splits.train] == [[5, 6]]
    assert [list(s.items) for s in splits.valid] == [[5, 6, 7]]
    assert [list(s.items) for s in splits.test] == [[5, 6, 7, 8]]


def test_cli_prepare_writes_readable_splits(tmp_path):
    out = run_cli("prepare", "--data", "synthetic:users=60,items=200", "--out", str(tmp_path / "prep"),
                  "--noise", "0.1", "--seed", "5", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["split"] == "windows" and summary["noise"] == 0.1
    for f in ("train.csv", "valid.csv", "test.csv", "id2name.json", "meta.json"):
        assert (tmp_path / "prep" / f).is_file()
    back = llm4dsr.read_dataset(str(tmp_path / "prep"))
    assert back.format == "llm4dsr-csv"
    assert len(back.splits.train) == summary["train"] and len(back.splits.test) == summary["test"]
    noisy = sum(int((s.labels == 1).sum()) for s in back.splits.train)
    assert noisy == summary["noisy_positions"]["train"]


def test_writers_round_trip_in_python(tmp_path):
    ds = llm4dsr.make_synthetic(num_users=20, num_items=100, seed=1)
    llm4dsr.write_jsonl(ds.users, ds.catalog, str(tmp_path / "users.jsonl"))
    lines = (tmp_path / "users.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20
    first = json.loads(lines[0])
    assert [str(i) for i in first["item_ids"]] == [ds.catalog.external_id(int(i)) for i in ds.users[0].items]
    assert first["user_id"] == ds.users[0].user_id
    llm4dsr.write_recbole(ds.users, ds.catalog, str(tmp_path / "rb"), "synthetic")
    back = llm4dsr.read_dataset(str(tmp_path / "rb" / "synthetic.inter"))
    assert back.catalog.titles == ds.catalog.titles
    assert [s.user_id for s in back.users] == [s.user_id for s in ds.users]
    assert [list(s.items) for s in back.users] == [list(s.items) for s in ds.users]
    assert back.stats()["interactions"] == ds.stats()["interactions"]


def test_synthetic_titles_carry_their_genre():
    ds = llm4dsr.make_synthetic()
    genres = llm4dsr.synthetic_genres()
    assert len(ds.catalog) == 600 and len(ds.users) == 300
    extras = {ds.catalog.extra(i) for i in range(1, len(ds.catalog) + 1)}
    assert extras <= set(genres) and len(extras) >= 6
    assert len(set(ds.catalog.titles)) == len(ds.catalog)


def test_version_and_error_type():
    assert llm4dsr.__version__ == "0.1.0"
    assert issubclass(llm4dsr.Error, Exception)
    with pytest.raises(llm4dsr.Error, match="unknown item id"):
        llm4dsr.Catalog().id("nope")
