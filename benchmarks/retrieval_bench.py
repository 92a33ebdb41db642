"""Retrieval quality and latency: dense vs BM25 vs hybrid (and + MMR) on SQuAD with distractors.

The corpus is the 87 paragraphs of ``../shared/data/squad_small.json`` (one document each, so
the gold passage of every question is known) plus the Python docs as distractors (the first
``--max-files`` files; all 497 for the full run). Every answerable question is asked of every
retriever; recall@1/5/10 and MRR@10 come from :mod:`ragkit.evaluation`, latency is the wall time
of each single search. ``--generate`` adds end-to-end EM/F1 with the packaged SmolLM2 for k = 1,
3, 5 (hybrid retriever, grounded-QA prompt, batched generation).

    .venv/bin/python benchmarks/retrieval_bench.py --max-files 40 --limit 200
    .venv/bin/python benchmarks/retrieval_bench.py --max-files 497 --generate --generate-limit 64   # full
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
WORK = HERE / ".work"
RESULTS = HERE / "results"


def python_docs(max_files: int) -> list[Path]:
    """The first ``max_files`` docs files by path, unpacked once into the work folder."""
    target = WORK / "python-docs"
    if not target.is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        with tarfile.open(DATA / "python-docs-3.11.tar.gz") as tar:
            tar.extractall(WORK, filter="data")
    return sorted(p for p in target.rglob("*.txt") if p.is_file())[:max_files]


def build_index(max_files: int) -> Path:
    from ragkit import Index, index_paths
    from ragkit.evaluation import read_squad

    directory = WORK / f"retrieval-index-squad-docs{max_files}"
    if (directory / "manifest.json").is_file():
        return directory
    started = time.perf_counter()
    with Index.create(directory) as index:
        index.add_documents(read_squad(DATA / "squad_small.json").corpus)
        index.commit()
        if max_files:
            index_paths(index, python_docs(max_files))
        counts = index.counts()
    print(
        f"built {directory.name}: {counts.documents} documents, {counts.chunks} chunks in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return directory


def timed(retriever: Any) -> tuple[Any, list[float]]:
    """Wrap ``retriever.search`` to record the latency of every call."""
    latencies: list[float] = []

    class Timed:
        component_name = getattr(retriever, "component_name", type(retriever).__name__)

        def search(self, query: str, k: int | None = None, filters: Any = None) -> Any:
            t0 = time.perf_counter()
            hits = retriever.search(query, k, filters)
            latencies.append(time.perf_counter() - t0)
            return hits

    return Timed(), latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-files", type=int, default=40, help="Python docs files used as distractors"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="answerable questions to evaluate (default: all)"
    )
    parser.add_argument(
        "--generate", action="store_true", help="also EM/F1 with SmolLM2 for k = 1, 3, 5"
    )
    parser.add_argument("--generate-limit", type=int, default=32)
    args = parser.parse_args(argv)

    from ragkit import Index
    from ragkit.evaluation import EvalDataset, evaluate, read_squad
    from ragkit.retrieval import (
        BM25Retriever,
        DenseRetriever,
        HybridRetriever,
        MMRReranker,
        RerankedRetriever,
    )

    dataset = read_squad(DATA / "squad_small.json")
    answerable = [q for q in dataset.questions if not q.is_impossible][: args.limit]
    data = EvalDataset(name="squad_small+docs", format="squad", questions=answerable)
    index = Index.open(build_index(args.max_files))
    index.search("warm up")
    index.search_lexical("warm up")
    counts = index.counts()
    retrievers: dict[str, Any] = {
        "dense": DenseRetriever(index, k=10),
        "bm25": BM25Retriever(index, k=10),
        "hybrid": HybridRetriever(index, k=10),
        "hybrid+mmr": RerankedRetriever(
            HybridRetriever(index, k=10), MMRReranker(index, k=10, diversity=0.3), candidates=20
        ),
    }
    rows: dict[str, dict[str, float]] = {}
    for name, retriever in retrievers.items():
        wrapped, latencies = timed(retriever)
        report = evaluate(data, wrapped, k=10, unit="document")
        rows[name] = {
            **{m: report.retrieval[m] for m in ("recall@1", "recall@5", "recall@10", "mrr@10")},
            "p50_ms": 1000 * statistics.median(latencies),
        }
    print(
        f"\nRetrieval on {len(answerable)} answerable questions; corpus {counts.documents} documents / {counts.chunks} chunks"
    )
    print("| retriever | recall@1 | recall@5 | recall@10 | MRR@10 | p50 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['recall@1']:.3f} | {row['recall@5']:.3f} | {row['recall@10']:.3f} | {row['mrr@10']:.3f} | {row['p50_ms']:.1f} |"
        )
    best_single = max(rows["dense"]["recall@5"], rows["bm25"]["recall@5"])
    print(
        f"\nhybrid recall@5 - best single = {rows['hybrid']['recall@5'] - best_single:+.3f} (target >= +0.02); "
        f"hybrid p50 / dense p50 = {rows['hybrid']['p50_ms'] / rows['dense']['p50_ms']:.2f} (target <= 2)"
    )

    generation: dict[str, dict[str, float]] = {}
    if args.generate:
        from ragkit.generation import Generator
        from ragkit.rag import RAGPipeline

        generator = Generator()
        subset = EvalDataset(
            name="gen", format="squad", questions=answerable[: args.generate_limit]
        )
        for k in (1, 3, 5):
            retriever = HybridRetriever(index, k=k)
            rag = RAGPipeline(retriever, generator, options={"max_new_tokens": 48})
            t0 = time.perf_counter()
            report = evaluate(subset, retriever, k=k, unit="document", rag=rag)
            assert report.generation is not None
            generation[f"k={k}"] = {
                "exact_match": report.generation["exact_match"],
                "f1": report.generation["f1"],
                "seconds": time.perf_counter() - t0,
            }
        print(f"\nEnd to end with SmolLM2 on {len(subset.questions)} questions (hybrid retriever)")
        print("| k | EM | F1 | seconds |")
        print("| ---: | ---: | ---: | ---: |")
        for k, row in generation.items():
            print(
                f"| {k[2:]} | {row['exact_match']:.3f} | {row['f1']:.3f} | {row['seconds']:.0f} |"
            )

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"retrieval-{args.max_files}-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "corpus": counts.model_dump(),
                "retrieval": rows,
                "generation": generation,
            },
            indent=2,
        )
    )
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
