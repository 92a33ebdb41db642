"""One place that turns command-line style choices into a RAG pipeline (ask, chat, serve, eval).

So that ``ragkit eval --generate`` measures exactly what ``ragkit ask`` runs, every entry point
builds its pipeline here: the generator's answering profile fills in whatever was not chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragkit.errors import RagkitError
from ragkit.rag.generate_step import DECODINGS
from ragkit.rag.pipeline import RAGPipeline
from ragkit.rag.profiles import answering_profile, chosen_adapter
from ragkit.rag.strategies import STRATEGIES

if TYPE_CHECKING:
    from ragkit.index.contract import VectorStore


def answering_pipeline(
    index: VectorStore | str | Path,
    *,
    generator: str | None = None,
    k: int = 4,
    retriever: Any = "hybrid",
    strategy: str = "plain",
    decoding: str | None = None,
    adapter: str | None = None,
    quantize: str | None = None,
    max_new_tokens: int | None = None,
    backend: str = "auto",
    base_url: str | None = None,
    api_key_env: str | None = None,
    abstain_below: float | None = None,
    abstain_bias: float | None = None,
    min_relevance: float | None = None,
) -> RAGPipeline:
    """A :class:`RAGPipeline` over ``index`` (a path, an open index, or a ready retriever).

    ``adapter``: None = the profile's, ``"none"`` = no adapter. ``max_new_tokens``: None = the
    profile's. ``quantize``: None = the profile's (see :mod:`ragkit.generation.quantization`).
    ``retriever``: a kind (``hybrid``/``dense``/``bm25``) or a retriever object.
    ``abstain_below``: None = the profile's answerability threshold; 0 = never veto.
    ``abstain_bias``: None = the profile's bias on the abstention path's first token.
    ``min_relevance``: None = the profile's relevance gate; -1 = no gate.
    """
    from ragkit.generation import make_generator
    from ragkit.retrieval import make_retriever

    if k <= 0:
        raise RagkitError(f"-k must be positive, got {k}")
    if strategy not in STRATEGIES:
        raise RagkitError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if decoding is not None and decoding not in DECODINGS:
        raise RagkitError(f"--decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    profile = answering_profile(generator, backend)
    model = make_generator(
        backend,
        generator,
        base_url=base_url,
        api_key_env=api_key_env,
        adapter=chosen_adapter(profile, adapter),
        quantize=quantize if quantize is not None else profile.quantize,
    )
    base = make_retriever(index, retriever, k=k) if isinstance(retriever, str) else retriever  # type: ignore[arg-type]
    return RAGPipeline(
        base,
        model,
        options={
            "max_new_tokens": profile.max_new_tokens if max_new_tokens is None else max_new_tokens
        },
        strategy=strategy,
        decoding=decoding,  # type: ignore[arg-type]
        abstain_below=abstain_below,
        abstain_bias=abstain_bias,
        min_relevance=min_relevance,
    )
