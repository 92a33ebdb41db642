"""The data of a RAG answer: numbered passages, citations and the answer itself."""

from __future__ import annotations

from typing import Annotated, Any

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


class Grounding(BaseModel):
    """Where a grounded answer came from: a character span of passage ``passage``, or abstention.

    ``start``/``end`` index the passage's text (as shown to the model).
    """

    model_config = ConfigDict(extra="forbid")

    passage: int | None = None
    start: int = 0
    end: int = 0
    abstained: bool = False
    reason: str | None = None
    answerability: float | None = None
    """The generator's probe estimate that the passages hold the answer (None: no probe)."""


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
        description="True when the model cited nothing and ragkit attributed the answer to a "
        "passage that contains it.",
    )
    quote: str | None = Field(
        None, description="The exact text of the passage the answer rests on (grounded decoding)."
    )
    quote_start: int | None = Field(
        None,
        description="Character offset of ``quote`` in the source: source[quote_start:quote_end] == quote.",
    )
    quote_end: int | None = None

    @classmethod
    def from_passage(cls, passage: Passage, inferred: bool = False) -> Citation:
        return cls(**passage.model_dump(exclude={"metadata"}), inferred=inferred)

    @classmethod
    def quoting(cls, passage: Passage, start: int, end: int) -> Citation:
        """A citation of the characters ``start:end`` of ``passage``'s text."""
        return cls(
            **passage.model_dump(exclude={"metadata"}),
            quote=passage.text[start:end],
            quote_start=passage.start + start,
            quote_end=passage.start + end,
        )


class Usage(BaseModel):
    """What the generation of an answer cost, in tokens (summed over a strategy's model calls
    only when the strategy reports them; None fields when it does not)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Abstained = Annotated[
    bool,
    Field(description="True when the assistant declined: the passages do not hold the answer."),
]
"""An answer's abstention flag, as :class:`Answer` and the server's responses carry it."""
Answerability = Annotated[
    float | None,
    Field(
        description="The generator's estimate that the passages hold the answer (grounded "
        "decoding with an adapter that ships an answerability probe; otherwise null)."
    ),
]
"""The answerability estimate, as :class:`Answer` and the server's responses carry it."""


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    invalid_markers: list[int] = Field(
        default_factory=list, description="[n] markers that pointed at no passage (dropped)."
    )
    passages: list[Passage] = Field(default_factory=list)
    abstained: Abstained = False
    usage: Usage | None = Field(
        None,
        description="Tokens read and written by the generation step (None for strategies "
        "that make several calls).",
    )
    answerability: Answerability = None
    trace: Trace | None = None

    def to_json_dict(self, include_trace: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "answer": self.answer,
            "citations": [c.model_dump() for c in self.citations],
            "invalid_markers": self.invalid_markers,
            "abstained": self.abstained,
        }
        if self.answerability is not None:
            data["answerability"] = round(self.answerability, 4)
        if include_trace:
            data["trace"] = self.trace.model_dump(mode="json") if self.trace else None
        return data
