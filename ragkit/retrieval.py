"""Retrievers: pipeline steps that turn a query into ranked hits.

A retriever is any object with ``run(query, k, filters) -> list[Hit]``; the dense one reads a
persistent :class:`~ragkit.index.Index`. Lexical and hybrid retrievers plug in beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ragkit.index import Index
from ragkit.schema import Hit


@runtime_checkable
class Retriever(Protocol):
    def run(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]: ...


class DenseRetriever:
    """Embedding search over an index (exact inner product unless the index says otherwise)."""

    def __init__(self, index: Index | str | Path, k: int = 5) -> None:
        self.index = index if isinstance(index, Index) else Index.open(index)
        self.k = k

    def run(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        hits = self.index.search(query, k or self.k, filters)
        for hit in hits:
            hit.retriever = "dense"
        return hits

    search = run
