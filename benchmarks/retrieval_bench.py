"""Retrieval quality and latency: dense vs BM25 vs hybrid (and + MMR) on SQuAD with distractors.

The corpus is the 87 paragraphs of ``../shared/data/squad_small.json`` (one document each, so
the gold passage of every question is known) plus the Python docs as distractors (the first
``--max-files`` files; all 497 for the full run). The index is built once with the default
embedder (``backend="auto"``) and cached in
``benchmarks/.work/retrieval-index-squad-docs<N>-<backend>`` (its manifest records
``embed_backend``). Every answerable question is asked of every
retriever; recall@1/5/10 and MRR@10 come from :mod:`ragkit.evaluation`; latency is the wall time
of each single search, with the query cache off so every retriever embeds every question.
``--generate`` adds end-to-end EM/F1 with the packaged SmolLM2 for k = 1, 3, 5 (hybrid
retriever, grounded-QA prompt, batched generation), in rounds that visit every k so that a
``--generate-budget`` cut leaves the same questions answered for each k.

    .venv/bin/python benchmarks/retrieval_bench.py --max-files 40 --limit 200           # quick
    .venv/bin/python benchmarks/retrieval_bench.py --max-files 497                      # full
    .venv/bin/python benchmarks/retrieval_bench.py --max-files 497 --skip-retrieval \
        --generate --generate-limit 100 --threads 1 --generate-budget 1800              # EM/F1
"""

from __future__ import annotations

