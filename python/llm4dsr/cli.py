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
    if args.min_user_interactions > 0 or args.min_item_interactions > 0:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm4dsr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--threads", type=int, default=0, help="libtorch intra-op threads (default: all cores)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("stats", help="dataset statistics")
    _add_data_args(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prepare", help="split a dataset (optionally with artificial noise) and write it")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="output folder (LLM4DSR CSV layout + meta.json)")
    p.add_argument("--split", default="windows", choices=["windows", "loo"])
    p.add_argument("--noise", type=float, default=0.0, help="artificial noise ratio alpha (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=11, help="window length, history + target")
    p.set_defaults(func=cmd_prepare)
    return parser


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
    try:
        return args.func(args)
    except llm4dsr.Error as e:
        print(f"llm4dsr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
