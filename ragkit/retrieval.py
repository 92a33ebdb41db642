"""Retrievers: turn a query into ranked hits — dense, BM25, and hybrid fusions of the two.

``search(query, k, filters) -> list[Hit]`` is the plain call; ``run(question, k, filters)``
is the pipeline-step form (typed output, see :mod:`ragkit.pipeline`). Metadata filters mean
the same thing for every retriever: they are resolved by the index's store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from ragkit.errors import RagkitError
from ragkit.index.contract import VectorStore
from ragkit.pipeline.component import LoadContext, component, component_spec
from ragkit.schema import Hit
from ragkit.stores import open_store

RRF_K = 60
RetrieverKind = Literal["dense", "bm25", "hybrid"]


class Retrieved(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hits: list[Hit]


@runtime_checkable
class Retriever(Protocol):
    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]: ...


def _open(index: VectorStore | str | Path) -> VectorStore:
    """An open index: a directory or a ``postgresql://`` URL is opened, an index passes through."""
    return open_store(index) if isinstance(index, str | Path) else index


def _context(context: Any) -> LoadContext:
    return context if isinstance(context, LoadContext) else LoadContext(context)


def index_from_config(location: Any, context: LoadContext) -> VectorStore:
    """The index a saved step names: the context's open index when it is that one, else opened.

    The first index opened is offered to later steps as ``index`` and its embedder's ``encode``
    as ``embed`` (a few-shot selector embeds with it).
    """
    if not isinstance(location, str) or not location:
        raise RagkitError(f"a saved retriever needs its index location, got {location!r}")
    shared = context.get("index")
    if shared is not None and str(getattr(shared, "directory", "")) == location:
        return shared
    index = _open(location)
    context.provide("index", index)
    embedder = getattr(index, "embedder", None)
    if embedder is not None:
        context.provide("embed", embedder.encode)
    return index


class _IndexRetriever:
    component_name = "retriever"
    kind: str = "dense"

    def __init__(self, index: VectorStore | str | Path, k: int = 5) -> None:
        if k <= 0:
            raise RagkitError(f"k must be positive, got {k}")
        self.index = _open(index)
        self.k = k

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        raise NotImplementedError

    def run(
        self, question: str, k: int | None = None, filters: dict[str, Any] | None = None
    ) -> Retrieved:
        return Retrieved(hits=self.search(question, k, filters))

    def to_config(self) -> dict[str, Any]:
        return {"index": str(self.index.directory), "k": self.k}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> Any:
        params = dict(config)
        ctx = _context(context)
        return cls(index_from_config(params.pop("index", None), ctx), **params)


@component
class DenseRetriever(_IndexRetriever):
    """Embedding search over an index (exact inner product unless the index says otherwise)."""

    component_name = "dense_retriever"

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        return self.index.search(query, k or self.k, filters)


@component
class BM25Retriever(_IndexRetriever):
    """Lexical BM25 search (stemmed, stopwords removed) over the same index."""

    component_name = "bm25_retriever"

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        return self.index.search_lexical(query, k or self.k, filters)


def _fuse(
    hit_lists: Sequence[Sequence[Hit]],
    k: int,
    weights: Sequence[float] | None,
    contributions: Callable[[Sequence[Hit]], list[float]],
) -> list[Hit]:
    """Sum ``weight × contribution`` per chunk over the lists; ties keep first-appearance order."""
    weights = list(weights) if weights is not None else [1.0] * len(hit_lists)
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for weight, hits in zip(weights, hit_lists, strict=True):
        for hit, value in zip(hits, contributions(hits), strict=True):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + weight * value
            first.setdefault(hit.chunk.id, hit)
    ordered = sorted(first, key=lambda cid: -scores[cid])[:k]
    return [
        first[cid].model_copy(update={"score": scores[cid], "rank": i, "retriever": "hybrid"})
        for i, cid in enumerate(ordered)
    ]