import argparse
import json
import os
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
    """The SQuAD + docs index, built once per (size, embedding backend) and cached in ``.work``.

    The embedder is the default one (``backend="auto"``); the backend it resolves to is part of
    the folder name and is recorded in the manifest (``embed_backend``).
    """
    from ragkit import Embedder, Index, index_paths
    from ragkit.evaluation import read_squad

    embedder = Embedder()
    directory = WORK / f"retrieval-index-squad-docs{max_files}-{embedder.backend_name}"
    if (directory / "manifest.json").is_file():
        return directory
    started = time.perf_counter()
    with Index.create(directory, embedder=embedder) as index:
        index.add_documents(read_squad(DATA / "squad_small.json").corpus)
        index.commit()
        if max_files:
            index_paths(index, python_docs(max_files))
        counts = index.counts()
    print(
        f"built {directory.name}: {counts.documents} documents, {counts.chunks} chunks "
        f"in {time.perf_counter() - started:.0f} s",
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


def latency_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "mean_ms": 1000 * statistics.fmean(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
    }


def generate(
    args: argparse.Namespace,
    index: Any,
    answerable: list[Any],
    save_to: dict[str, dict[str, float]],
    save: Any,
) -> dict[str, dict[str, float]]:
    """EM/F1 for k = 1, 3, 5, in rounds of ``--generate-batch`` questions that visit every k.

    Interleaving the k values means a ``--generate-budget`` cut leaves the same questions
    answered for every k; the totals are saved after every round.
    """
    from ragkit.evaluation import EvalDataset, evaluate
    from ragkit.generation import Generator
    from ragkit.rag import RAGPipeline
    from ragkit.retrieval import HybridRetriever

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    generator = Generator()
    questions = answerable[: args.generate_limit]
    retrievers = {k: HybridRetriever(index, k=k) for k in (1, 3, 5)}
    pipelines = {
        k: RAGPipeline(retriever, generator, options={"max_new_tokens": 48})
        for k, retriever in retrievers.items()
    }
    sums = {
        k: dict.fromkeys(("questions", "em", "f1", "grounded", "seconds"), 0.0) for k in pipelines
    }
    started = time.perf_counter()
    for start in range(0, len(questions), args.generate_batch):
        if args.generate_budget and time.perf_counter() - started > args.generate_budget:
            print(f"generation budget spent after {start} questions", file=sys.stderr)
            break
        batch = EvalDataset(
            name="gen", format="squad", questions=questions[start : start + args.generate_batch]
        )
        for k, rag in pipelines.items():
            t0 = time.perf_counter()
            report = evaluate(batch, retrievers[k], k=k, unit="document", rag=rag)
            assert report.generation is not None
            n = report.generation["answered"]
            total = sums[k]
            total["questions"] += n
            total["em"] += n * report.generation["exact_match"]
            total["f1"] += n * report.generation["f1"]
            total["grounded"] += n * report.generation["groundedness"]
            total["seconds"] += time.perf_counter() - t0
            save_to[f"k={k}"] = {
                "questions": total["questions"],
                "exact_match": total["em"] / total["questions"],
                "f1": total["f1"] / total["questions"],
                "groundedness": total["grounded"] / total["questions"],
                "seconds": total["seconds"],
            }
        save()
        print(
            f"  {start + len(batch.questions)} questions: "
            + "; ".join(f"{k} F1 {v['f1']:.3f}" for k, v in save_to.items()),
            file=sys.stderr,
        )
    return save_to


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
    parser.add_argument(
        "--generate-limit", type=int, default=100, help="answerable questions per k for --generate"
    )
    parser.add_argument(
        "--generate-budget",
        type=float,
        default=None,
        help="stop generating after this many seconds (whole rounds of all k values)",
    )
    parser.add_argument("--generate-batch", type=int, default=8, help="questions per round")
    parser.add_argument(
        "--skip-retrieval", action="store_true", help="only --generate (no retrieval table)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for generation (1 avoids OpenMP threads waiting on each other on a "
        "shared machine; default: torch's choice)",
    )
    args = parser.parse_args(argv)

    from ragkit import Embedder, Index
    from ragkit.evaluation import EvalDataset, evaluate, read_squad
    from ragkit.retrieval import (
        BM25Retriever,
        DenseRetriever,
        HybridRetriever,
        MMRReranker,
        RerankedRetriever,
    )

    load_before = os.getloadavg()
    dataset = read_squad(DATA / "squad_small.json")
    answerable = [q for q in dataset.questions if not q.is_impossible][: args.limit]
    data = EvalDataset(name="squad_small+docs", format="squad", questions=answerable)
    # No query cache: every retriever embeds every question afresh, so latencies are comparable
    # (with the cache, whichever retriever ran second would get the query vectors for free).
    index = Index.open(build_index(args.max_files), embedder=Embedder(query_cache_size=0))
    counts = index.counts()
    retrievers: dict[str, Any] = {
        "dense": DenseRetriever(index, k=10),
        "bm25": BM25Retriever(index, k=10),
        "hybrid": HybridRetriever(index, k=10),
        "hybrid+mmr": RerankedRetriever(
            HybridRetriever(index, k=10), MMRReranker(index, k=10, diversity=0.3), candidates=20
        ),
    }
    manifest = json.loads((index.directory / "manifest.json").read_text())
    rows: dict[str, dict[str, float]] = {}
    if not args.skip_retrieval:
        for retriever in retrievers.values():  # load the model, FAISS and BM25 files; warm caches
            for query in ("warm up", "how do I open a file", "what is a decorator"):
                retriever.search(query, 10)
        for name, retriever in retrievers.items():
            wrapped, latencies = timed(retriever)
            report = evaluate(data, wrapped, k=10, unit="document")
            rows[name] = {
                **{m: report.retrieval[m] for m in ("recall@1", "recall@5", "recall@10", "mrr@10")},
                **latency_ms(latencies),
            }
        print(
            f"\nRetrieval on {len(answerable)} answerable questions; corpus {counts.documents} "
            f"documents / {counts.chunks} chunks; embedder {manifest['embedder']} "
            f"(backend {manifest.get('embed_backend')}), FAISS {manifest['index_type']}"
        )
        print(
            "| retriever | recall@1 | recall@5 | recall@10 | MRR@10 | p50 ms | mean ms | p95 ms |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, row in rows.items():
            print(
                f"| {name} | {row['recall@1']:.3f} | {row['recall@5']:.3f} "
                f"| {row['recall@10']:.3f} | {row['mrr@10']:.3f} | {row['p50_ms']:.1f} "
                f"| {row['mean_ms']:.1f} "
                f"| {row['p95_ms']:.1f} |"
            )
        best_single = max(rows["dense"]["recall@5"], rows["bm25"]["recall@5"])
        print(
            f"\nhybrid recall@5 - best single = {rows['hybrid']['recall@5'] - best_single:+.3f} "
            f"(target >= +0.02); hybrid p50 / dense p50 = "
            f"{rows['hybrid']['p50_ms'] / rows['dense']['p50_ms']:.2f} (target <= 2)"
        )

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"retrieval-{args.max_files}-{stamp}.json"
    generation: dict[str, dict[str, float]] = {}

    def save() -> None:
        out.write_text(
            json.dumps(
                {
                    "args": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "corpus": counts.model_dump(),
                    "embedder": manifest["embedder"],
                    "embed_backend": manifest.get("embed_backend"),
                    "index_type": manifest["index_type"],
                    "questions": len(answerable),
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                    "retrieval": rows,
                    "generation": generation,
                },
                indent=2,
            )
        )

    save()
    if args.generate:
        generation = generate(args, index, answerable, save_to=generation, save=save)
        print(
            f"\nEnd to end with SmolLM2 on {int(generation['k=1']['questions'])} answerable "
            "questions per k (hybrid retriever, grounded-QA prompt, max 48 new tokens)"
        )
        print("| k | questions | EM | F1 | groundedness | seconds |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for k, row in generation.items():
            print(
                f"| {k[2:]} | {row['questions']:.0f} | {row['exact_match']:.3f} "
                f"| {row['f1']:.3f} | {row['groundedness']:.3f} | {row['seconds']:.0f} |"
            )
    save()
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
