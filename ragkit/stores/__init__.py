"""Alternative stores for an index, chosen by the target's form.

``ragkit index PATHS --index DIR`` keeps the file index (FAISS + SQLite, :class:`ragkit.index.Index`);
``--index postgresql://user@host/db?schema=name`` uses PostgreSQL + pgvector
(:class:`ragkit.stores.pgvector.PgVectorIndex`, extra ``ragkit[postgres]``). Both implement
:class:`ragkit.index.VectorStore`, the type retrievers, the ingest loop, the server and the CLI
hold, so they do not care which one they have. Nothing here imports psycopg until a PostgreSQL
store is actually opened.
"""

from __future__ import annotations

from pathlib import Path

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.errors import RagkitError
from ragkit.index import Index, IndexType, VectorStore
from ragkit.stores.pgvector import (
    PgVectorIndex,
    PgVectorMissingError,
    PostgresConnectionError,
    PostgresUnavailableError,
    is_postgres_url,
)

AnyIndex = VectorStore
"""The name this type had before :class:`~ragkit.index.VectorStore` (kept for existing imports)."""

__all__ = [
    "AnyIndex",
    "PgVectorIndex",
    "PgVectorMissingError",
    "PostgresConnectionError",
    "PostgresUnavailableError",
    "VectorStore",
    "is_postgres_url",
    "open_or_create_store",
    "open_store",
]


def open_store(target: str | Path, embedder: Embedder | str | None = None) -> VectorStore:
    """Open an existing index: a ``postgresql://`` / ``postgres://`` URL opens a PostgreSQL
    store, anything else an index directory. ``embedder`` defaults to the recorded one; another
    one is refused with :class:`~ragkit.errors.IndexFormatError` by either kind."""
    if is_postgres_url(target):
        return PgVectorIndex.open(str(target), embedder)
    return Index.open(target, embedder)


def open_or_create_store(
    target: str | Path,
    embedder: Embedder | str | None = None,
    chunking: ChunkingSettings | None = None,
    index_type: IndexType = "auto",
) -> VectorStore:
    """Open the index at ``target`` or create it (``ragkit index``). PostgreSQL stores always use
    an HNSW index, so ``index_type`` may only be ``auto`` or ``hnsw`` for them."""
    if is_postgres_url(target):
        if index_type not in ("auto", "hnsw"):
            raise RagkitError(
                f"a PostgreSQL store always uses pgvector's HNSW index; --index-type {index_type} "
                "applies to index directories only"
            )
        return PgVectorIndex.open_or_create(str(target), embedder, chunking)
    return Index.open_or_create(target, embedder, chunking, index_type)
