"""The SQLite side of an index: files, documents, chunks (with their vectors) and metadata.

SQLite is the transactional source of truth. Each commit bumps ``generation`` in the same
transaction that changes the rows, and the FAISS file for that generation is written (and
renamed into place) *before* the transaction commits, so a reader that sees generation G can
always load ``vectors-G.faiss``. WAL mode lets readers read while a writer writes.

Connections: one *writer* connection, used only by the thread inside a write transaction
(:meth:`ChunkStore.begin` … :meth:`ChunkStore.commit`), and one *read* connection per thread
(``query_only``), opened on first use. A SQLite connection has one transaction state, so a
connection shared by threads cannot give each its own snapshot: two searches would nest
``BEGIN`` statements ("cannot start a transaction within a transaction"), one would end the
other's snapshot, and their statements would interleave on shared cursors. Per-thread read
connections make :meth:`ChunkStore.snapshot` private to its thread (WAL snapshot isolation, no
nesting).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import IndexFormatError, RagkitError
from ragkit.schema import Chunk, Document

STORE_NAME = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    file_key TEXT,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_file ON documents(file_key);
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
"""

_CHUNK_COLUMNS = "vid, id, document_id, text, start, end, source, metadata"
_FILTER_COLUMNS = {"document_id": "document_id", "source": "source", "chunk_id": "id"}


def _metadata_column(key: str) -> tuple[str, list[Any]]:
    """SQL for one metadata value, with its parameters; the key is always a parameter.

    ``json_extract`` compares a path label with the key as written in the stored JSON text, and
    metadata is stored with ``json.dumps`` escapes (``"é"`` is ``"\\u00e9"`` there); its path
    syntax also has no escape for a double quote or a backslash. So only keys that JSON writes
    verbatim take the fast ``json_extract`` path; any other key is looked up through
    ``json_each``, which decodes labels (slower: it walks the object). Both read JSON booleans as
    0/1 and null as SQL NULL.
    """
    if all(" " <= char <= "~" and char not in '"\\' for char in key):
        return "json_extract(metadata, ?)", ['$."' + key + '"']
    return "(SELECT value FROM json_each(metadata) WHERE key = ?)", [key]


def filter_sql(filters: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """A SQL WHERE clause over chunks for metadata filters.

    ``{"key": value}`` is equality, ``{"key": [a, b]}`` or ``{"key": {"$in": [a, b]}}`` is
    membership, ``{"key": {"$ne": v}}`` and ``{"key": {"$nin": [...]}}`` negate them. The keys
    ``document_id``, ``source`` and ``chunk_id`` address the chunk itself; others its metadata.
    """
    if not filters:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    for key, condition in filters.items():
        if not isinstance(key, str) or not key:
            raise RagkitError(f"filter keys must be non-empty strings, got {key!r}")
        column = _FILTER_COLUMNS.get(key)
        column_params: list[Any] = []
        if column is None:
            column, column_params = _metadata_column(key)
        op, value = "$eq", condition
        if isinstance(condition, Mapping):
            if len(condition) != 1:
                raise RagkitError(
                    f"filter on {key!r} must have exactly one operator, got {list(condition)}"
                )
            op, value = next(iter(condition.items()))
        elif isinstance(condition, list | tuple | set | frozenset):
            op = "$in"
        if op in ("$eq", "$ne"):
            if isinstance(value, list | tuple | set | frozenset | Mapping):
                raise RagkitError(f"filter {op} on {key!r} needs a scalar value, got {value!r}")
            clauses.append(f"{column} {'=' if op == '$eq' else 'IS NOT'} ?")
            params.extend([*column_params, value])
        elif op in ("$in", "$nin"):
            values = list(value) if isinstance(value, list | tuple | set | frozenset) else None
            if values is None:
                raise RagkitError(f"filter {op} on {key!r} needs a list of values, got {value!r}")
            if not values:
                clauses.append("0" if op == "$in" else "1")
                continue
            marks = ", ".join("?" for _ in values)
            negate = "NOT " if op == "$nin" else ""
            clauses.append(f"{column} {negate}IN ({marks})")
            params.extend(column_params)
            params.extend(values)
        else:
            raise RagkitError(
                f"unknown filter operator {op!r} on {key!r} (use $eq, $ne, $in, $nin)"
            )
    return " AND ".join(clauses), params


def _row_to_chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        id=row[1],
        document_id=row[2],
        text=row[3],
        start=row[4],
        end=row[5],
        source=row[6],
        metadata=json.loads(row[7]),
    )


