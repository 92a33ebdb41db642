"""Declining questions the index does not cover: a gate on retrieval similarity.

Why a gate before the generator: a question about something no indexed text mentions ("Who is
the CEO of Microsoft?" over a few Wikipedia articles) still retrieves k passages, and a small
extractive reader then quotes the most plausible-looking span of them. The answerability probe
reads the generator's hidden state and misses many such cases; the retriever's own embedder
measures them directly: when no retrieved passage is close to the question, there is nothing to
quote. The gate hands the prompt builder no passages, and grounded decoding answers that with
the abstention (its existing "nothing to quote" path), so a gated question is declined with a
note saying why, and a question that passes is answered exactly as without the gate.

The threshold is a property of the embedder: cosine similarities of MiniLM are not those of
another model. The answering profile sets it for the index default (benchmarks/README.md,
"Off-topic questions: a relevance gate").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ragkit.pipeline.component import LoadContext, component
from ragkit.schema import Hit


def best_similarity(index: Any, question: str, hits: Sequence[Hit]) -> float:
    """The highest cosine similarity between ``question`` and the ``hits`` (-1 when none).

    The passages' vectors are the ones the index stored (no re-embedding; a chunk without one
    is embedded), and the question's comes from the embedder's query cache, which retrieval
    has just filled: the gate costs one lookup. Vectors are unit length, so the dot product is
    the cosine.
    """
    if not hits:
        return -1.0
    embedder = index.embedder
    stored = index.vectors_of([h.chunk_id for h in hits])
    missing = [h for h in hits if h.chunk_id not in stored]
    rows = [np.asarray(v, dtype=np.float32).reshape(-1) for v in stored.values()]
    if missing:
        rows.extend(np.asarray(embedder.encode([h.text for h in missing]), dtype=np.float32))
    query = np.asarray(embedder.encode_query(question), dtype=np.float32).reshape(-1)
    return float((np.stack(rows) @ query).max())


class GatedHits(BaseModel):
    hits: list[Hit]
    relevance: float | None
    """The best cosine; None when it was not measured (no index to measure with)."""
    relevance_notes: list[str] = Field(default_factory=list)


@component(trace_outputs={"relevance_notes": "notes"})
class RelevanceGate:
    """Pipeline step: the hits pass when one of them is close enough to the question.

    ``min_similarity``: the lowest best-cosine that passes. ``index``: the retriever's index
    (its embedder and stored vectors; re-attached at load time).
    """

    component_name = "relevance_gate"

    def __init__(self, min_similarity: float, index: Any = None) -> None:
        if not -1.0 <= min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be a cosine in [-1, 1], got {min_similarity}")
        self.min_similarity = float(min_similarity)
        self.index = index

    def run(self, question: str, hits: list[Hit]) -> GatedHits:
        if self.index is None or not hits:  # nothing to measure with, or nothing retrieved
            return GatedHits(hits=hits, relevance=None)
        best = best_similarity(self.index, question, hits)
        if best >= self.min_similarity:
            return GatedHits(hits=hits, relevance=best)
        note = (
            f"declined: no retrieved passage is close to the question (best similarity "
            f"{best:.2f}, below {self.min_similarity:.2f}); the index does not seem to cover it"
        )
        return GatedHits(hits=[], relevance=best, relevance_notes=[note])

    def to_config(self) -> dict[str, Any]:
        return {"min_similarity": self.min_similarity}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> RelevanceGate:
        """The index is the retriever's: bound when the load opens it."""
        gate = cls(float(config["min_similarity"]))
        ctx = context if isinstance(context, LoadContext) else LoadContext(context)
        ctx.bind("index", gate._attach_index)
        return gate

    def _attach_index(self, index: Any) -> None:
        if self.index is None:
            self.index = index
