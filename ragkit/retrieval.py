"""Retrievers: turn a query into ranked hits.

``search(query, k, filters) -> list[Hit]`` is the plain call; ``run(question, k, filters)``
is the pipeline-step form (typed output, see :mod:`ragkit.pipeline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from ragkit.index import Index
from ragkit.schema import Hit


class Retrieved(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hits: list[Hit]


@runtime_checkable
class Retriever(Protocol):
    def search(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]: ...


class DenseRetriever:
    """Embedding search over an index (exact inner product unless the index says otherwise)."""

    component_name = "dense_retriever"

    def __init__(self, index: Index | str | Path, k: int = 5) -> None:
        self.index = index if isinstance(index, Index) else Index.open(index)
        self.k = k

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        hits = self.index.search(query, k or self.k, filters)
        for hit in hits:
            hit.retriever = "dense"
        return hits

    def run(
        self, question: str, k: int | None = None, filters: dict[str, Any] | None = None
    ) -> Retrieved:
        return Retrieved(hits=self.search(question, k, filters))

    def to_config(self) -> dict[str, Any]:
        return {"index": str(self.index.directory), "k": self.k}
