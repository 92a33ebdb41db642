"""What every store does the same way, written once: staging and validating writes, checking
queries, resolving the embedder a store was built with.

:class:`StagingStore` is the common base of :class:`ragkit.index.Index` and
:class:`ragkit.stores.PgVectorIndex`; each adds its own commit, searches and reads (the
:class:`~ragkit.index.contract.VectorStore` contract). Messages name the kind of store through
``noun`` ("index" for a directory, "store" for PostgreSQL), so both keep their wording.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ragkit.chunking import ChunkingSettings, RecursiveSplitter
from ragkit.embedding import Embedder, Vectors
from ragkit.errors import IndexFormatError, InvalidQueryError, RagkitError
from ragkit.index.manifest import IndexManifest, IndexType
from ragkit.schema import Chunk, Document, Hit

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass
class StagedChanges:
    """Changes staged since the last commit."""

    delete_documents: set[str] = field(default_factory=set)
    documents: list[tuple[Document, str | None]] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    delete_files: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.delete_documents or self.documents or self.files or self.delete_files)

    def document_ids(self) -> set[str]:
        """Ids of the staged documents (each replaces a committed one with its id)."""
        return {document.id for document, _ in self.documents}

    def stacked_vectors(self, dimension: int) -> np.ndarray:
        """The staged chunks' vectors as one ``(chunks, dimension)`` float32 array."""
        if not self.vectors:
            return np.zeros((0, dimension), np.float32)
        return np.concatenate(self.vectors)


def check_k(k: int) -> None:
    if k <= 0:
        raise InvalidQueryError(f"k must be positive, got {k}")


