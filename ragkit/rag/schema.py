"""The data of a RAG answer: numbered passages, citations and the answer itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragkit.pipeline.trace import Trace
from ragkit.schema import Hit


class Passage(BaseModel):
    """A retrieved chunk as shown to the model, numbered from 1."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1)
    chunk_id: str
    source: str
    start: int
    end: int
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_hit(cls, n: int, hit: Hit) -> Passage:
        c = hit.chunk
        return cls(
            n=n,
            chunk_id=c.id,
            source=c.source,
            start=c.start,
            end=c.end,
            text=c.text,
            score=hit.score,
            metadata=c.metadata,
        )


class Citation(BaseModel):
    """An ``[n]`` marker of the answer mapped back to the exact span of its source."""

    model_config = ConfigDict(extra="forbid")

    n: int
    chunk_id: str
    source: str
    start: int
    end: int
    text: str
    score: float
    inferred: bool = Field(
        False,
        description="True when the model cited nothing and ragkit attributed the answer by word overlap.",
    )

    @classmethod
    def from_passage(cls, passage: Passage, inferred: bool = False) -> Citation:
        return cls(**passage.model_dump(exclude={"metadata"}), inferred=inferred)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    invalid_markers: list[int] = Field(
        default_factory=list, description="[n] markers that pointed at no passage (dropped)."
    )
    passages: list[Passage] = Field(default_factory=list)
    trace: Trace | None = None

    def to_json_dict(self, include_trace: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "answer": self.answer,
            "citations": [c.model_dump() for c in self.citations],
            "invalid_markers": self.invalid_markers,
        }
        if include_trace:
            data["trace"] = self.trace.model_dump(mode="json") if self.trace else None
        return data