def reciprocal_rank_fusion(
    hit_lists: Sequence[Sequence[Hit]],
    k: int,
    rrf_k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[Hit]:
    """Fuse rankings by ``sum(w / (rrf_k + rank))``; ties keep the order of first appearance."""
    return _fuse(
        hit_lists, k, weights, lambda hits: [1 / (rrf_k + r + 1) for r in range(len(hits))]
    )


def _min_max(hits: Sequence[Hit]) -> list[float]:
    values = [h.score for h in hits]
    if not values:
        return []
    low, high = min(values), max(values)
    return [1.0 if high == low else (v - low) / (high - low) for v in values]


def weighted_score_fusion(
    hit_lists: Sequence[Sequence[Hit]], k: int, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Fuse by a weighted sum of min-max normalised scores (a hit absent from a list scores 0 there)."""
    return _fuse(hit_lists, k, weights, _min_max)


@component
class HybridRetriever(_IndexRetriever):
    """Dense + BM25, each asked for ``candidates`` hits, fused by RRF (default) or weighted scores."""

    component_name = "hybrid_retriever"

    def __init__(
        self,
        index: VectorStore | str | Path,
        k: int = 5,
        mode: Literal["rrf", "weighted"] = "rrf",
        rrf_k: int = RRF_K,
        weights: Sequence[float] = (1.0, 1.0),
        candidates: int | None = None,
    ) -> None:
        super().__init__(index, k)
        if mode not in ("rrf", "weighted"):
            raise RagkitError(f"hybrid mode must be 'rrf' or 'weighted', got {mode!r}")
        self.mode = mode
        self.rrf_k = rrf_k
        self.weights = tuple(weights)
        self.candidates = candidates

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        k = k or self.k
        pool = max(self.candidates or 0, 4 * k)
        dense = self.index.search(query, pool, filters)
        lexical = self.index.search_lexical(query, pool, filters)
        if self.mode == "rrf":
            return reciprocal_rank_fusion([dense, lexical], k, self.rrf_k, self.weights)
        return weighted_score_fusion([dense, lexical], k, self.weights)

    def to_config(self) -> dict[str, Any]:
        return {
            **super().to_config(),
            "mode": self.mode,
            "rrf_k": self.rrf_k,
            "weights": list(self.weights),
            "candidates": self.candidates,
        }


@component
class RankFusion:
    """Pipeline step merging ``hits_list`` (e.g. from :class:`~ragkit.pipeline.Parallel`) by RRF."""

    component_name = "rank_fusion"

    def __init__(self, k: int = 5, rrf_k: int = RRF_K) -> None:
        self.k = k
        self.rrf_k = rrf_k

    def run(self, hits_list: list[list[Hit]]) -> Retrieved:
        return Retrieved(hits=reciprocal_rank_fusion(hits_list, self.k, self.rrf_k))

    def to_config(self) -> dict[str, Any]:
        return {"k": self.k, "rrf_k": self.rrf_k}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> RankFusion:
        return cls(**config)


def maximal_marginal_relevance(
    query: np.ndarray, candidates: np.ndarray, k: int, diversity: float = 0.3
) -> list[int]:
    """Indices of ``k`` candidates balancing similarity to the query against redundancy.

    ``diversity`` 0 is plain similarity order; 1 ignores the query after the first pick.
    Vectors are unit length, so dot products are cosines.
    """
    if len(candidates) == 0:
        return []
    relevance = candidates @ query
    chosen: list[int] = [int(np.argmax(relevance))]
    similarity = candidates @ candidates.T
    while len(chosen) < min(k, len(candidates)):
        redundancy = similarity[:, chosen].max(axis=1)
        score = (1 - diversity) * relevance - diversity * redundancy
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return chosen


@component
class MMRReranker:
    """Diversify hits with MMR using the stored chunk vectors (no model call beyond the query)."""

    component_name = "mmr"

    def __init__(self, index: VectorStore | str | Path, k: int = 5, diversity: float = 0.3) -> None:
        if not 0.0 <= diversity <= 1.0:
            raise RagkitError(f"diversity must be in [0, 1], got {diversity}")
        self.index = _open(index)
        self.k = k
        self.diversity = diversity

    def rerank(self, query: str, hits: Sequence[Hit], k: int | None = None) -> list[Hit]:
        if not hits:
            return []
        vectors = self.index.vectors_of([h.chunk.id for h in hits])
        usable = [h for h in hits if h.chunk.id in vectors]
        matrix = np.stack([vectors[h.chunk.id] for h in usable])
        query_vector = self.index.embedder.encode_query(query)[0]
        order = maximal_marginal_relevance(query_vector, matrix, k or self.k, self.diversity)
        return [usable[i].model_copy(update={"rank": rank}) for rank, i in enumerate(order)]

    def run(self, question: str, hits: list[Hit]) -> Retrieved:
        return Retrieved(hits=self.rerank(question, hits))

    def to_config(self) -> dict[str, Any]:
        return {"index": str(self.index.directory), "k": self.k, "diversity": self.diversity}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> MMRReranker:
        params = dict(config)
        return cls(index_from_config(params.pop("index", None), _context(context)), **params)


def make_retriever(
    index: VectorStore | str | Path, kind: RetrieverKind = "hybrid", k: int = 5
) -> _IndexRetriever:
    """The retriever named on the command line (``--retriever dense|bm25|hybrid``)."""
    classes: dict[str, type[_IndexRetriever]] = {
        "dense": DenseRetriever,
        "bm25": BM25Retriever,
        "hybrid": HybridRetriever,
    }
    if kind not in classes:
        raise RagkitError(f"unknown retriever {kind!r} (use dense, bm25 or hybrid)")
    return classes[kind](index, k=k)


@component
class CrossEncoderReranker:
    """Re-score hits with a sentence-transformers ``CrossEncoder`` (any HF id or local path).

    No cross-encoder ships offline with ragkit, so this is opt-in: pass a model you have.
    """

    component_name = "cross_encoder"

    def __init__(
        self, model: str, k: int = 5, batch_size: int = 32, device: str | None = None
    ) -> None:
        self.model_name = model
        self.k = k
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            name = self.model_name
            if name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
                # a path, not a hub id: say so instead of the hub's repo-id complaint
                raise RagkitError(f"cross-encoder path not found: {name}")
            from sentence_transformers import CrossEncoder

            from ragkit.embedding import auto_device

            try:
                self._model = CrossEncoder(self.model_name, device=self.device or auto_device())
            except (OSError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RagkitError(
                    f"cannot load cross-encoder {self.model_name!r}: {first}"
                ) from None
        return self._model

    def rerank(self, query: str, hits: Sequence[Hit], k: int | None = None) -> list[Hit]:
        if not hits:
            return []
        scores = self.model.predict(
            [(query, h.chunk.text) for h in hits],
            batch_size=self.batch_size,
            show_progress_bar=False,
        )
        order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))[: k or self.k]
        return [
            hits[i].model_copy(update={"score": float(scores[i]), "rank": rank})
            for rank, i in enumerate(order)
        ]

    def run(self, question: str, hits: list[Hit]) -> Retrieved:
        return Retrieved(hits=self.rerank(question, hits))

    def to_config(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "k": self.k,
            "batch_size": self.batch_size,
            "device": self.device,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> CrossEncoderReranker:
        return cls(**config)


@component
class RerankedRetriever:
    """A retriever whose ``candidates`` results are re-ordered by a reranker (cross-encoder, MMR).

    Saved as ``reranked_retriever`` with both parts nested; an instance's ``component_name`` is
    the descriptive ``<base>+<reranker>`` that evaluation reports name the retriever by.
    """

    component_name = "reranked_retriever"

    def __init__(self, base: Any, reranker: Any, candidates: int = 20) -> None:
        self.base = base
        self.reranker = reranker
        self.candidates = candidates
        self.index = getattr(base, "index", None)
        self.component_name = f"{getattr(base, 'component_name', 'retriever')}+{getattr(reranker, 'component_name', 'rerank')}"

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        wanted: int = k or int(getattr(self.base, "k", 5))
        hits = self.base.search(query, max(self.candidates, wanted), filters)
        return list(self.reranker.rerank(query, hits, k))

    def run(
        self, question: str, k: int | None = None, filters: dict[str, Any] | None = None
    ) -> Retrieved:
        return Retrieved(hits=self.search(question, k, filters))

    def to_config(self) -> dict[str, Any]:
        return {
            "base": component_spec(self.base),
            "reranker": component_spec(self.reranker),
            "candidates": self.candidates,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> RerankedRetriever:
        params = dict(config)
        ctx = _context(context)
        base = ctx.build(params.pop("base", None), "reranked_retriever.base")
        reranker = ctx.build(params.pop("reranker", None), "reranked_retriever.reranker")
        return cls(base, reranker, **params)
