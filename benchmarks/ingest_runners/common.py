"""Shared plumbing for the per-system benchmark runners (stdlib only).

Each runner is a script started by ``benchmarks/ingest_bench.py`` in its own process, and often
in another virtual environment (the peers live in ``.bench-venv``, ragkit and the floor in
``.venv``), so this module must import nothing outside the standard library. The parent measures
wall time and peak RSS from outside; a runner only adds what it alone can see: phase times,
chunk counts and per-query latencies, written as one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Every runner is offline: nothing may be fetched from a model hub, and no telemetry may be sent
# (Haystack phones home by default). Set before any peer library is imported.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HAYSTACK_TELEMETRY_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

PROCESS_START = time.perf_counter()


class Phases:
    """Named wall-clock phases inside a runner, so the report can say where the time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def ingest_parser(description: str) -> argparse.ArgumentParser:
    """The command line every runner accepts, so the orchestrator can drive them uniformly."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="mode", required=True)
    ingest = sub.add_parser("ingest", help="build a persistent index of a folder")
    ingest.add_argument("--corpus", type=Path, required=True, help="folder of *.txt files")
    ingest.add_argument("--index-dir", type=Path, required=True)
    ingest.add_argument("--model", required=True, help="local sentence-transformers folder")
    ingest.add_argument("--chunk-size", type=int, default=1000)
    ingest.add_argument("--chunk-overlap", type=int, default=100)
    ingest.add_argument("--batch-size", type=int, default=64)
    ingest.add_argument("--chunks-file", type=Path, help="JSONL of chunk texts (the floor only)")
    ingest.add_argument("--result", type=Path, required=True)
    search = sub.add_parser("search", help="time single queries against a built index")
    search.add_argument("--index-dir", type=Path, required=True)
    search.add_argument("--model", required=True)
    search.add_argument("--queries", type=Path, required=True, help="JSON list of strings")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--warmup", type=int, default=3, help="untimed queries first")
    search.add_argument("--chunks-file", type=Path, help="JSONL of chunk texts (the floor only)")
    search.add_argument("--result", type=Path, required=True)
    return parser


def corpus_files(corpus: Path) -> list[Path]:
    """The corpus files in the order every system sees them (sorted relative paths)."""
    return sorted(p for p in corpus.rglob("*.txt") if p.is_file())


def load_queries(path: Path) -> list[str]:
    queries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise SystemExit(f"{path}: expected a JSON list of strings")
    return queries


def time_queries(
    run_query: Any, queries: list[str], warmup: int
) -> tuple[list[float], list[int], list[float]]:
    """Per-query latency in ms of ``run_query(q)`` and hit counts; warm-up queries not counted.

    Also returns the process CPU time of each query (all threads): on a shared machine it moves
    far less with other people's load than wall time does.

    Warm-up matters: the first call pays one-off costs (lazy imports, allocator growth, oneDNN
    kernel selection) that a long-running service would not pay per query.
    """
    for query in queries[: max(warmup, 0)]:
        run_query(query)
    latencies: list[float] = []
    cpu: list[float] = []
    hit_counts: list[int] = []
    for query in queries:
        cpu_started = time.process_time()
        started = time.perf_counter()
        hits = run_query(query)
        latencies.append((time.perf_counter() - started) * 1000.0)
        cpu.append((time.process_time() - cpu_started) * 1000.0)
        hit_counts.append(len(hits))
    return latencies, hit_counts, cpu


def audit_truncation(texts: list[str], model: str) -> dict[str, Any]:
    """How many chunks exceed the model's maximum sequence length (and are cut when embedded).

    Sentence-transformers silently truncates longer inputs, so a system whose chunks overflow
    embeds less text per chunk than one that keeps chunks within the limit: cheaper, but the
    tail of those chunks is never searchable. Run after timing; costs one tokenisation pass.
    """
    from transformers import AutoTokenizer

    config = Path(model) / "sentence_bert_config.json"
    limit = (
        int(json.loads(config.read_text()).get("max_seq_length", 512)) if config.is_file() else 512
    )
    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    total = sum(lengths) or 1
    return {
        "max_seq_length": limit,
        "chunks": len(lengths),
        "over_limit": sum(1 for n in lengths if n > limit),
        "tokens_cut_fraction": sum(max(0, n - limit) for n in lengths) / total,
        "mean_tokens": total / max(len(lengths), 1),
        "mean_chars": sum(len(t) for t in texts) / max(len(texts), 1),
    }


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Write the runner's findings; ``since_start`` lets the parent subtract interpreter start-up."""
    payload = dict(payload)
    payload.setdefault("since_start_s", time.perf_counter() - PROCESS_START)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
