"""An index directory: manifest + SQLite store + FAISS vectors, kept consistent on disk.

Layout of ``DIR``::

    manifest.json          format version, embedder, dimension, chunking, counts (JSON)
    store.sqlite           files, documents, chunks and their vectors (SQLite, WAL)
    vectors-<G>.faiss      FAISS index for generation G (the one the store names)
    bm25-<G>/              BM25 (bm25s) index for generation G: .npy arrays + JSON vocabulary
    write.lock             held by the single writer

Changes are staged in memory and applied by :meth:`Index.commit`: the FAISS file of the next
generation is written and renamed first, then one SQLite transaction applies the rows and the
new generation. A kill at any moment therefore leaves the previous generation loadable, and a
reader never sees a half-written index. Readers notice a newer generation on their next search
and reload.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder, Vectors
from ragkit.errors import IndexFormatError, RagkitError
from ragkit.index.lexical import LexicalIndex
from ragkit.index.manifest import MANIFEST_NAME, IndexCounts, IndexManifest, IndexType, utc_now
from ragkit.index.staging import StagedChanges, StagingStore, check_query, new_manifest
from ragkit.index.store import STORE_NAME, ChunkStore
from ragkit.index.vectors import VectorIndex
from ragkit.schema import Chunk, Document, Hit

LOCK_NAME = "write.lock"
KEEP_GENERATIONS = 3


def vector_file(directory: Path, generation: int) -> Path:
    return directory / f"vectors-{generation}.faiss"


def lexical_dir(directory: Path, generation: int) -> Path:
    return directory / f"bm25-{generation}"


class Index(StagingStore):
    """A persistent, searchable collection of chunks. Open with :meth:`open` or :meth:`create`.

    Implements :class:`~ragkit.index.contract.VectorStore`; staging and validation are
    :class:`~ragkit.index.staging.StagingStore`'s.
    """

    def __init__(
        self, directory: Path, manifest: IndexManifest, embedder: Embedder, store: ChunkStore
    ) -> None:
        super().__init__(manifest, embedder)
        self.directory = directory
        self.store = store
        # (generation, loaded index): one tuple, replaced whole, so a search thread never pairs
        # one generation's number with another generation's index while another thread reloads
        self._vectors_at: tuple[int, VectorIndex] | None = None
        self._lexical_at: tuple[int, LexicalIndex] | None = None
        self._lock: FileLock | None = None

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: str | Path,
        embedder: Embedder | str | None = None,
        chunking: ChunkingSettings | None = None,
        index_type: IndexType = "auto",
    ) -> Index:
        """Create a new, empty index directory (refuses to overwrite an existing index).

        A directory left by a create that was killed before writing its manifest (only the empty
        store and generation-0 files) is cleared and created again; any other content is refused.
        """
        directory = Path(directory)
        if (directory / MANIFEST_NAME).exists():
            raise IndexFormatError(f"an index already exists at {directory}")
        if directory.exists() and not directory.is_dir():
            raise IndexFormatError(f"index path exists and is not a directory: {directory}")
        if directory.exists() and any(directory.iterdir()):
            if not _interrupted_create(directory):
                raise IndexFormatError(
                    f"refusing to create an index in non-empty directory {directory}"
                )
            _clear_interrupted_create(directory)
        embedder, manifest = new_manifest(embedder, index_type, chunking)
        directory.mkdir(parents=True, exist_ok=True)
        store = ChunkStore(directory / STORE_NAME, create=True)
        store.begin()
        store.set_meta("generation", "0")
        store.set_meta("next_vid", "1")
        store.commit()
        VectorIndex(manifest.dimension, index_type).save(vector_file(directory, 0))
        LexicalIndex.build(np.zeros(0, np.int64), []).save(lexical_dir(directory, 0))
        # The manifest is written last: a directory without one is not (yet) an index.
        manifest.save(directory)
        return cls(directory, manifest, embedder, store)

    @classmethod
    def open(cls, directory: str | Path, embedder: Embedder | str | None = None) -> Index:
        """Open an existing index; ``embedder`` defaults to the one recorded in the manifest."""
        directory = Path(directory)
        manifest = IndexManifest.load(directory)
        embedder = cls._resolve_embedder(manifest, embedder, str(directory))
        return cls(directory, manifest, embedder, ChunkStore(directory / STORE_NAME))

    @classmethod
    def open_or_create(
        cls,
        directory: str | Path,
        embedder: Embedder | str | None = None,
        chunking: ChunkingSettings | None = None,
        index_type: IndexType = "auto",
    ) -> Index:
        directory = Path(directory)
        if (directory / MANIFEST_NAME).exists():
            index = cls.open(directory, embedder)
            cls._check_chunking(index.manifest, chunking, str(directory), "a new index")
            return index
        return cls.create(directory, embedder, chunking, index_type)

    def close(self) -> None:
        self._release_lock()
        self.store.close()

    # -- locking ----------------------------------------------------------------------------
    def _begin_write(self) -> None:
        self._acquire_lock()

    def _acquire_lock(self) -> None:
        if self._lock is None:
            lock = FileLock(str(self.directory / LOCK_NAME))
            try:
                lock.acquire(timeout=60)
            except Timeout:
                raise RagkitError(
                    f"index {self.directory} is being written by another process"
                ) from None
            self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- vectors ----------------------------------------------------------------------------
    def _ensure_vectors(self) -> VectorIndex:
        """Load the FAISS file of the store's current generation (reloading if a writer moved on)."""
        for _ in range(5):
            generation = self.store.generation
            cached = self._vectors_at
            if cached is not None and cached[0] == generation:
                return cached[1]
            path = vector_file(self.directory, generation)
            if not path.exists():
                if self.store.conn.in_transaction:
                    break  # the snapshot is too old: the caller retries with a new one
                time.sleep(0.05)  # a writer replaced it between our two reads: read again
                continue
            try:
                loaded = VectorIndex.load(path, self.manifest.dimension, self.manifest.index_type)
            except IndexFormatError:
                if not path.exists():
                    continue
                raise
            self._vectors_at = (generation, loaded)
            return loaded
        raise IndexFormatError(
            f"vector file for generation {self.store.generation} is missing in {self.directory}"
        )

    # -- writing ----------------------------------------------------------------------------
    def _committed_documents_of_file(self, file_key: str) -> set[str]:
        return set(self.store.documents_of_file(file_key))

    def commit(self) -> int:
        """Apply staged changes atomically; returns the new generation (unchanged if nothing staged)."""
        if not self._pending:
            return self.store.generation
        self._acquire_lock()
        pending = self._pending
        # staged documents replace committed ones with the same id
        deleted = pending.delete_documents | pending.document_ids()
        vectors = self._ensure_vectors()
        generation = self.store.generation
        removed = np.asarray(self.store.chunk_vids_of_documents(deleted), dtype=np.int64)
        first_vid = self.store.next_vid
        new_vids = np.arange(first_vid, first_vid + len(pending.chunks), dtype=np.int64)
        new_vectors = pending.stacked_vectors(self.manifest.dimension)
        new_generation = generation + 1
        new_path = vector_file(self.directory, new_generation)
        vectors.plan(vectors.ntotal - len(removed) + len(pending.chunks))
        try:
            if vectors.supports_incremental:
                vectors.remove(removed)
                vectors.add(new_vids, new_vectors)
            else:
                self._rebuild_vectors(vectors, set(removed.tolist()), new_vids, new_vectors)
            vectors.save(new_path)
            self._build_lexical(set(removed.tolist()), new_vids, pending.chunks).save(
                lexical_dir(self.directory, new_generation)
            )
            self.store.begin()
            self.store.delete_documents(deleted)
            for key in pending.delete_files:
                self.store.delete_file(key)
            for document, file_key in pending.documents:
                self.store.insert_document(document, file_key)
            self.store.insert_chunks(new_vids.tolist(), pending.chunks, new_vectors)
            for key, (source, content_hash) in pending.files.items():
                self.store.upsert_file(key, source, content_hash)
            self.store.set_meta("generation", str(new_generation))
            self.store.set_meta("next_vid", str(first_vid + len(pending.chunks)))
            self.store.commit()
        except BaseException:
            self.store.rollback()
            self._vectors_at = None  # the in-memory copy may hold the uncommitted change
            with contextlib.suppress(OSError):
                new_path.unlink()
            shutil.rmtree(lexical_dir(self.directory, new_generation), ignore_errors=True)
            raise
        self._vectors_at = (new_generation, vectors)
        self._lexical_at = None
        self._pending = StagedChanges()
        files, documents, chunks = self.store.counts()
        self.manifest.generation = new_generation
        self.manifest.counts = IndexCounts(files=files, documents=documents, chunks=chunks)
        self.manifest.updated_at = utc_now()
        self.manifest.save(self.directory)
        # Keep a few previous generations: a reader in another process may have just read an
        # older generation number from its snapshot and not yet opened that generation's files.
        self._prune_vector_files(keep_from=new_generation - KEEP_GENERATIONS)
        self._release_lock()
        return new_generation

    def _build_lexical(
        self, removed: set[int], new_ids: np.ndarray, new_chunks: Sequence[Chunk]
    ) -> LexicalIndex:
        ids: list[int] = []
        texts: list[str] = []
        for vid, text in self.store.conn.execute("SELECT vid, text FROM chunks ORDER BY vid"):
            if vid not in removed:
                ids.append(vid)
                texts.append(text)
        ids.extend(int(i) for i in new_ids)
        texts.extend(c.text for c in new_chunks)
        return LexicalIndex.build(np.asarray(ids, dtype=np.int64), texts)

    def _ensure_lexical(self) -> LexicalIndex:
        """The BM25 index of the snapshot's generation (built in memory for indexes that lack one)."""
        generation = self.store.generation
        cached = self._lexical_at
        if cached is not None and cached[0] == generation:
            return cached[1]
        folder = lexical_dir(self.directory, generation)
        if folder.is_dir():
            lexical = LexicalIndex.load(folder)
        else:
            if generation != self.store.generation:  # pragma: no cover - guarded by the snapshot
                raise IndexFormatError("generation changed while loading")
            lexical = self._build_lexical(set(), np.zeros(0, np.int64), [])
        self._lexical_at = (generation, lexical)
        return lexical

    def _rebuild_vectors(
        self, vectors: VectorIndex, removed: set[int], new_ids: np.ndarray, new_vectors: np.ndarray
    ) -> None:
        """Rebuild from the stored vectors minus ``removed`` plus the new ones, streamed from
        the store (an IVF-PQ rebuild never holds the whole corpus's raw vectors in memory)."""
        dimension = self.manifest.dimension

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for ids, vecs in self.store.iter_vectors(dimension):
                if removed:
                    keep = np.fromiter(
                        (i not in removed for i in ids.tolist()), dtype=bool, count=len(ids)
                    )
                    ids, vecs = ids[keep], vecs[keep]
                if len(ids):
                    yield ids, vecs
            if len(new_ids):
                yield new_ids, new_vectors.astype(np.float32, copy=False)

        stored = self.store.counts()[2]
        vectors.rebuild_streaming(stored - len(removed) + len(new_ids), batches)

    def _prune_vector_files(self, keep_from: int) -> None:
        """Remove vector files older than the previous generation (a reader may still be loading it)."""
        for path in self.directory.glob("vectors-*.faiss"):
            try:
                generation = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            if generation < keep_from:
                with contextlib.suppress(OSError):
                    path.unlink()
        for folder in self.directory.glob("bm25-*"):
            try:
                generation = int(folder.name.split("-", 1)[1])
            except ValueError:
                continue
            if generation < keep_from:
                shutil.rmtree(folder, ignore_errors=True)
        for tmp in self.directory.glob(".vectors-*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        for tmp in self.directory.glob(".bm25-*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)

    # -- reading ----------------------------------------------------------------------------
    def search_vector(
        self, vector: Vectors, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Search by vector. Vectors and rows are read from one committed generation, even while
        another process commits: a reader never mixes two states of the index."""
        query = self._query_vector(vector, k).reshape(1, -1)

        def run() -> list[tuple[int, float]]:
            vectors = self._ensure_vectors()
            if vectors.ntotal == 0:
                return []
            allowed = self.store.matching_vids(filters) if filters else None
            # compressed (ivfpq) indexes re-rank their candidates with the stored exact vectors
            scores, ids = vectors.search(query, k, allowed, exact=self._stored_vectors)
            return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

        return self._in_snapshot(run, "dense")

    def _stored_vectors(self, vids: np.ndarray) -> np.ndarray:
        """Exact vectors of ``vids`` from the store, in order (same snapshot as the search)."""
        vectors = self.store.vectors_by_vid(vids.tolist(), self.manifest.dimension)
        if vectors is None:
            raise IndexFormatError(f"vector ids missing from the chunk store of {self.directory}")
        return vectors

    def search_lexical(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """BM25 search with the same filters and the same snapshot guarantee as :meth:`search_vector`."""
        check_query(query, k)

        def run() -> list[tuple[int, float]]:
            lexical = self._ensure_lexical()
            allowed = self.store.matching_vids(filters) if filters else None
            scores, ids = lexical.search(query, k, allowed)
            return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]

        return self._in_snapshot(run, "bm25")

    def _in_snapshot(
        self, search: Callable[[], list[tuple[int, float]]], retriever: str
    ) -> list[Hit]:
        attempts = 20
        for attempt in range(attempts):
            pairs: list[tuple[int, float]] | None
            with self.store.snapshot():
                try:
                    pairs = search()
                except IndexFormatError:
                    if attempt == attempts - 1:
                        raise
                    pairs = None
                else:
                    chunks = self.store.chunks_by_vid([i for i, _ in pairs])
            if pairs is None:
                # our snapshot's files were pruned by a fast writer: back off, take a newer one
                time.sleep(0.01 * (attempt + 1))
                continue
            hits = [
                Hit(chunk=chunks[i], score=s, retriever=retriever) for i, s in pairs if i in chunks
            ]
            for rank, hit in enumerate(hits):
                hit.rank = rank
            return hits
        raise IndexFormatError(
            f"could not read a consistent state of {self.directory}"
        )  # pragma: no cover

    def vectors_of(self, chunk_ids: Sequence[str]) -> dict[str, Vectors]:
        """Stored embeddings of chunks (for MMR and other re-ranking without re-embedding)."""
        found: dict[str, Vectors] = {}
        for chunk_id in chunk_ids:
            row = self.store.conn.execute(
                "SELECT vector FROM chunks WHERE id = ?", (chunk_id,)
            ).fetchone()
            if row is not None:
                found[chunk_id] = np.frombuffer(row[0], dtype=np.float32)
        return found

    def document(self, document_id: str) -> Document | None:
        return self.store.document(document_id)

    def chunk(self, chunk_id: str) -> Chunk | None:
        return self.store.chunk(chunk_id)

    def counts(self) -> IndexCounts:
        files, documents, chunks = self.store.counts()
        return IndexCounts(files=files, documents=documents, chunks=chunks)


_CREATE_NAMES = (
    STORE_NAME,
    f"{STORE_NAME}-wal",
    f"{STORE_NAME}-shm",
    f"{STORE_NAME}-journal",
    "vectors-0.faiss",
    "bm25-0",
    LOCK_NAME,
)
_CREATE_TEMP_PREFIXES = (".vectors-0.faiss.", ".bm25-0.", f".{MANIFEST_NAME}.")


def _interrupted_create(directory: Path) -> bool:
    """Whether ``directory`` holds only what :meth:`Index.create` writes before its manifest,
    with an empty store: a create killed half-way, safe to start again. Anything else (another
    file, a store with rows or a later generation) is not ours to delete."""
    if (directory / MANIFEST_NAME).exists():
        return False
    for entry in directory.iterdir():
        if entry.name not in _CREATE_NAMES and not entry.name.startswith(_CREATE_TEMP_PREFIXES):
            return False
    store_path = directory / STORE_NAME
    if not store_path.exists():
        return True
    try:
        with contextlib.closing(sqlite3.connect(store_path)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table in ("files", "documents", "chunks"):
                if table in tables and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                    return False
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
                if row is not None and row[0] != "0":
                    return False
    except sqlite3.DatabaseError:
        return False
    return True


def _clear_interrupted_create(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
