"""Exact vs approximate FAISS structures at the sizes where ``auto`` switches (flat → HNSW).

Two sources of vectors:

- random (default): unit-normalised Gaussian vectors, a worst case for approximate search (no
  cluster structure, unlike real embeddings), so the recall figures are lower bounds; queries
  are stored vectors plus noise.
- ``--from-index DIR``: the real vectors of an existing ragkit index, read from its SQLite store
  (nothing is re-embedded), e.g. the SQuAD + Python docs index that retrieval_bench.py caches.
  Queries are either the SQuAD questions embedded by the index's own embedder and backend
  (``--query-source questions``) or stored chunks held out of the structure
  (``--query-source held-out``).

For each structure ragkit can use: build seconds, single-query p50 latency and recall@10 against
the exact answer; HNSW is measured at several ``efSearch`` values and IVF at several ``nprobe``
values (ragkit's defaults: efSearch 128, nprobe 16).

    .venv/bin/python benchmarks/index_type_bench.py --n 20000 --queries 200
    .venv/bin/python benchmarks/index_type_bench.py --n 100000 --queries 500      # full
    .venv/bin/python benchmarks/index_type_bench.py \\
        --from-index benchmarks/.work/retrieval-index-squad-docs497-onnx-int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def random_vectors(n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    picked = data[rng.choice(n, queries, replace=False)]
    noisy = picked + 0.1 * rng.standard_normal((queries, dim)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return data, noisy, f"{n} random unit vectors"


def index_vectors(directory: Path, source: str, queries: int) -> tuple[np.ndarray, np.ndarray, str]:
    from ragkit.index.store import ChunkStore

    manifest = json.loads((directory / "manifest.json").read_text())
    dim = int(manifest["dimension"])
    store = ChunkStore(directory / "store.sqlite")
    data = np.concatenate([vectors.copy() for _, vectors in store.iter_vectors(dim)])
    store.close()
    backend = manifest.get("embed_backend", "torch")
    label = f"{len(data)} {manifest['embedder']} vectors ({backend}) of {directory.name}"
    if source == "held-out":
        rng = np.random.default_rng(0)
        held = rng.choice(len(data), queries, replace=False)
        keep = np.ones(len(data), dtype=bool)
        keep[held] = False
        label = f"{keep.sum()} of {label}, {queries} held-out chunks as queries"
        return data[keep], data[held], label
    from ragkit import Embedder
    from ragkit.evaluation import read_squad

    questions = [q.question for q in read_squad(DATA / "squad_small.json").questions]
    questions = questions[:queries]
    embedder = Embedder(manifest["embedder"], backend=backend)
    return data, embedder.encode(questions), f"{label}, {len(questions)} SQuAD questions as queries"


def measure(index: Any, queries: np.ndarray) -> tuple[float, list[set[int]]]:
    latencies, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, found = index.search(q.reshape(1, -1), 10)
        latencies.append(time.perf_counter() - t0)
        results.append(set(found[0].tolist()))
    return 1000 * statistics.median(latencies), results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="random vectors")
    parser.add_argument("--dim", type=int, default=384, help="random vector dimensions")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--from-index", type=Path, default=None, help="use the stored vectors of this index"
    )
    parser.add_argument("--query-source", choices=("questions", "held-out"), default="questions")
    parser.add_argument("--ef-search", default="16,32,64,128,256", help="HNSW efSearch values")
    parser.add_argument("--nprobe", default="4,16,64", help="IVF nprobe values")
    parser.add_argument(
        "--threads", type=int, default=1, help="FAISS OpenMP threads (1 = fair on a shared machine)"
    )
    args = parser.parse_args(argv)

    import faiss

    from ragkit.index.vectors import HNSW_EF_SEARCH, IVF_NPROBE, VectorIndex

    faiss.omp_set_num_threads(args.threads)
    if args.from_index is not None:
        data, queries, label = index_vectors(args.from_index, args.query_source, args.queries)
    else:
        data, queries, label = random_vectors(args.n, args.dim, args.queries)
    data = np.ascontiguousarray(data, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    ids = np.arange(len(data), dtype=np.int64)
    dim = data.shape[1]

    rows: list[tuple[str, float, float, float]] = []
    exact: list[set[int]] = []

    def record(name: str, build: float, p50: float, results: list[set[int]]) -> None:
        recall = statistics.mean(len(r & e) / 10 for r, e in zip(results, exact, strict=True))
        rows.append((name, build, p50, recall))

    for kind in ("flat", "hnsw", "ivf"):
        index = VectorIndex(dim, kind)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        index.rebuild(ids, data)
        build = time.perf_counter() - t0
        raw = index._index  # the benchmark varies the search-time knobs
        if kind == "flat":
            p50, exact = measure(index, queries)
            record("flat (exact)", build, p50, exact)
        elif kind == "hnsw":
            inner = faiss.downcast_index(raw.index)
            for ef in (int(v) for v in args.ef_search.split(",")):
                inner.hnsw.efSearch = ef
                p50, results = measure(index, queries)
                default = " (default)" if ef == HNSW_EF_SEARCH else ""
                record(f"HNSW M=32 efSearch={ef}{default}", build, p50, results)
        else:
            for nprobe in (int(v) for v in args.nprobe.split(",")):
                raw.nprobe = min(nprobe, raw.nlist)
                p50, results = measure(index, queries)
                default = " (default)" if nprobe == IVF_NPROBE else ""
                record(f"IVF nlist={raw.nlist} nprobe={raw.nprobe}{default}", build, p50, results)
    print(f"{label}; {dim} dims, {len(queries)} queries, {args.threads} FAISS thread(s)")
    print("| structure | build s | p50 ms | recall@10 vs exact |")
    print("| --- | ---: | ---: | ---: |")
    for name, build, p50, recall in rows:
        print(f"| {name} | {build:.1f} | {p50:.2f} | {recall:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
