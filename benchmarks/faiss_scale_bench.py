"""FAISS at 1M-10M vectors: exact, HNSW, IVF-Flat, IVF-PQ and memory-mapped IVF-PQ (issue 9).

Synthetic 384-d unit vectors with cluster structure: a Gaussian mixture whose components are
a random centre plus a low-rank (24-d) spread and a little isotropic noise, normalised. Not
uniform random vectors: in 384 dimensions those are all nearly orthogonal and nearly equidistant,
so "the 10 nearest" is decided by noise and every approximate method looks bad for no reason
that applies to real embeddings, which have low intrinsic dimension and topical clusters. With
these parameters a query's nearest neighbour has cosine ~0.66, its 10th ~0.57, a random pair ~0,
close to what sentence embeddings show. Queries are fresh draws from the same mixture.

Vectors are generated in blocks from a fixed seed (block ``i`` is always the same), so 10M
vectors (15 GB as float32) are never held at once for the kinds that do not need them: the
exact ground truth is a flat search over the blocks merged in a heap, and IVF-PQ is trained on a
sample and filled block by block through ragkit's ``VectorIndex``. Kinds that keep the raw
vectors (flat, hnsw, ivf) are skipped above ``--max-raw`` vectors.

Each (size, kind) runs in its own process, so its peak RSS (ru_maxrss) is its own. Reported:
build seconds (train + add), file size, peak RSS, RSS after loading the saved file (anonymous
vs file-backed pages: a memory-mapped index's pages are file-backed and the OS can evict them),
recall@10 against exact search for several nprobe / efSearch values (IVF-PQ with and without
re-ranking its candidates exactly), and single-query p50 latency with 1 thread and with the
default thread count.

    .venv/bin/python benchmarks/faiss_scale_bench.py --sizes 100000            # quick, ~3 min
    .venv/bin/python benchmarks/faiss_scale_bench.py --sizes 1000000,10000000  # full
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ragkit.index.vectors import (  # noqa: E402  (after the path set-up, like the other benches)
    HNSW_EF_SEARCH,
    IVFPQ_RERANK_MIN,
    VectorIndex,
    ivfpq_nprobe,
    ivfpq_shape,
)

DIM = 384
K = 10
BLOCK = 100_000
CLUSTERS = 4096
GROUPS = 16
RANK = 24
SPREAD = 0.8
NOISE = 0.15
KINDS = ("ivfpq", "ivfpq-mmap", "flat", "hnsw", "ivf")  # ivfpq first: it caches the truth
RAW_KINDS = ("flat", "hnsw", "ivf")


# -- data -------------------------------------------------------------------------------------
def mixture(seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Centres (unit) and per-group low-rank spread directions of the Gaussian mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.standard_normal((GROUPS, RANK, DIM)).astype(np.float32) / np.sqrt(DIM)
    return centres, spread


def block(
    model: tuple[np.ndarray, np.ndarray], start: int, size: int, seed: int = 99
) -> np.ndarray:
    """Vectors ``start .. start+size`` (always the same for the same ``start``)."""
    centres, spread = model
    rng = np.random.default_rng([seed, start])
    cluster = rng.integers(0, len(centres), size)
    latent = rng.standard_normal((size, RANK)).astype(np.float32) * SPREAD
    out = centres[cluster]
    group = cluster % GROUPS
    for g in range(GROUPS):
        rows = group == g
        out[rows] += latent[rows] @ spread[g]
    out += rng.standard_normal((size, DIM)).astype(np.float32) * (NOISE / np.sqrt(DIM))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def blocks(model: tuple[np.ndarray, np.ndarray], n: int):  # type: ignore[no-untyped-def]
    for start in range(0, n, BLOCK):
        yield start, block(model, start, min(BLOCK, n - start))


def queries(model: tuple[np.ndarray, np.ndarray], count: int) -> np.ndarray:
    return block(model, 0, count, seed=7)


# -- measurement helpers ------------------------------------------------------------------------
def rss() -> dict[str, float]:
    """Current anonymous and file-backed resident memory of this process, in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recall(found: np.ndarray, truth: np.ndarray | None) -> float:
    assert truth is not None
    return float(np.mean([len(set(f[:K]) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def p50_ms(search, qs: np.ndarray, threads: int) -> float:  # type: ignore[no-untyped-def]
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        for q in qs[:10]:  # warm-up (and page-in for mapped files)
            search(q.reshape(1, -1))
        times = []
        for q in qs:
            t0 = time.perf_counter()
            search(q.reshape(1, -1))
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)
    finally:
        faiss.omp_set_num_threads(before)


def ground_truth(n: int, qs: np.ndarray, work: Path) -> np.ndarray:
    """Exact top-10 ids over the generated blocks (cached per size in the work folder)."""
    path = work / f"truth-{n}-{len(qs)}.npy"
    if path.exists():
        return np.load(path)
    import faiss

    model = mixture()
    heap = faiss.ResultHeap(len(qs), K, keep_max=True)
    for start, vecs in blocks(model, n):
        _exact_block(heap, qs, vecs, start)
    heap.finalize()
    np.save(path, heap.I)
    return heap.I


def _exact_block(heap: Any, qs: np.ndarray, vecs: np.ndarray, start: int) -> None:
    """Merge the exact top-10 of one block (ids offset by ``start``) into ``heap``."""
    scores = qs @ vecs.T
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    heap.add_result(
        np.ascontiguousarray(np.take_along_axis(scores, top, axis=1)),
        np.ascontiguousarray(top + start, dtype=np.int64),
    )


def exact_scores(n: int, qs: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Exact query-candidate inner products, one more pass over the blocks (for re-ranking)."""
    model = mixture()
    out = np.full(candidates.shape, -np.inf, dtype=np.float32)
    for start, vecs in blocks(model, n):
        inside = (candidates >= start) & (candidates < start + len(vecs))
        rows, cols = np.nonzero(inside)
        if len(rows):
            out[rows, cols] = np.einsum("ij,ij->i", qs[rows], vecs[candidates[rows, cols] - start])
    return out


# -- one configuration (runs in its own process) ---------------------------------------------------
def worker(
    kind: str, n: int, nq: int, work: Path, sweep: list[int], max_nlist: int = 0
) -> dict[str, Any]:
    import faiss

    if max_nlist:  # experiment: ragkit's nlist cap (and training sample) raised
        from ragkit.index import vectors as ragkit_vectors

        ragkit_vectors.IVFPQ_MAX_NLIST = max_nlist
        ragkit_vectors.IVFPQ_MAX_TRAIN = max(
            ragkit_vectors.IVFPQ_MAX_TRAIN, ragkit_vectors.IVFPQ_TRAIN_PER_LIST * max_nlist
        )
    model = mixture()
    qs = queries(model, nq)
    truth_path = work / f"truth-{n}-{nq}.npy"
    truth = ground_truth(n, qs, work) if kind != "ivfpq" or truth_path.exists() else None
    ids = np.arange(n, dtype=np.int64)
    result: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "queries": nq,
        "threads": faiss.omp_get_max_threads(),
    }
    path = work / f"{kind.removesuffix('-mmap')}-{n}.faiss"
    base_rss = rss()["VmRSS"]

    if kind == "ivfpq-mmap":
        if not path.exists():
            raise SystemExit(f"run ivfpq for n={n} first (needs {path})")
        t0 = time.perf_counter()
        index = VectorIndex.load(path, DIM, "ivfpq", mmap=True)
        result["load_s"] = time.perf_counter() - t0
        after = rss()
        result["rss_after_load_mib"] = after["VmRSS"] - base_rss
        result["rss_anon_after_load_mib"] = after["RssAnon"]
        result["file_mib"] = path.stat().st_size / 2**20
        cold = []
        for q in qs[:20]:
            t0 = time.perf_counter()
            index.search(q.reshape(1, -1), K)
            cold.append((time.perf_counter() - t0) * 1000)
        result["first_queries_p50_ms"] = statistics.median(cold)
        reference = np.load(work / f"ivfpq-{n}-ids.npz")
        rows = {}
        for nprobe in sweep:
            index._index.nprobe = nprobe
            _, found = index.search(qs, IVFPQ_RERANK_MIN)
            rows[str(nprobe)] = {
                "recall_pq": recall(found, truth),
                "same_ids_as_in_memory": bool(np.array_equal(found, reference[str(nprobe)])),
            }
        index._index.nprobe = ivfpq_nprobe(int(index._index.nlist))
        result["sweep"] = rows
        result["p50_ms_1t"] = p50_ms(lambda q: index.search(q, K), qs[:200], 1)
        result["p50_ms"] = p50_ms(lambda q: index.search(q, K), qs[:200], result["threads"])
        served = rss()
        result["rss_after_queries_mib"] = served["VmRSS"] - base_rss
        result["rss_anon_after_queries_mib"] = served["RssAnon"]
        result["rss_file_after_queries_mib"] = served["RssFile"]
        result["peak_rss_mib"] = peak_mib()
        return result

    index = VectorIndex(DIM, "ivfpq" if kind == "ivfpq" else kind)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    if kind in RAW_KINDS:
        data = np.empty((n, DIM), dtype=np.float32)
        for start, vecs in blocks(model, n):
            data[start : start + len(vecs)] = vecs
        result["generate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if kind == "ivf":
            # ragkit's ivf trains k-means on every vector (~25 min at 1M on 2 cores); train on
            # the same sample size as ivfpq instead, nlist = 4*sqrt(sample)
            index.prepare(n, data[: VectorIndex.training_size(n)])
            for start in range(0, n, BLOCK):
                index.add(ids[start : start + BLOCK], data[start : start + BLOCK])
        else:
            index.rebuild(ids, data)
        del data
    else:
        train = block(model, 0, VectorIndex.training_size(n), seed=5)  # an independent sample
        nlist, m, nbits = ivfpq_shape(DIM, n)
        result.update({"nlist": nlist, "pq_m": m, "pq_bits": nbits, "train_vectors": len(train)})
        t_train = time.perf_counter()
        index.prepare(n, train)
        result["train_s"] = time.perf_counter() - t_train
        del train
        heap = faiss.ResultHeap(nq, K, keep_max=True) if truth is None else None
        spent = 0.0  # exact search for the ground truth rides along; not counted as build time
        for start, vecs in blocks(model, n):  # generation time is part of build_s (~4 s per 200k)
            index.add(ids[start : start + len(vecs)], vecs)
            if heap is not None:
                t_exact = time.perf_counter()
                _exact_block(heap, qs, vecs, start)
                spent += time.perf_counter() - t_exact
        t0 += spent
        if heap is not None:
            heap.finalize()
            truth = heap.I
            np.save(truth_path, truth)
    result["build_s"] = time.perf_counter() - t0
    result["peak_rss_build_mib"] = peak_mib()
    index.save(path)
    result["file_mib"] = path.stat().st_size / 2**20
    del index
    # what serving costs: load the saved file into RAM (no memory-map)
    before = rss()["VmRSS"]
    t0 = time.perf_counter()
    index = VectorIndex.load(path, DIM, "ivfpq" if kind == "ivfpq" else kind, mmap=False)  # type: ignore[arg-type]
    result["load_s"] = time.perf_counter() - t0
    result["rss_after_load_mib"] = rss()["VmRSS"] - before
    raw = index._index
    rows = {}
    if kind == "flat":
        _, found = index.search(qs, K)
        rows["exact"] = {"recall": recall(found, truth)}
    elif kind == "hnsw":
        hnsw = faiss.downcast_index(raw.index).hnsw  # type: ignore[attr-defined]
        for ef in sorted({64, HNSW_EF_SEARCH, 256}):
            hnsw.efSearch = ef
            _, found = index.search(qs, K)
            rows[f"ef{ef}"] = {"recall": recall(found, truth)}
        hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf":
        result["nlist"] = int(raw.nlist)
        default = raw.nprobe
        for nprobe in sweep:
            raw.nprobe = nprobe
            _, found = index.search(qs, K)
            rows[str(nprobe)] = {"recall": recall(found, truth)}
        raw.nprobe = default
    else:
        candidates = {}
        for nprobe in sweep:
            raw.nprobe = nprobe
            _, found = index.search(qs, IVFPQ_RERANK_MIN)
            candidates[str(nprobe)] = found
            t0 = time.perf_counter()
            raw.search(qs[:200], K)
            rows[str(nprobe)] = {
                "recall_pq": recall(found, truth),
                "batch_ms_per_query": (time.perf_counter() - t0) * 1000 / 200,
            }
        np.savez(work / f"ivfpq-{n}-ids.npz", **candidates)  # type: ignore[arg-type]
        # re-ranking the 40 PQ candidates with exact vectors (ragkit reads them from its store)
        stacked = np.concatenate([candidates[str(p)] for p in sweep])
        scores = exact_scores(n, np.tile(qs, (len(sweep), 1)), stacked)
        for i, nprobe in enumerate(sweep):
            part = slice(i * nq, (i + 1) * nq)
            order = np.argsort(-scores[part], axis=1, kind="stable")[:, :K]
            reranked = np.take_along_axis(stacked[part], order, axis=1)
            rows[str(nprobe)]["recall_reranked"] = recall(reranked, truth)
        raw.nprobe = ivfpq_nprobe(int(raw.nlist))
    result["sweep"] = rows

    if kind == "ivfpq":
        rng = np.random.default_rng(0)
        fake = rng.standard_normal((4 * IVFPQ_RERANK_MIN, DIM)).astype(np.float32)

        def stored(vids: np.ndarray) -> np.ndarray:  # stands in for the chunk store's vectors
            return fake[: len(vids)]

        def search(q: np.ndarray) -> Any:
            return index.search(q, K, exact=stored)
    else:

        def search(q: np.ndarray) -> Any:
            return index.search(q, K)

    result["p50_ms_1t"] = p50_ms(search, qs[:200], 1)
    result["p50_ms"] = p50_ms(search, qs[:200], result["threads"])
    result["peak_rss_mib"] = peak_mib()
    if kind not in ("ivfpq",):
        path.unlink()  # keep disk use down; ivfpq's file is read by ivfpq-mmap
    return result


# -- driver ---------------------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| n | kind | build s | file MiB | peak RSS MiB | RSS after load MiB | recall@10 (setting) | p50 ms 1 thread | p50 ms default threads |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['n']:,} | {r['kind']} | failed: {r['error']} | | | | | | |")
            continue
        parts = []
        for setting, row in r["sweep"].items():
            if "recall" in row:
                parts.append(f"{row['recall']:.3f} ({setting})")
            elif "recall_reranked" in row:
                parts.append(f"{row['recall_pq']:.3f}/{row['recall_reranked']:.3f} (np{setting})")
            else:
                parts.append(f"{row['recall_pq']:.3f} (np{setting})")
        rss_load = r["rss_after_load_mib"]
        if r["kind"] == "ivfpq-mmap":
            rss_load_text = (
                f"{rss_load:.0f} (file-backed after queries: {r['rss_file_after_queries_mib']:.0f})"
            )
        else:
            rss_load_text = f"{rss_load:.0f}"
        lines.append(
            f"| {r['n']:,} | {r['kind']} | {r.get('build_s', 0):.1f} | {r['file_mib']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | {rss_load_text} | {', '.join(parts)} | "
            f"{r['p50_ms_1t']:.2f} | {r['p50_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000", help="comma-separated vector counts")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--nprobe", default="8,16,32,64,128", help="IVF nprobe values to sweep")
    parser.add_argument(
        "--max-raw", type=int, default=2_000_000, help="skip flat/hnsw/ivf above this n"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "faiss-scale")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--max-nlist",
        type=int,
        default=0,
        help="experiment: raise ragkit's IVF-PQ nlist cap (and its training sample) to this; "
        "files go to WORK/nlist<N>",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sweep = [int(x) for x in args.nprobe.split(",")]
    if args.worker:
        kind, n = args.worker.split(":")
        row = worker(kind, int(n), args.queries, args.work, sweep, args.max_nlist)
        print(json.dumps(row))
        return
    if args.max_nlist:
        args.work = args.work / f"nlist{args.max_nlist}"
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    results: list[dict[str, Any]] = []
    for n in sizes:
        if "ivfpq" not in kinds:  # otherwise the ivfpq run computes it while adding
            t0 = time.perf_counter()
            ground_truth(n, queries(mixture(), args.queries), args.work)
            print(f"n={n:,}: exact ground truth in {time.perf_counter() - t0:.0f}s", flush=True)
        for kind in kinds:
            if kind in RAW_KINDS and n > args.max_raw:
                print(
                    f"n={n:,} {kind}: skipped (raw vectors {n * DIM * 4 / 2**30:.0f} GiB > --max-raw)"
                )
                continue
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                f"{kind}:{n}",
                "--queries",
                str(args.queries),
                "--nprobe",
                args.nprobe,
                "--work",
                str(args.work),
                "--max-nlist",
                str(args.max_nlist),
            ]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                results.append({"kind": kind, "n": n, "error": tail[0]})
                print(f"n={n:,} {kind}: FAILED {tail[0]}", flush=True)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            print(f"n={n:,} {kind}: {time.perf_counter() - t0:.0f}s {json.dumps(row)}", flush=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        args.out.mkdir(parents=True, exist_ok=True)
        tag = f"-nlist{args.max_nlist}" if args.max_nlist else ""
        out = args.out / f"faiss_scale_{'-'.join(str(s) for s in sizes)}{tag}-{stamp}.json"
        out.write_text(json.dumps({"sizes": sizes, "results": results}, indent=2) + "\n")
    print(table(results))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
