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


def test_llm4dsr_csv_windows_get_their_positions_back(tmp_path):
    """The CSV layout has no positions; the reader lays each user's windows back on one sequence, so the
    per-user unit works on it (it used to refuse every such folder) and the offsets equal prepare's."""
    ds = llm4dsr.make_synthetic(num_users=30, num_items=80, seed=2)
    splits = llm4dsr.prepare(ds, split="windows", noise=0.1, seed=1)
    llm4dsr.write_splits_csv(splits, ds.catalog, str(tmp_path / "csv"))
    back = llm4dsr.read_dataset(str(tmp_path / "csv"))
    for name in ("train", "valid", "test"):
        original, read = getattr(splits, name), getattr(back.splits, name)
        assert [s.offset for s in read] == [s.offset for s in original], name
    assert any(s.offset > 0 for s in back.splits.train)
    # The split is the data's own: asking for another is an error, not silently ignored.
    with pytest.raises(llm4dsr.Error, match="arrives split by 'windows'; it cannot be split by 'loo'"):
        llm4dsr.prepare(back, split="loo")
    with pytest.raises(llm4dsr.Error, match="arrives as windows of up to 11 items; they cannot be cut to max_length 3"):
        llm4dsr.prepare(back, max_length=3)
    assert len(llm4dsr.prepare(back).train) == len(back.splits.train)
    chunks = llm4dsr.user_chunks(back.splits.train, 10)
    reference = llm4dsr.user_chunks(splits.train, 10)
    assert [c.tolist() for c in chunks.sequences] == [
        [back.catalog.id(ds.catalog.external_id(int(i))) for i in c] for c in reference.sequences]


def test_duplicated_columns_keys_and_empty_user_ids_are_errors(tmp_path):
    ds = llm4dsr.make_synthetic(num_users=10, num_items=40, seed=2)
    llm4dsr.write_splits_csv(llm4dsr.prepare(ds, split="windows", seed=1), ds.catalog, str(tmp_path / "csv"))
    train = next(p for p in (tmp_path / "csv").iterdir() if p.name.startswith("train"))
    text = train.read_text(encoding="utf-8")
    header, rest = text.split("\n", 1)
    train.write_text(header + ",item_ids\n" + rest.replace("\n", ",x\n"), encoding="utf-8")
    with pytest.raises(llm4dsr.Error, match=r"train[^:]*\.csv:1: column 'item_ids' appears twice in the header"):
        llm4dsr.read_dataset(str(tmp_path / "csv"))
    user_col = header.split(",").index("user_id")
    first, others = rest.split("\n", 1)
    fields = first.split(",")
    fields[user_col] = ""
    train.write_text(header + "\n" + ",".join(fields) + "\n" + others, encoding="utf-8")
    with pytest.raises(llm4dsr.Error, match=r"train[^:]*\.csv:2, column user_id: empty user id"):
        llm4dsr.read_dataset(str(tmp_path / "csv"))
    names = tmp_path / "csv" / "id2name.json"
    names.write_text('{"1": "Heat", "1": "Fargo"}', encoding="utf-8")
    with pytest.raises(llm4dsr.Error, match='id2name.json: key "1" appears more than once'):
        llm4dsr.read_dataset(str(tmp_path / "csv"))


def test_kcore_that_removes_everyone_and_non_utf8_messages_are_clear_errors(tmp_path):
    ds = llm4dsr.make_synthetic(num_users=10, num_items=40, seed=2)
    with pytest.raises(llm4dsr.Error, match="removes every user"):
        llm4dsr.kcore_filter(ds, 1000, 0)
    r = run_cli("stats", "--data", "synthetic:users=10,items=40", "--min-user-interactions", "-3")
    assert r.returncode == 2 and "k-core thresholds must be >= 0" in r.stderr
    # An error quoting a Latin-1 byte of the input reaches Python as llm4dsr.Error (it used to be a
    # UnicodeDecodeError raised while building the message), the byte written as \xe9.
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_bytes(b"1\t1\t5\t100\nx\xe9\t1\t5\t100\n")
    (tmp_path / "ml" / "u.item").write_bytes(b"1|Caf\xe9 (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    with pytest.raises(llm4dsr.Error, match=r"x\\xe9"):
        llm4dsr.read_dataset(str(tmp_path / "ml"))
