"""The store contract: what every index implementation offers, and what everything else types against.

Two stores implement it: the index directory (:class:`ragkit.index.Index`: FAISS + SQLite) and
PostgreSQL + pgvector (:class:`ragkit.stores.PgVectorIndex`). The retrievers, the ingest loops,
the server and the CLI hold a :class:`VectorStore` and never ask which one it is;
``tests/stores/test_store_contract.py`` runs one suite against both. The staging and validation
both share are written once, in :mod:`ragkit.index.staging`.

The protocol is structural (neither class inherits from it) and deliberately not
``runtime_checkable``: an ``isinstance`` check of a protocol reads every member, and reading
``splitter`` loads the embedder's tokenizer. :func:`ragkit.stores.open_store`'s return type is
what makes mypy check that both classes conform.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ragkit.chunking import RecursiveSplitter
from ragkit.embedding import Embedder, Vectors
from ragkit.index.manifest import IndexCounts, IndexManifest
from ragkit.schema import Chunk, Document, Hit

if TYPE_CHECKING:
    from typing_extensions import Self


class FileRecords(Protocol):
    """The store's record of indexed files, read by the ingest loop (incremental re-indexing)."""

    def file_hash(self, key: str) -> str | None:
        """The content hash recorded for file ``key`` by its last committed replacement."""
        ...

    def file_keys(self) -> list[str]:
        """Every recorded file key, sorted."""
        ...

    def documents_of_file(self, key: str) -> list[str]:
        """Ids of the committed documents that came from file ``key``, sorted."""
        ...

    def chunks_of_document(self, document_id: str) -> list[Chunk]:
        """The committed chunks of one document, in text order."""
        ...


class VectorStore(Protocol):
    """A persistent, searchable collection of documents, their chunks and the chunks' vectors.

    Writes are staged in memory and applied together by :meth:`commit`; searches see committed
    state only. Filters (``{"key": value}``, ``{"key": [values]}``, ``{"key": {"$ne": value}}``,
    ``$in`` / ``$nin``; keys ``document_id``, ``source``, ``chunk_id`` or a metadata key) select
    the same chunks in every store (:func:`ragkit.index.store.filter_sql` defines them).
    """

    @property
    def manifest(self) -> IndexManifest:
        """Embedder, dimension and chunking the store was built with."""
        ...

    @property
    def embedder(self) -> Embedder:
        """The model that embeds the store's chunks and its queries."""
        ...

    @property
    def directory(self) -> Path | str:
        """Where the store is, as configs and messages record it (never with a password)."""
        ...

    @property
    def store(self) -> FileRecords:
        """The indexed files' records (content hashes for incremental re-indexing)."""
        ...

    @property
    def splitter(self) -> RecursiveSplitter:
        """The chunker of the store's chunking settings and the embedder's tokenizer."""
        ...

    @property
    def has_pending_changes(self) -> bool:
        """Whether anything is staged that :meth:`commit` has not applied yet."""
        ...

    # -- writing (staged until commit) --------------------------------------------------------
    def add_documents(
        self,
        documents: Sequence[Document],
        file_key: str | None = None,
        chunks: Sequence[Chunk] | None = None,
        vectors: Vectors | None = None,
    ) -> list[Chunk]:
        """Stage documents, replacing any with the same id; chunks and vectors are computed
        when not given. Returns the staged chunks."""
        ...

    def replace_file(
        self,
        file_key: str,
        source: str,
        content_hash: str,
        documents: Sequence[Document],
        chunks: Sequence[Chunk] | None = None,
        vectors: Vectors | None = None,
    ) -> list[Chunk]:
        """Stage a file's new content: its previous documents go, these come in its place."""
        ...

    def delete_documents(self, document_ids: Iterable[str]) -> None:
        """Stage the removal of documents (and their chunks) by id."""
        ...

    def delete_file(self, file_key: str) -> None:
        """Stage the removal of a file's record and documents."""
        ...

    def commit(self) -> int:
        """Apply the staged changes atomically. The number returned is the store's own: the new
        generation of an index directory, the chunks written to PostgreSQL."""
        ...

    # -- reading ------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` chunks nearest to the embedded ``query`` (score: cosine; ranks from 0)."""
        ...

    def search_vector(
        self, vector: Vectors, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """The ``k`` chunks nearest to an already embedded query vector."""
        ...

    def search_lexical(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Lexical search (stemmed terms, stopwords removed); hits say ``retriever="bm25"``."""
        ...

    def vectors_of(self, chunk_ids: Sequence[str]) -> dict[str, Vectors]:
        """Stored embeddings of the chunks that exist (re-ranking without re-embedding)."""
        ...

    def document(self, document_id: str) -> Document | None: ...

    def chunk(self, chunk_id: str) -> Chunk | None: ...

    def counts(self) -> IndexCounts:
        """Committed files, documents and chunks, read now."""
        ...

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
