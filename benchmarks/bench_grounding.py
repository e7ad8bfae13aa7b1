"""Grounding throughput: llm4dsr.Grounder queries/s, exact (FAISS IndexFlatIP) vs HNSW (IndexHNSWFlat,
inner product, M = 32), on random float32 catalogue embeddings.

For each catalogue size (10k and 1M items by default, D = 576: SmolLM2-135M's hidden size) it builds
both indexes (HNSW build time printed), then times search() of one batch of --queries queries (1,000)
for the top --k (10) items, and prints queries/s for each index, the HNSW speed-up over flat and the
HNSW recall@k against the exact results. Every search figure is the median of --repeats runs after one
untimed warm-up. ground() with 1,000 texts of which half are exact titles is timed too (it skips the
search for those). Random Gaussian vectors are the hardest case for HNSW (no cluster structure), so
its recall here is a lower bound for real text embeddings.

Memory: the caller's matrix plus the index's normalised copy, 2 x N x D x 4 bytes (4.6 GB at 1M x 576);
use --dim 256 where that is too much. The HNSW build at 1M items takes minutes on two cores.

    .venv/bin/python benchmarks/bench_grounding.py [--sizes 10000 1000000] [--dim 576] [--ef-search 64]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import llm4dsr


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="libtorch/OpenMP threads (0: all cores)")
    a = p.parse_args()
    llm4dsr.set_num_threads(a.threads)
    print(f"threads={llm4dsr.num_threads()} dim={a.dim} queries={a.queries} k={a.k} ef_search={a.ef_search}")

    rng = np.random.default_rng(0)
    for n in a.sizes:
        emb = rng.standard_normal((n, a.dim), dtype=np.float32)
        q = rng.standard_normal((a.queries, a.dim), dtype=np.float32)
        titles = [f"item {i}" for i in range(n)]

        t0 = time.perf_counter()
        flat = llm4dsr.Grounder(titles, emb, index="flat")
        flat_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        hnsw = llm4dsr.Grounder(titles, emb, index="hnsw", ef_search=a.ef_search, ef_construction=a.ef_construction)
        hnsw_build = time.perf_counter() - t0
        del emb

        out_f = (np.empty((a.queries, a.k), np.int64), np.empty((a.queries, a.k), np.float32))
        out_h = (np.empty((a.queries, a.k), np.int64), np.empty((a.queries, a.k), np.float32))
        t_flat = timed(lambda: flat.search(q, a.k, out=out_f), a.repeats)
        t_hnsw = timed(lambda: hnsw.search(q, a.k, out=out_h), a.repeats)
        recall = np.mean([len(set(x) & set(y)) / a.k for x, y in zip(out_f[0].tolist(), out_h[0].tolist())])

        texts = [titles[i] if j % 2 == 0 else f"no such title {j}" for j, i in
                 enumerate(rng.integers(0, n, a.queries))]
        t_ground = timed(lambda: hnsw.ground(texts=texts, embeddings=q, as_arrays=True), a.repeats)

        print(f"\nN={n:,} items x D={a.dim}")
        print(f"  build     flat {flat_build:8.2f} s   hnsw {hnsw_build:8.2f} s (M=32, efConstruction={a.ef_construction})")
        print(f"  search    flat {a.queries / t_flat:10.0f} q/s   hnsw {a.queries / t_hnsw:10.0f} q/s   "
              f"hnsw/flat {t_flat / t_hnsw:6.1f}x   hnsw recall@{a.k} {recall:.3f}")
        print(f"  ground    hnsw, half exact titles: {a.queries / t_ground:10.0f} q/s")
        del flat, hnsw


if __name__ == "__main__":
    main()
