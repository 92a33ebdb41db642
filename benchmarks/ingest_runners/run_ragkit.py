"""ragkit's query path through its Python API (``Index.open`` then ``index.search``).

Ingestion is not here: the orchestrator times the ``ragkit index`` CLI itself, as a user runs
it, so the measured process is exactly the shipped command. Search goes through the Python API
because a per-query CLI call would measure interpreter and model start-up, not search.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import Phases, ingest_parser, load_queries, time_queries, write_result


def open_index(directory: str) -> Any:
    """``ragkit.Index`` when the package exports it, else the module that defines it."""
    try:
        from ragkit import Index
    except ImportError:
        from ragkit.index import Index
    return Index.open(directory)


def search(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        import ragkit  # noqa: F401  (the import cost is part of what a user pays)
    with phases("open"):
        index = open_index(str(args.index_dir))
        # Model loading is lazy in ragkit; load it here so the first timed query does not pay it.
        embedder = getattr(index, "embedder", None)
        if embedder is not None and hasattr(embedder, "warm_up"):
            embedder.warm_up()
    k = args.k

    def run_query(query: str) -> list[Any]:
        return list(index.search(query, k=k))

    queries = load_queries(args.queries)
    latencies, hits, cpu_ms = time_queries(run_query, queries, args.warmup)
    sample = run_query(queries[0]) if queries else []
    top = sample[0] if sample else None
    write_result(
        args.result,
        {
            "system": "ragkit",
            "latencies_ms": latencies,
            "cpu_ms": cpu_ms,
            "hits": hits,
            "phases": phases.seconds,
            "example": {
                "query": queries[0] if queries else None,
                "score": float(top.score) if top is not None else None,
                "source": getattr(top.chunk, "source", None) if top is not None else None,
            },
        },
    )


def main() -> None:
    args = ingest_parser(__doc__ or "ragkit").parse_args()
    if args.mode != "search":
        raise SystemExit(
            "ragkit ingestion is timed through its CLI (`ragkit index`), not this runner"
        )
    search(args)


if __name__ == "__main__":
    main()
