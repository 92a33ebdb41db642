"""The data that flows through ragkit: documents, chunks and search hits.

Plain pydantic models with validation only. Offsets are character offsets into
``Document.text`` so that a citation can point at the exact span of the source.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

JSONValue = Any
"""Metadata values must be JSON-serialisable: they are stored as JSON in the index."""


class Document(BaseModel):
    """A unit of source text, e.g. a file or one page of a PDF."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1, description="Stable id; re-indexing the same source gives the same id."
    )
    text: str
    source: str = Field(description="Path or URI the text came from, as given when indexing.")
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class Chunk(BaseModel):
    """A span of a document that is embedded and retrieved on its own."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    document_id: str
    text: str
    start: int = Field(ge=0, description="Offset of the first character in the document text.")
    end: int = Field(ge=0, description="Offset one past the last character in the document text.")
    source: str = ""
    metadata: dict[str, JSONValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _span_matches_text(self) -> Chunk:
        if self.end < self.start:
            raise ValueError(f"chunk {self.id!r}: end {self.end} is before start {self.start}")
        if self.end - self.start != len(self.text):
            raise ValueError(
                f"chunk {self.id!r}: span [{self.start}, {self.end}) does not match text length {len(self.text)}"
            )
        return self


class Hit(BaseModel):
    """A retrieved chunk with its score (higher is better) and rank (0-based)."""

    model_config = ConfigDict(extra="forbid")

    chunk: Chunk
    score: float
    rank: int = 0
    retriever: str = "dense"

    @property
    def chunk_id(self) -> str:
        return self.chunk.id

    @property
    def text(self) -> str:
        return self.chunk.text

    @property
    def source(self) -> str:
        return self.chunk.source

    def to_json_dict(self) -> dict[str, Any]:
        """The flat shape printed by ``ragkit search --json``."""
        return {
            "chunk_id": self.chunk.id,
            "document_id": self.chunk.document_id,
            "source": self.chunk.source,
            "score": self.score,
            "text": self.chunk.text,
            "start": self.chunk.start,
            "end": self.chunk.end,
            "metadata": self.chunk.metadata,
        }