class ChunkStore:
    """Thin typed access to the SQLite file; every write happens inside :meth:`transaction`."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        if not create and not path.is_file():
            raise IndexFormatError(f"index store is missing: {path}")
        try:
            self._writer = self._connect()
            if not create:
                # checked before the journal pragma, which writes a database header: a search
                # on a broken index must not change its store file (an empty file stayed empty)
                self._writer.execute("SELECT count(*) FROM chunks").fetchone()
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=FULL")
            if create:
                self._writer.executescript(_SCHEMA)
                self._writer.execute("SELECT count(*) FROM chunks").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(
                f"index store {path} is not a valid ragkit store: {exc}"
            ) from None
        # the thread inside a write transaction (it alone uses the writer connection)
        self._write_owner: int | None = None
        self._write_lock = threading.RLock()
        # thread id -> (thread, its read connection)
        self._readers: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._readers_lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )

    @property
    def conn(self) -> sqlite3.Connection:
        """The calling thread's connection: the writer inside its write transaction, else the
        thread's own read connection (so no two threads ever share a transaction or cursor)."""
        if self._write_owner == threading.get_ident():
            return self._writer
        return self._reader()

    def _reader(self) -> sqlite3.Connection:
        ident = threading.get_ident()
        current = threading.current_thread()
        found = self._readers.get(ident)
        if found is not None and found[0] is current:
            return found[1]
        try:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"cannot open index store {self.path}: {exc}") from None
        with self._readers_lock:
            if self._closed:
                conn.close()
                raise RagkitError(f"index store {self.path} is closed")
            # drop the connections of finished threads (and of a reused thread id)
            for key, (thread, old) in list(self._readers.items()):
                if key == ident or not thread.is_alive():
                    del self._readers[key]
                    old.close()
            self._readers[ident] = (current, conn)
        return conn

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            readers = [conn for _, conn in self._readers.values()]
            self._readers.clear()
        for conn in readers:
            conn.close()
        self._writer.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    @property
    def next_vid(self) -> int:
        return int(self.get_meta("next_vid", "1") or 1)

    # -- transactions -----------------------------------------------------------------------
    def begin(self) -> None:
        """Start the write transaction; other threads' writes wait, their reads do not."""
        self._write_lock.acquire()
        try:
            self._writer.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise
        self._write_owner = threading.get_ident()

    def commit(self) -> None:
        self._writer.execute("COMMIT")
        self._end_write()

    def rollback(self) -> None:
        if self._write_owner != threading.get_ident():
            return
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")
        self._end_write()

    def _end_write(self) -> None:
        self._write_owner = None
        self._write_lock.release()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees one committed state (WAL snapshot).

        Private to the calling thread (its own read connection); nested snapshots of one thread
        share the outer one, and inside this thread's write transaction reads see its writes.
        """
        conn = self.conn
        if conn is self._writer or conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            yield
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- files ------------------------------------------------------------------------------
    def file_hash(self, key: str) -> str | None:
        row = self.conn.execute("SELECT content_hash FROM files WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def file_keys(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT key FROM files ORDER BY key")]

    def upsert_file(self, key: str, source: str, content_hash: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO files(key, source, content_hash) VALUES (?, ?, ?)",
            (key, source, content_hash),
        )

    def delete_file(self, key: str) -> None:
        self.conn.execute("DELETE FROM files WHERE key = ?", (key,))

    def documents_of_file(self, key: str) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM documents WHERE file_key = ? ORDER BY id", (key,)
            )
        ]

    # -- documents and chunks ---------------------------------------------------------------
    def has_document(self, document_id: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM documents WHERE id = ?", (document_id,)).fetchone()
            is not None
        )

    def chunk_vids_of_documents(self, document_ids: Iterable[str]) -> list[int]:
        vids: list[int] = []
        for doc_id in document_ids:
            vids.extend(
                r[0]
                for r in self.conn.execute(
                    "SELECT vid FROM chunks WHERE document_id = ?", (doc_id,)
                )
            )
        return vids

    def delete_documents(self, document_ids: Iterable[str]) -> None:
        for doc_id in document_ids:
            self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
            self.conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    def insert_document(self, document: Document, file_key: str | None) -> None:
        self.conn.execute(
            "INSERT INTO documents(id, file_key, source, text, metadata) VALUES (?, ?, ?, ?, ?)",
            (document.id, file_key, document.source, document.text, json.dumps(document.metadata)),
        )

    def insert_chunks(
        self, vids: Sequence[int], chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> None:
        rows = (
            (
                vid,
                c.id,
                c.document_id,
                c.text,
                c.start,
                c.end,
                c.source,
                json.dumps(c.metadata),
                vectors[i].tobytes(),
            )
            for i, (vid, c) in enumerate(zip(vids, chunks, strict=True))
        )
        self.conn.executemany(
            "INSERT INTO chunks(vid, id, document_id, text, start, end, source, metadata, vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def chunks_by_vid(self, vids: Sequence[int]) -> dict[int, Chunk]:
        found: dict[int, Chunk] = {}
        for start in range(0, len(vids), 500):
            batch = [int(v) for v in vids[start : start + 500]]
            marks = ", ".join("?" for _ in batch)
            for row in self.conn.execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE vid IN ({marks})", batch
            ):
                found[int(row[0])] = _row_to_chunk(row)
        return found

    def vectors_by_vid(self, vids: Sequence[int], dimension: int) -> np.ndarray | None:
        """Stored vectors of ``vids`` in that order (None if any is missing)."""
        wanted = [int(v) for v in vids]
        blobs: dict[int, bytes] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            marks = ", ".join("?" for _ in batch)
            for vid, blob in self.conn.execute(
                f"SELECT vid, vector FROM chunks WHERE vid IN ({marks})", batch
            ):
                blobs[int(vid)] = blob
        if len(blobs) != len(set(wanted)):
            return None
        joined = b"".join(blobs[v] for v in wanted)
        return np.frombuffer(joined, dtype=np.float32).reshape(len(wanted), dimension)

    def chunk(self, chunk_id: str) -> Chunk | None:
        row = self.conn.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE id = ?", (chunk_id,)
        ).fetchone()
        return _row_to_chunk(row) if row else None

    def chunks_of_document(self, document_id: str) -> list[Chunk]:
        rows = self.conn.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE document_id = ? ORDER BY start",
            (document_id,),
        )
        return [_row_to_chunk(r) for r in rows]

    def document(self, document_id: str) -> Document | None:
        row = self.conn.execute(
            "SELECT id, source, text, metadata FROM documents WHERE id = ?", (document_id,)
        ).fetchone()
        if row is None:
            return None
        return Document(id=row[0], source=row[1], text=row[2], metadata=json.loads(row[3]))

    def matching_vids(self, filters: Mapping[str, Any]) -> np.ndarray:
        where, params = filter_sql(filters)
        rows = self.conn.execute(f"SELECT vid FROM chunks WHERE {where}", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(
        self, dimension: int, batch: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cursor = self.conn.execute("SELECT vid, vector FROM chunks ORDER BY vid")
        while rows := cursor.fetchmany(batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
                len(rows), dimension
            )
            yield ids, vectors

    def counts(self) -> tuple[int, int, int]:
        files = self.conn.execute("SELECT count(*) FROM files").fetchone()[0]
        documents = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(files), int(documents), int(chunks)
