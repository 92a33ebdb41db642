"""Indexing files: discover, skip unchanged ones (content hash), load, chunk, embed, commit.

A long build commits as it goes, so a run that is killed (even with SIGKILL) keeps what it
committed and a re-run, finding those files unchanged by content hash, embeds only the rest.
When to commit is a trade-off, decided by :class:`CommitPolicy`:

* every commit of a directory index writes a complete generation — the FAISS file and the
  BM25 folder are rebuilt or rewritten for the whole index, not just the new rows — so that a
  reader never sees rows without their vectors. Deferring those derived files to the last
  commit would make intermediate generations unreadable (or readers would have to rebuild
  them), so every commit stays complete and the policy keeps commits rare enough instead;
* a commit is due once ``commit_seconds`` (default 30 s) have passed since the previous one
  *and* at least :data:`COMMIT_COST_RATIO` times as long as that previous commit took. Time,
  not a file or chunk count, because files and machines differ by orders of magnitude: 30 s of
  embedding is a few hundred to two thousand MiniLM chunks on two CPU cores and far more on a
  GPU. The cost ratio keeps the rebuilds below ~10 % of the build however large the index grows
  (HNSW/IVF are rebuilt whole at each commit, so their interval stretches with their size).
  Measured on the Python docs: a BM25 rebuild over 14k chunks takes ~1.5 s, and whole commits
  of a 4.3k-chunk index took 0.4–1.6 s on two busy cores, against 30 s of embedding between
  them;
* ``commit_every`` chunks staged also force a commit (it bounds the memory held by staged
  rows and vectors).

Embedding runs in jobs sized to about :data:`EMBED_JOB_SECONDS` of work (measured as the build
goes), so a SIGKILL loses at most the commit interval plus the job in flight.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragkit.chunking import RecursiveSplitter
from ragkit.errors import LoaderError
from ragkit.index.contract import VectorStore
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

EMBED_BLOCK_BATCHES = 8
EMBED_JOB_SECONDS = 5.0
"""Target duration of one embedding job. A job is the unit a commit takes and what a kill loses
beyond the commit interval, so it is short next to ``commit_seconds``; its size in chunks follows
the measured embedding rate (the first job is one batch), between one batch and
:data:`EMBED_BLOCK_BATCHES` batches: ~50 chunks of MiniLM on two busy CPU cores, 512 on a GPU."""
COMMIT_SECONDS = 30.0
COMMIT_COST_RATIO = 10.0

_Staged = tuple[SourceFile, str, list[Document], list[Chunk]]


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


class CommitPolicy:
    """Decides when staged work is committed during a build (see the module docstring)."""

    def __init__(
        self,
        seconds: float = COMMIT_SECONDS,
        max_chunks: int = 4096,
        cost_ratio: float = COMMIT_COST_RATIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seconds < 0:
            raise ValueError(f"commit_seconds must be >= 0, got {seconds}")
        if max_chunks < 1:
            raise ValueError(f"commit_every must be positive, got {max_chunks}")
        self.seconds = seconds
        self.max_chunks = max_chunks
        self.cost_ratio = cost_ratio
        self.clock = clock
        self.last = clock()
        self.cost = 0.0
        self.staged = 0
        self.commits = 0

    @property
    def interval(self) -> float:
        return max(self.seconds, self.cost_ratio * self.cost)

    def due(self) -> bool:
        if not self.staged:
            return False
        return self.staged >= self.max_chunks or self.clock() - self.last >= self.interval

    def commit(self, index: VectorStore) -> None:
        started = self.clock()
        index.commit()
        self.last = self.clock()
        self.cost = self.last - started
        self.staged = 0
        self.commits += 1


def _timed_embed(
    index: VectorStore,
    texts: Sequence[str],
    progress: IngestProgress | None,
    done: int,
    total: int,
) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = embed_sorted(index, texts, progress, done, total)
    return vectors, time.perf_counter() - started


def embed_sorted(
    index: VectorStore,
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
    index: VectorStore,
    paths: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    registry: LoaderRegistry | None = None,
    progress: IngestProgress | None = None,
    commit_every: int = 4096,
    prune: bool = False,
    commit_seconds: float = COMMIT_SECONDS,
) -> IngestReport:
    """Bring ``index`` (a directory index or a PostgreSQL store) up to date with the files under
    ``paths``.

    Unchanged files (same content hash) are not re-read; changed files replace their previous
    documents. With ``prune``, indexed files under ``paths`` that no longer exist are removed.
    Finished work is committed every ``commit_seconds`` (stretched to ten times the last
    commit's own duration) or ``commit_every`` staged chunks, whichever comes first, and at the
    end; an interrupted run keeps what it committed.
    """
    started = time.perf_counter()
    registry = registry or default_registry()
    files, skipped = discover_files(paths, include, exclude, registry)
    report = IngestReport(files_seen=len(files) + len(skipped), skipped=list(skipped))
    policy = CommitPolicy(commit_seconds, commit_every)
    batch = index.embedder.batch_size
    job_size = max(1, min(commit_every, batch))

    job: list[_Staged] = []
    job_chunks = 0
    embedded = 0
    total_chunks = 0
    # Embedding jobs run in a worker thread while this thread loads and chunks the next job and
    # stages and commits the previous one (the model releases the GIL), so embedding never waits
    # on file I/O or on a commit; the store is written only from this thread.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragkit-embed")
    in_flight: deque[tuple[Future[tuple[np.ndarray, float]], list[_Staged]]] = deque()

    def stage_oldest() -> None:
        nonlocal embedded, job_size
        future, done_job = in_flight.popleft()
        vectors, seconds = future.result()
        if seconds > 0 and len(vectors) >= batch:  # a full batch measures the rate fairly
            wanted = int(len(vectors) / seconds * EMBED_JOB_SECONDS)
            job_size = max(1, min(commit_every, batch * EMBED_BLOCK_BATCHES, max(batch, wanted)))
        offset = 0
        for file, digest, documents, chunks in done_job:
            index.replace_file(
                file.key,
                file.source,
                digest,
                documents,
                chunks=chunks,
                vectors=vectors[offset : offset + len(chunks)],
            )
            offset += len(chunks)
        embedded += len(vectors)
        policy.staged += len(vectors)
        if policy.due():
            policy.commit(index)

    def submit() -> None:
        nonlocal job, job_chunks
        if not job:
            return
        texts = [c.text for _, _, _, chunks in job for c in chunks]
        queued = sum(len(c) for _, j in in_flight for _, _, _, c in j)
        future = executor.submit(
            _timed_embed, index, texts, progress, embedded + queued, total_chunks
        )
        in_flight.append((future, job))
        job, job_chunks = [], 0
        while len(in_flight) > 1:  # the previous job, while the worker embeds this one
            stage_oldest()

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
            job.append((file, digest, documents, chunks))
            job_chunks += len(chunks)
            total_chunks += len(chunks)
            record_indexed(report, documents, chunks)
            if job_chunks >= job_size:
                submit()
        submit()
        while in_flight:
            stage_oldest()
        if policy.staged:
            policy.commit(index)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

    return finish_report(index, report, paths, files, prune, started)


def changed_digest(index: VectorStore, file: SourceFile, report: IngestReport) -> str | None:
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
    index: VectorStore,
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