def check_query(query: object, k: int) -> None:
    """A text query must have words in it; ``k`` must be positive."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidQueryError("query is empty")
    check_k(k)


def _match_backend(manifest: IndexManifest, embedder: Embedder, noun: str, where: str) -> None:
    """Queries are embedded by the backend that embedded the corpus (``auto`` adopts it)."""
    if not embedder.backend_explicit and not embedder.is_loaded:
        embedder.backend = manifest.embed_backend
        return
    used = embedder.backend_name if embedder.is_loaded else embedder.backend
    if used != manifest.embed_backend:
        raise IndexFormatError(
            f"{noun} {where} was embedded with backend {manifest.embed_backend!r}; "
            f"refusing to embed with {used!r}, whose vectors would not match its own, for "
            f"queries or new files alike (leave the backend unset to use the {noun}'s)"
        )


def new_manifest(
    embedder: Embedder | str | None,
    index_type: IndexType,
    chunking: ChunkingSettings | None,
) -> tuple[Embedder, IndexManifest]:
    """The embedder (loaded: the dimension is read) and manifest of a store being created."""
    embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder)
    manifest = IndexManifest(
        embedder=embedder.name,
        embed_backend=embedder.backend_name,
        dimension=int(embedder.dimension),
        index_type=index_type,
        chunking=chunking or ChunkingSettings(),
    )
    return embedder, manifest


class StagingStore(ABC):
    """The staging half of a store: writes are validated and held in memory until ``commit``.

    Subclasses apply :attr:`_pending` in their ``commit`` and implement the searches and reads.
    Two hooks let a store do more when something is staged: :meth:`_begin_write` (the index
    directory takes its writer lock) and :meth:`_committed_documents_of_file` (the index
    directory resolves a file's documents when the file is staged; PostgreSQL when it commits).
    """

    noun: ClassVar[str] = "index"

    def __init__(self, manifest: IndexManifest, embedder: Embedder) -> None:
        self.manifest = manifest
        self.embedder = embedder
        self._pending = StagedChanges()
        self._splitter: RecursiveSplitter | None = None

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def _resolve_embedder(
        cls, manifest: IndexManifest, embedder: Embedder | str | None, where: str
    ) -> Embedder:
        """The embedder to open a store with: the recorded one by default; another model, or
        the same model on another backend or of another dimension, is refused."""
        noun = cls.noun
        if embedder is None:
            embedder = Embedder(manifest.embedder, backend=manifest.embed_backend)
        elif isinstance(embedder, str):
            embedder = Embedder(embedder, backend=manifest.embed_backend)
        if embedder.name != manifest.embedder:
            raise IndexFormatError(
                f"{noun} {where} was built with embedder {manifest.embedder!r}; "
                f"refusing to use {embedder.name!r}"
            )
        _match_backend(manifest, embedder, noun, where)
        if embedder.is_loaded and embedder.dimension != manifest.dimension:
            raise IndexFormatError(
                f"{noun} {where} has dimension {manifest.dimension}; "
                f"embedder {embedder.name!r} gives {embedder.dimension}"
            )
        return embedder

    @classmethod
    def _check_chunking(
        cls, manifest: IndexManifest, chunking: ChunkingSettings | None, where: str, other: str
    ) -> None:
        """An existing store is reopened for writing only with the chunking it was built with."""
        if chunking is not None and chunking != manifest.chunking:
            raise IndexFormatError(
                f"{cls.noun} {where} was built with chunking {manifest.chunking.model_dump()}; "
                f"got {chunking.model_dump()} (use the same settings or {other})"
            )

    # -- hooks --------------------------------------------------------------------------------
    def _begin_write(self) -> None:
        """Called before anything is staged (nothing to do by default)."""
        return None

    def _committed_documents_of_file(self, file_key: str) -> set[str]:
        """Documents to delete at commit because their file is replaced or deleted (none: the
        store finds them itself when it commits)."""
        return set()

    # -- chunking -----------------------------------------------------------------------------
    @property
    def splitter(self) -> RecursiveSplitter:
        if self._splitter is None:
            self._splitter = RecursiveSplitter(
                self.manifest.chunking,
                tokenizer=self.embedder.tokenizer,
                max_tokens=self.embedder.max_tokens,
            )
        return self._splitter

    # -- writing ------------------------------------------------------------------------------
    def add_documents(
        self,
        documents: Sequence[Document],
        file_key: str | None = None,
        chunks: Sequence[Chunk] | None = None,
        vectors: Vectors | None = None,
    ) -> list[Chunk]:
        """Stage documents (replacing any with the same id); chunks and vectors are computed if
        not given. Nothing is written before ``commit``."""
        self._begin_write()
        chunks, array = self._prepare(documents, chunks, vectors)
        self._stage(documents, file_key, chunks, array)
        return list(chunks)

    def _prepare(
        self,
        documents: Sequence[Document],
        chunks: Sequence[Chunk] | None,
        vectors: Vectors | None,
    ) -> tuple[Sequence[Chunk], np.ndarray]:
        """Chunk and embed what was not given, and check it all before anything is staged."""
        if chunks is None:
            chunks = self.splitter.split_many(documents)
        if vectors is None:
            vectors = self.embedder.encode([c.text for c in chunks])
        if len(vectors) != len(chunks):
            raise RagkitError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        array = np.asarray(vectors, dtype=np.float32).reshape(len(chunks), -1)
        if len(array) and array.shape[1] != self.manifest.dimension:
            raise IndexFormatError(
                f"vectors have dimension {array.shape[1]}, "
                f"{self.noun} has {self.manifest.dimension}"
            )
        ids = {d.id for d in documents}
        if len(ids) != len(documents):
            raise RagkitError("duplicate document ids in one add_documents call")
        staged = ids & self._pending.document_ids()
        if staged:
            raise RagkitError(f"documents already staged in this commit: {sorted(staged)[:3]}")
        return chunks, array

    def _stage(
        self,
        documents: Sequence[Document],
        file_key: str | None,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
    ) -> None:
        self._pending.documents.extend((d, file_key) for d in documents)
        self._pending.chunks.extend(chunks)
        self._pending.vectors.append(vectors)

    def replace_file(
        self,
        file_key: str,
        source: str,
        content_hash: str,
        documents: Sequence[Document],
        chunks: Sequence[Chunk] | None = None,
        vectors: Vectors | None = None,
    ) -> list[Chunk]:
        """Stage a file's new content: its previous documents are deleted, the new ones added
        (nothing is staged if the new content is refused)."""
        self._begin_write()
        chunks, array = self._prepare(documents, chunks, vectors)
        self._pending.delete_documents |= self._committed_documents_of_file(file_key)
        self._pending.files[file_key] = (source, content_hash)
        self._pending.delete_files.discard(file_key)
        self._stage(documents, file_key, chunks, array)
        return list(chunks)

    def delete_documents(self, document_ids: Iterable[str]) -> None:
        self._begin_write()
        self._pending.delete_documents |= set(document_ids)

    def delete_file(self, file_key: str) -> None:
        self._begin_write()
        self._pending.delete_documents |= self._committed_documents_of_file(file_key)
        self._pending.delete_files.add(file_key)
        self._pending.files.pop(file_key, None)

    @property
    def has_pending_changes(self) -> bool:
        return bool(self._pending)

    # -- reading ------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` chunks most similar to ``query``, optionally restricted by metadata ``filters``."""
        check_query(query, k)
        return self.search_vector(self.embedder.encode_query(query), k, filters)

    @abstractmethod
    def search_vector(
        self, vector: Vectors, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]: ...

    def _query_vector(self, vector: Vectors, k: int) -> np.ndarray:
        """A search vector as flat float32 of the store's dimension (``k`` checked too)."""
        check_k(k)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.manifest.dimension:
            raise InvalidQueryError(
                f"query vector has dimension {query.shape[0]}, "
                f"{self.noun} has {self.manifest.dimension}"
            )
        return query

    # -- lifetime -----------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
