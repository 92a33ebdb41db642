"""Setting up an evaluation the way ``ragkit eval`` does: index, retriever, optional reranker, RAG.

Kept out of the CLI so that the command is a thin call and the set-up is tested as library code.
The answering pipeline comes from :func:`ragkit.rag.answering_pipeline`, the builder ``ragkit
ask`` uses, with its own passage count (``generate_k``, default 4 as for ``ask``) separate from
the retrieval depth scored by the retrieval metrics.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from ragkit.errors import RagkitError
from ragkit.evaluation.datasets import load_dataset
from ragkit.evaluation.runner import EvalReport, Progress, evaluate

GENERATE_K = 4
"""Passages the generator reads during ``eval --generate``: ``ragkit ask``'s default."""


def run_evaluation(
    dataset: Path,
    *,
    dataset_format: Literal["squad", "beir", "jsonl"] | None = None,
    index: Path | None = None,
    retriever: str = "hybrid",
    rerank: str | None = None,
    k: int = 10,
    generate: bool = False,
    generate_k: int = GENERATE_K,
    generator: str | None = None,
    adapter: str | None = None,
    quantize: str | None = None,
    strategy: str = "plain",
    decoding: str | None = None,
    abstain_below: float | None = None,
    abstain_bias: float | None = None,
    min_relevance: float | None = None,
    backend: str = "transformers",
    max_new_tokens: int | None = None,
    embedder: str | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate retrieval on ``dataset`` (and answers with ``generate``) as ``ragkit eval`` does."""
    from ragkit.embedding import Embedder
    from ragkit.index import Index
    from ragkit.retrieval import CrossEncoderReranker, RerankedRetriever, make_retriever

    if k <= 0:
        raise RagkitError(f"-k must be positive, got {k}")
    if generate_k <= 0:
        raise RagkitError(f"--generate-k must be positive, got {generate_k}")
    if limit is not None and limit <= 0:
        raise RagkitError(f"--limit must be positive, got {limit}")
    data = load_dataset(dataset, dataset_format)
    if not data.questions:
        raise RagkitError(f"{dataset} holds no questions")
    with tempfile.TemporaryDirectory(prefix="ragkit-eval-") as scratch:
        if index is None:
            if not data.corpus:
                raise RagkitError(f"{data.format} datasets have no corpus: pass --index")
            opened = Index.create(Path(scratch) / "index", Embedder(embedder))
            opened.add_documents(data.corpus)
            opened.commit()
            unit = "document"
        else:
            opened = Index.open(index)
            unit = "chunk" if data.format == "squad" else "document"
        with opened:
            base: Any = make_retriever(opened, retriever, k=k)  # type: ignore[arg-type]
            answering: Any = make_retriever(opened, retriever, k=generate_k)  # type: ignore[arg-type]
            if rerank:
                reranker = CrossEncoderReranker(rerank, k=k)
                base = RerankedRetriever(base, reranker, candidates=max(20, 2 * k))
                answering = RerankedRetriever(
                    answering, CrossEncoderReranker(rerank, k=generate_k), candidates=max(20, 2 * k)
                )
            rag = None
            if generate:
                from ragkit.rag import answering_pipeline

                rag = answering_pipeline(
                    opened,
                    generator=generator,
                    k=generate_k,
                    retriever=answering,
                    strategy=strategy,
                    decoding=decoding,
                    abstain_below=abstain_below,
                    abstain_bias=abstain_bias,
                    min_relevance=min_relevance,
                    adapter=adapter,
                    quantize=quantize,
                    max_new_tokens=max_new_tokens,
                    backend=backend,
                )
            return evaluate(
                data,
                base,
                k=k,
                unit=unit,  # type: ignore[arg-type]
                index=opened,
                rag=rag,
                limit=limit,
                progress=progress,
                batch_size=batch_size,
            )
