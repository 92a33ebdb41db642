"""Exact vs approximate FAISS structures at the sizes where ``auto`` switches (flat → HNSW).

Vectors are unit-normalised Gaussian vectors: a worst case for approximate search (no cluster
structure, unlike real embeddings), so the recall figures are lower bounds. For each structure
ragkit can use: build seconds, single-query p50 latency and recall@10 against the exact answer.

    .venv/bin/python benchmarks/index_type_bench.py --n 20000 --queries 200
    .venv/bin/python benchmarks/index_type_bench.py --n 100000 --queries 500      # full
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--threads", type=int, default=1, help="FAISS OpenMP threads (1 = fair on a shared machine)"
    )
    args = parser.parse_args(argv)

    import faiss

    from ragkit.index.vectors import VectorIndex

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.choice(args.n, args.queries, replace=False)] + 0.1 * rng.standard_normal(
        (args.queries, args.dim)
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = np.arange(args.n, dtype=np.int64)

    exact: list[set[int]] = []
    rows = []
    for kind in ("flat", "hnsw", "ivf"):
        index = VectorIndex(args.dim, kind)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        index.rebuild(ids, data)
        build = time.perf_counter() - t0
        latencies, results = [], []
        for q in queries:
            t1 = time.perf_counter()
            _, found = index.search(q.reshape(1, -1), 10)
            latencies.append(time.perf_counter() - t1)
            results.append(set(found[0].tolist()))
        if kind == "flat":
            exact = results
        recall = statistics.mean(len(r & e) / 10 for r, e in zip(results, exact, strict=True))
        rows.append((kind, build, 1000 * statistics.median(latencies), recall))
    print(f"{args.n} vectors x {args.dim} dims, {args.queries} queries, {args.threads} thread(s)")
    print("| structure | build s | p50 ms | recall@10 vs exact |")
    print("| --- | ---: | ---: | ---: |")
    for kind, build, p50, recall in rows:
        print(f"| {kind} | {build:.1f} | {p50:.2f} | {recall:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
