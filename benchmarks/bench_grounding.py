"""Grounding throughput: llm4dsr.Grounder queries/s, exact (FAISS IndexFlatIP) vs HNSW (IndexHNSWFlat,
inner product, M = --hnsw-m, 32), on random float32 catalogue embeddings (--data gaussian, or clustered: see make_embeddings).

For each catalogue size (10k and 1M items by default, D = 576: SmolLM2-135M's hidden size) it builds
both indexes (HNSW build time printed), then times search() of one batch of --queries queries (1,000)
for the top --k (10) items, and prints queries/s for each index, the HNSW speed-up over flat and the
HNSW recall@k against the exact results. Every search figure is the median of --repeats runs after one
untimed warm-up. ground() with 1,000 texts of which half are exact titles is timed too (it skips the
search for those). Random Gaussian vectors are the hardest case for HNSW (no cluster structure), so
its recall here is a lower bound for real text embeddings.

Memory: the caller's matrix plus the index's normalised copy, 2 x N x D x 4 bytes (4.6 GB at 1M x 576);
use --dim 256 where that is too much. The HNSW build at 1M items takes tens of minutes on two cores
(random vectors force long graph searches); the flat figures print first.

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


def make_embeddings(rng, n, dim, queries, kind):
    """Catalogue embeddings [n, dim] and queries [queries, dim], float32.

    gaussian: i.i.d. standard normal vectors and queries. In 576 dimensions every pair of such points is
    almost equally far apart, so a query has no real nearest neighbours and graph indexes lose their way.
    clustered: items around sqrt(n) random centres (within-cluster spread 0.3 of the centres' scale), and
    each query a catalogue item plus 0.1-scale noise: what grounding sees, a generated title's embedding
    near a real one, in a catalogue whose items form topical groups."""
    if kind == "gaussian":
        return (rng.standard_normal((n, dim), dtype=np.float32),
                rng.standard_normal((queries, dim), dtype=np.float32))
    centres = rng.standard_normal((max(1, int(np.sqrt(n))), dim), dtype=np.float32)
    emb = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):  # in blocks: one n x dim temporary at 1M items is 2.3 GB
        stop = min(n, start + 65536)
        emb[start:stop] = centres[rng.integers(0, len(centres), stop - start)]
        emb[start:stop] += 0.3 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    q = emb[rng.integers(0, n, queries)] + 0.1 * rng.standard_normal((queries, dim), dtype=np.float32)
    return emb, q


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--flat-only", action="store_true", help="skip the HNSW index (its 1M build takes minutes)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", choices=["gaussian", "clustered"], default="gaussian",
                   help="gaussian: i.i.d. vectors and queries; clustered: a mixture with perturbed items as queries")
    p.add_argument("--threads", type=int, default=0, help="libtorch/OpenMP threads (0: all cores)")
    a = p.parse_args()
    llm4dsr.set_num_threads(a.threads)
    print(f"threads={llm4dsr.num_threads()} dim={a.dim} queries={a.queries} k={a.k} ef_search={a.ef_search} data={a.data}")

    rng = np.random.default_rng(0)
    for n in a.sizes:
        emb, q = make_embeddings(rng, n, a.dim, a.queries, a.data)
        titles = [f"item {i}" for i in range(n)]

        t0 = time.perf_counter()
        flat = llm4dsr.Grounder(titles, emb, index="flat")
        flat_build = time.perf_counter() - t0
        out_f = (np.empty((a.queries, a.k), np.int64), np.empty((a.queries, a.k), np.float32))
        t_flat = timed(lambda: flat.search(q, a.k, out=out_f), a.repeats)
        # The flat figures print before the HNSW build starts: at 1M items that build takes tens of
        # minutes on two cores, and a stopped run should still leave the exact-search figure.
        print(f"\nN={n:,} items x D={a.dim}")
        print(f"  flat      build {flat_build:8.2f} s   search {a.queries / t_flat:10.0f} q/s", flush=True)
        del flat
        if a.flat_only:
            continue

        t0 = time.perf_counter()
        hnsw = llm4dsr.Grounder(titles, emb, index="hnsw", ef_search=a.ef_search, hnsw_m=a.hnsw_m,
                                ef_construction=a.ef_construction)
        hnsw_build = time.perf_counter() - t0
        del emb
        out_h = (np.empty((a.queries, a.k), np.int64), np.empty((a.queries, a.k), np.float32))
        t_hnsw = timed(lambda: hnsw.search(q, a.k, out=out_h), a.repeats)
        recall = np.mean([len(set(x) & set(y)) / a.k for x, y in zip(out_f[0].tolist(), out_h[0].tolist())])
        recall_at_1 = float(np.mean(out_f[0][:, 0] == out_h[0][:, 0]))  # grounding keeps the top item only
        texts = [titles[i] if j % 2 == 0 else f"no such title {j}" for j, i in
                 enumerate(rng.integers(0, n, a.queries))]
        t_ground = timed(lambda: hnsw.ground(texts=texts, embeddings=q, as_arrays=True), a.repeats)
        print(f"  hnsw      build {hnsw_build:8.2f} s   search {a.queries / t_hnsw:10.0f} q/s   "
              f"(M={a.hnsw_m}, efConstruction={a.ef_construction}, efSearch={a.ef_search})")
        print(f"  hnsw/flat {t_flat / t_hnsw:6.1f}x   hnsw recall@{a.k} {recall:.3f}   top-1 agreement {recall_at_1:.3f}")
        print(f"  ground    hnsw, half exact titles: {a.queries / t_ground:10.0f} q/s", flush=True)
        del hnsw

if __name__ == "__main__":
    main()
