"""The index manifest: what an index directory holds and how it was built.

A small JSON file (never pickle) so that a human or another tool can tell what an index is,
and so that ragkit refuses to mix vectors from different embedders or dimensions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragkit.atomic import atomic_write_text
from ragkit.chunking import ChunkingSettings
from ragkit.errors import IndexFormatError

FORMAT_NAME = "ragkit-index"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"

# flat: exact; hnsw / ivf / ivfpq: approximate (ivfpq: compressed, memory-mapped, for corpora
# beyond RAM; docs/index-scale.md); auto: flat up to 50k vectors, HNSW above
IndexType = Literal["flat", "hnsw", "ivf", "ivfpq", "auto"]


def is_index_directory(directory: Path) -> bool:
    """Whether ``directory``'s manifest names it a ragkit index (of any format version): the
    question :meth:`IndexManifest.load` answers with an error, asked without one (the file
    walker leaves index folders out of what it indexes)."""
    try:
        raw = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT_NAME


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class IndexCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: int = 0
    documents: int = 0
    chunks: int = 0


class IndexManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["ragkit-index"] = "ragkit-index"
    format_version: int = FORMAT_VERSION
    embedder: str
    # how the corpus was embedded (version 1 indexes predate backends: fp32 torch); queries
    # must be embedded the same way
    embed_backend: str = "torch"
    dimension: int = Field(gt=0)
    index_type: IndexType = "auto"
    chunking: ChunkingSettings
    generation: int = 0
    counts: IndexCounts = Field(default_factory=IndexCounts)
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / MANIFEST_NAME, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> IndexManifest:
        path = directory / MANIFEST_NAME
        if not directory.exists():
            raise IndexFormatError(
                f"index not found: {directory} (build one with `ragkit index PATH --index {directory}`)"
            )
        if not directory.is_dir():
            raise IndexFormatError(f"index path is not a directory: {directory}")
        if not path.is_file():
            raise IndexFormatError(f"{directory} is not a ragkit index (no {MANIFEST_NAME})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise IndexFormatError(
                f"{directory} is not a ragkit index (manifest format is {raw.get('format') if isinstance(raw, dict) else raw!r})"
            )
        version = raw.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise IndexFormatError(
                f"{path} is invalid: format_version {version!r} is not a positive integer"
            )
        if version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{directory} uses index format version {version}; this ragkit reads version {FORMAT_VERSION} (upgrade ragkit)"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise IndexFormatError(f"{path} is invalid at {where}: {first['msg']}") from None
