"""The floor: the least work any system must do to index the same chunks with the same model.

Plain ``SentenceTransformer.encode`` (batch 64, L2-normalised) of ragkit's own chunks, then
``faiss.IndexFlatIP.add``. The chunks are prepared before timing (see ``ingest_bench.py``), so
reading files and splitting are *not* in the floor: that is precisely the overhead a real system
may spend within its budget. The raw FAISS index is written at the end (a few milliseconds)
so the search benchmark can reuse it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import Phases, audit_truncation, ingest_parser, load_queries, time_queries, write_result


def read_chunks(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def ingest(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        import faiss
        from sentence_transformers import SentenceTransformer
    with phases("model_load"):
        model = SentenceTransformer(args.model)
    with phases("read_chunks"):
        texts = read_chunks(args.chunks_file)
    with phases("embed"):
        vectors = model.encode(
            texts,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    with phases("index_add"):
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
    with phases("persist"):
        out: Path = args.index_dir
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(out / "floor.faiss"))
    write_result(
        args.result,
        {
            "system": "floor",
            "chunks": int(index.ntotal),
            "phases": phases.seconds,
        },
    )


def search(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        import faiss
        from sentence_transformers import SentenceTransformer
    with phases("open"):
        model = SentenceTransformer(args.model)
        index = faiss.read_index(str(args.index_dir / "floor.faiss"))
        texts = read_chunks(args.chunks_file)
    k = args.k

    def run_query(query: str) -> list[str]:
        vector = model.encode(
            [query], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        _, ids = index.search(vector, k)
        return [texts[i] for i in ids[0] if i >= 0]

    queries = load_queries(args.queries)
    latencies, hits, cpu_ms = time_queries(run_query, queries, args.warmup)
    with phases("audit"):
        truncation = audit_truncation(texts, args.model)
    write_result(
        args.result,
        {
            "system": "floor",
            "latencies_ms": latencies,
            "cpu_ms": cpu_ms,
            "hits": hits,
            "phases": phases.seconds,
            "truncation": truncation,
        },
    )


def main() -> None:
    args = ingest_parser(__doc__ or "floor").parse_args()
    (ingest if args.mode == "ingest" else search)(args)


if __name__ == "__main__":
    main()
