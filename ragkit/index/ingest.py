"""Indexing files: discover, skip unchanged ones (content hash), load, chunk, embed, commit.

Work is committed in groups of about ``commit_every`` chunks, so a long run that is
interrupted keeps what it finished and a re-run picks up only what is left.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragkit.chunking import RecursiveSplitter
from ragkit.errors import LoaderError
from ragkit.index.index import Index
from ragkit.loaders import (
    LoaderRegistry,
    SkippedFile,
    SourceFile,
    default_registry,
    discover_files,
    load_file,
)
from ragkit.loaders.walker import content_hash
from ragkit.schema import Chunk, Document

if TYPE_CHECKING:  # the PostgreSQL store offers the same members; no runtime import (psycopg)
    from ragkit.stores.pgvector import PgVectorIndex

EMBED_BLOCK_BATCHES = 8


class IngestProgress(Protocol):
    """Receives progress; the CLI renders it with rich, the library default ignores it."""

    def files(self, done: int, total: int) -> None: ...

    def chunks(self, done: int, total: int) -> None: ...


class IngestReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    skipped: list[SkippedFile] = Field(default_factory=list)
    documents: int = 0
    chunks_added: int = 0
    chunks_total: int = 0
    seconds: float = 0.0


def embed_sorted(
    index: Index | PgVectorIndex,
    texts: Sequence[str],
    progress: IngestProgress | None,
    done: int,
    total: int,
) -> np.ndarray:
    """Embed texts longest-first in blocks (less padding, steady progress), returned in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    vectors = np.zeros((len(texts), index.manifest.dimension), dtype=np.float32)
    block = index.embedder.batch_size * EMBED_BLOCK_BATCHES
    for start in range(0, len(order), block):
        ids = order[start : start + block]
        vectors[ids] = index.embedder.encode([texts[i] for i in ids])
        if progress is not None:
            progress.chunks(done + min(start + block, len(order)), total)
    return vectors


def index_paths(
    index: Index | PgVectorIndex,
    paths: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    registry: LoaderRegistry | None = None,
    progress: IngestProgress | None = None,
    commit_every: int = 4096,
    prune: bool = False,
) -> IngestReport:
    """Bring ``index`` (a directory index or a PostgreSQL store) up to date with the files under
    ``paths``.

    Unchanged files (same content hash) are not re-read; changed files replace their previous
    documents. With ``prune``, indexed files under ``paths`` that no longer exist are removed.
    """
    started = time.perf_counter()
    registry = registry or default_registry()
    files, skipped = discover_files(paths, include, exclude, registry)
    report = IngestReport(files_seen=len(files) + len(skipped), skipped=list(skipped))

    group: list[tuple[SourceFile, str, list[Document], list[Chunk]]] = []
    group_chunks = 0
    embedded = 0
    total_chunks = 0
    # One embedding job runs in a worker thread while this thread loads and chunks the next
    # group (the model releases the GIL), so embedding never waits on file I/O; the store is
    # written only from this thread.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragkit-embed")
    pending_job: list[
        tuple[Future[np.ndarray], list[tuple[SourceFile, str, list[Document], list[Chunk]]]]
    ] = []

    def write_pending() -> None:
        nonlocal embedded
        while pending_job:
            future, done_group = pending_job.pop(0)
            vectors = future.result()
            offset = 0
            for file, digest, documents, chunks in done_group:
                index.replace_file(
                    file.key,
                    file.source,
                    digest,
                    documents,
                    chunks=chunks,
                    vectors=vectors[offset : offset + len(chunks)],
                )
                offset += len(chunks)
            index.commit()
            embedded += len(vectors)

    def flush() -> None:
        nonlocal group, group_chunks
        if not group:
            return
        texts = [c.text for _, _, _, chunks in group for c in chunks]
        future = executor.submit(
            embed_sorted, index, texts, progress, embedded + group_chunks_pending(), total_chunks
        )
        write_pending()  # the previous group, while the worker embeds this one
        pending_job.append((future, group))
        group, group_chunks = [], 0

    def group_chunks_pending() -> int:
        return sum(len(c) for _, g in pending_job for _, _, _, c in g)

    try:
        for position, file in enumerate(files, start=1):
            if progress is not None:
                progress.files(position, len(files))
            digest = changed_digest(index, file, report)
            if digest is None:
                continue
            split = load_and_split(file, digest, registry, index.splitter)
            if isinstance(split, SkippedFile):
                report.skipped.append(split)
                continue
            documents, chunks = split
            group.append((file, digest, documents, chunks))
            group_chunks += len(chunks)
            total_chunks += len(chunks)
            record_indexed(report, documents, chunks)
            if group_chunks >= commit_every:
                flush()
        flush()
        write_pending()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

    return finish_report(index, report, paths, files, prune, started)


def changed_digest(
    index: Index | PgVectorIndex, file: SourceFile, report: IngestReport
) -> str | None:
    """The file's content hash when it must be (re)indexed, else None (counted in ``report``).

    Shared by every ingestion path so that "unchanged" means the same thing everywhere: the
    hash is taken where the index is written, never by a remote worker.
    """
    try:
        digest = content_hash(Path(file.path))
    except OSError as exc:
        report.skipped.append(
            SkippedFile(source=file.source, reason=f"cannot read: {exc.strerror or exc}")
        )
        return None
    if index.store.file_hash(file.key) == digest:
        report.files_unchanged += 1
        return None
    return digest


def load_and_split(
    file: SourceFile, digest: str, registry: LoaderRegistry, splitter: RecursiveSplitter
) -> tuple[list[Document], list[Chunk]] | SkippedFile:
    """Load and chunk one file, or say why it is skipped (a plain function: Ray workers call it)."""
    try:
        loaded = load_file(file, registry, digest)
    except LoaderError as exc:
        return SkippedFile(source=file.source, reason=str(exc))
    chunks = splitter.split_many([d for d in loaded.documents if d.text.strip()])
    if not chunks:
        return SkippedFile(source=file.source, reason="no extractable text")
    return loaded.documents, chunks


def record_indexed(
    report: IngestReport, documents: Sequence[Document], chunks: Sequence[Chunk]
) -> None:
    report.files_indexed += 1
    report.documents += len(documents)
    report.chunks_added += len(chunks)


def finish_report(
    index: Index | PgVectorIndex,
    report: IngestReport,
    paths: Sequence[str | Path],
    files: Sequence[SourceFile],
    prune: bool,
    started: float,
) -> IngestReport:
    """Prune vanished files if asked (indexed files under ``paths`` that no longer exist), then
    fill in the totals."""
    if prune:
        selected = {f.key for f in files}
        roots = [Path(p).resolve().as_posix() for p in paths]
        for key in index.store.file_keys():
            under = any(key == r or key.startswith(r.rstrip("/") + "/") for r in roots)
            if under and key not in selected and not Path(key).exists():
                index.delete_file(key)
                report.files_removed += 1
        index.commit()

    report.chunks_total = index.counts().chunks
    report.seconds = time.perf_counter() - started
    return report
