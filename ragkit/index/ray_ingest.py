"""Indexing on a Ray cluster (or a local Ray instance): ``ragkit index --backend ray``.

The same contract as :func:`ragkit.index.ingest.index_paths`, with the expensive middle of the
work spread over Ray workers::

    driver: discover files, hash them, skip unchanged ones (the index's own content hashes)
      └─ Ray Data: file records ─map_batches(load + chunk, tasks)─▶ one row per file
                              ─map_batches(embed, ``workers`` actors)─▶ + vectors
    driver: iterate the results in file order, index.replace_file(...), commit in groups

Why this split:

* The driver is the only writer. The SQLite store and the per-generation FAISS/BM25 files are
  single-writer by design (``write.lock``), and every change goes through the store (any
  :class:`~ragkit.index.VectorStore`), whose commit is atomic: an interrupted run leaves the
  index at its last commit, like the plain path.
* Hashing stays on the driver, next to the store that knows the previous hashes, so only
  changed files travel to the cluster, and "unchanged" means exactly what it means for
  ``index_paths`` (both call :func:`~ragkit.index.ingest.changed_digest`).
* Workers rebuild nothing by guesswork: the chunk tasks receive the index's own splitter (the
  manifest's chunking settings and the embedder's tokenizer, shipped once through Ray's object
  store) and the embed actors load the manifest's model with the manifest's ``embed_backend``,
  so chunks and vectors are the ones the single-process path would produce.
* Records between stages are Arrow tables of plain columns (strings, integers, binary float32
  vectors); documents and chunks travel as JSON text, never as pickled user objects.

Ray is an optional extra (``pip install 'ragkit[ray]'``) imported only when this path runs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import TypeAdapter

from ragkit.errors import IndexFormatError, RagkitError
from ragkit.index.contract import VectorStore
from ragkit.index.ingest import (
    IngestProgress,
    IngestReport,
    changed_digest,
    finish_report,
    load_and_split,
    record_indexed,
)
from ragkit.loaders import (
    LoaderRegistry,
    SkippedFile,
    SourceFile,
    default_registry,
    discover_files,
)
from ragkit.schema import Chunk, Document

if TYPE_CHECKING:
    from ragkit.chunking import RecursiveSplitter

ArrowTable = Any
"""A ``pyarrow.Table`` (pyarrow ships no type stubs, and it is only there with the extra)."""

RAY_INSTALL_HINT = "pip install 'ragkit[ray]'"
# Logical CPUs per stage: one embed actor plus one chunk task fit in one CPU, so a local
# instance started with ``num_cpus=workers`` runs ``workers`` of each and never deadlocks with
# the actors holding every CPU while chunk tasks wait for one.
EMBED_ACTOR_CPUS = 0.75
CHUNK_TASK_CPUS = 0.25
DEFAULT_FILES_PER_BATCH = 8
DEFAULT_OBJECT_STORE_BYTES = 1 << 30

_DOCUMENTS = TypeAdapter(list[Document])
_CHUNKS = TypeAdapter(list[Chunk])


def require_ray() -> Any:
    """The ``ray`` module, or a RagkitError naming the extra (the CLI calls this before it
    loads a model, so a missing extra fails in a second, not after a model load)."""
    # imported by name: the base install (and its type check) must not need Ray
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")  # the extra is ``ray[data]``: fail here, not mid-run
    except ImportError:
        raise RagkitError(
            f"the Ray ingestion backend needs Ray Data; install it with: {RAY_INSTALL_HINT}"
        ) from None
    return ray


# -- stage 1: load + chunk (Ray tasks) --------------------------------------------------------
def load_and_chunk_batch(
    batch: ArrowTable, splitter: RecursiveSplitter, registry: LoaderRegistry
) -> ArrowTable:
    """File records in, one row per file out: its documents and chunks as JSON, or the reason
    it is skipped in ``error`` (reported by the driver exactly like the plain path does)."""
    pa = importlib.import_module("pyarrow")  # comes with ray[data]

    rows: dict[str, list[Any]] = {
        "key": [],
        "source": [],
        "digest": [],
        "error": [],
        "documents": [],
        "chunks": [],
        "n_chunks": [],
    }
    for record in batch.to_pylist():
        file = SourceFile(key=record["key"], source=record["source"], path=record["path"])
        split = load_and_split(file, record["digest"], registry, splitter)
        rows["key"].append(file.key)
        rows["source"].append(file.source)
        rows["digest"].append(record["digest"])
        if isinstance(split, SkippedFile):
            rows["error"].append(split.reason)
            rows["documents"].append("[]")
            rows["chunks"].append("[]")
            rows["n_chunks"].append(0)
        else:
            documents, chunks = split
            rows["error"].append(None)
            rows["documents"].append(_DOCUMENTS.dump_json(documents).decode("utf-8"))
            rows["chunks"].append(_CHUNKS.dump_json(chunks).decode("utf-8"))
            rows["n_chunks"].append(len(chunks))
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("source", pa.string()),
            ("digest", pa.string()),
            ("error", pa.string()),
            ("documents", pa.large_string()),
            ("chunks", pa.large_string()),
            ("n_chunks", pa.int64()),
        ]
    )
    return pa.table(rows, schema=schema)


# -- stage 2: embed (Ray actors) --------------------------------------------------------------
class EmbedWorker:
    """One per worker: loads the index's model with the index's backend once, then embeds
    every chunk of the files in a batch in one call (the backends sort by length themselves).

    Vectors leave as one ``binary`` cell per file (row-major float32), which Arrow moves
    without copying or pickling.
    """

    def __init__(
        self, model: str, backend: str, dimension: int, batch_size: int, threads: int, workers: int
    ) -> None:
        # Thread pools are sized before the backend exists: ONNX Runtime reads the variable
        # when its session is built, torch's intra-op pool is set per process. Without an
        # explicit count, the workers share this node's cores (2 workers on 2 cores: 1 each)
        # instead of each starting a pool as large as the machine and thrashing.
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        os.environ["RAGKIT_EMBED_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
        from ragkit.embedding import Embedder

        # Ray reports an exception raised here as a bare "actor died" string; kept and raised
        # by the first call instead, it reaches the driver as itself (a one-line RagkitError).
        self._error: RagkitError | None = None
        self.embedder = Embedder(model, batch_size=batch_size, backend=backend)
        try:
            self.embedder.warm_up()
            if self.embedder.backend_name != backend or self.embedder.dimension != dimension:
                raise IndexFormatError(
                    f"worker embedder {model!r} gives backend {self.embedder.backend_name!r} with "
                    f"dimension {self.embedder.dimension}; the index needs {backend!r} with {dimension}"
                )
        except RagkitError as exc:
            self._error = exc

    def __call__(self, batch: ArrowTable) -> ArrowTable:
        pa = importlib.import_module("pyarrow")  # comes with ray[data]

        if self._error is not None:
            raise self._error
        texts: list[str] = []
        counts: list[int] = []
        for cell in batch.column("chunks").to_pylist():
            chunk_texts = [c["text"] for c in json.loads(cell)]
            texts.extend(chunk_texts)
            counts.append(len(chunk_texts))
        vectors = np.ascontiguousarray(self.embedder.encode(texts), dtype="<f4")
        cells: list[bytes] = []
        offset = 0
        for count in counts:
            cells.append(vectors[offset : offset + count].tobytes())
            offset += count
        return batch.append_column("vectors", pa.array(cells, type=pa.large_binary()))


# -- driver -----------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(
    workers: int | None, address: str | None, object_store_memory: int | None
) -> Iterator[Any]:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), or start a local instance; undo on exit.

    A session the caller already opened (``ray.is_initialized()``) is used as is and left
    open; a cluster we connected to keeps running after we disconnect.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    runtime_env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            num_cpus=workers or os.cpu_count() or 1,
            include_dashboard=False,
            object_store_memory=object_store_memory or DEFAULT_OBJECT_STORE_BYTES,
            runtime_env=runtime_env,
            log_to_driver=False,
        )
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Ray Data settings for one run, restored afterwards (the context is process-global):
    results in input order, so the index is laid out as the plain path lays it out; no Ray Data
    progress output (ragkit reports its own); and a worker's exception raised as itself rather
    than as Ray's ``UserCodeException``, so a RagkitError keeps its one-line message."""
    context = ray.data.DataContext.get_current()
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # per-run "execution finished" lines
    settings = {
        "enable_progress_bars": False,
        "print_on_execution_start": False,
        "raise_original_map_exception": True,
    }
    saved = {name: getattr(context, name) for name in settings}
    saved_order = context.execution_options.preserve_order
    for name, value in settings.items():
        setattr(context, name, value)
    context.execution_options.preserve_order = True
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        context.execution_options.preserve_order = saved_order
        data_logger.setLevel(saved_level)


def _unwrap(exc: BaseException) -> RagkitError | None:
    """The RagkitError a worker raised, from inside Ray's wrappers (for a one-line message).

    Ray re-raises a worker's exception as a class derived from both ``RayTaskError`` and the
    original, whose message is the whole remote traceback; the original is its ``cause``.
    """
    ray_error = importlib.import_module("ray.exceptions").RayError
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RagkitError) and not isinstance(current, ray_error):
            return current
        cause = getattr(current, "cause", None)
        current = (
            cause if isinstance(cause, BaseException) else current.__cause__ or current.__context__
        )
    return None


def _default_workers(ray: Any, num_gpus: float) -> int:
    resources = ray.cluster_resources()
    if num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1)))


def index_paths_ray(
    index: VectorStore,
    paths: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    registry: LoaderRegistry | None = None,
    progress: IngestProgress | None = None,
    commit_every: int = 4096,
    prune: bool = False,
    *,
    workers: int | None = None,
    batch_size: int | None = None,
    files_per_batch: int = DEFAULT_FILES_PER_BATCH,
    address: str | None = None,
    num_gpus: float | None = None,
    threads_per_worker: int | None = None,
    object_store_memory: int | None = None,
) -> IngestReport:
    """Bring ``index`` up to date with the files under ``paths``, embedding on Ray workers.

    Same report and same resulting index as :func:`~ragkit.index.ingest.index_paths`.
    ``workers`` embedding actors (default: one per CPU of the local machine or cluster, or one
    per GPU when the cluster has GPUs) each run ``threads_per_worker`` threads (default: this
    node's cores divided by ``workers``). ``address=None`` (and no ``$RAY_ADDRESS``) starts a
    local Ray instance with ``workers`` CPUs and stops it afterwards; with an address the
    cluster is joined and left running. ``num_gpus`` per actor defaults to 1 when the cluster
    has at least one GPU. ``files_per_batch`` files make one Ray Data batch in both stages.
    """
    ray = require_ray()
    if workers is not None and workers <= 0:
        raise RagkitError(f"workers must be positive, got {workers}")
    if files_per_batch <= 0:
        raise RagkitError(f"files_per_batch must be positive, got {files_per_batch}")
    started = time.perf_counter()
    registry = registry or default_registry()
    files, skipped = discover_files(paths, include, exclude, registry)
    report = IngestReport(files_seen=len(files) + len(skipped), skipped=list(skipped))
    todo: list[dict[str, str]] = []
    for file in files:
        digest = changed_digest(index, file, report)
        if digest is not None:
            todo.append(
                {"key": file.key, "source": file.source, "path": file.path, "digest": digest}
            )
    if progress is not None:
        progress.files(len(files) - len(todo), len(files))
    if todo:
        with ray_session(workers, address, object_store_memory):
            try:
                _run_pipeline(
                    ray,
                    index,
                    todo,
                    registry,
                    report,
                    progress,
                    commit_every=commit_every,
                    workers=workers,
                    batch_size=batch_size or index.embedder.batch_size,
                    files_per_batch=files_per_batch,
                    num_gpus=num_gpus,
                    threads_per_worker=threads_per_worker,
                    files_total=len(files),
                )
            except Exception as exc:
                cause = _unwrap(exc)
                if cause is None:
                    raise
                raise cause from exc
    return finish_report(index, report, paths, files, prune, started)


def _run_pipeline(
    ray: Any,
    index: VectorStore,
    todo: list[dict[str, str]],
    registry: LoaderRegistry,
    report: IngestReport,
    progress: IngestProgress | None,
    *,
    commit_every: int,
    workers: int | None,
    batch_size: int,
    files_per_batch: int,
    num_gpus: float | None,
    threads_per_worker: int | None,
    files_total: int,
) -> None:
    """Build the Ray Data pipeline for the changed files and write its output through ``index``."""
    manifest = index.manifest
    # The index's splitter: the manifest's chunking with the embedder's tokenizer. Building it
    # loads the model here once, which also proves the model exists before a cluster job starts.
    splitter = index.splitter
    gpus = (
        num_gpus if num_gpus is not None else (1.0 if ray.cluster_resources().get("GPU") else 0.0)
    )
    actors = workers or _default_workers(ray, gpus)
    blocks = max(1, -(-len(todo) // files_per_batch))
    # no idle actors: each one costs a process and a model load (seconds) before any work
    actors = min(actors, blocks)
    with _data_context(ray):
        dataset = (
            ray.data.from_items(todo, override_num_blocks=blocks)
            .map_batches(
                load_and_chunk_batch,
                batch_size=files_per_batch,
                batch_format="pyarrow",
                fn_kwargs={"splitter": splitter, "registry": registry},
                compute=ray.data.TaskPoolStrategy(size=actors),
                num_cpus=CHUNK_TASK_CPUS,
            )
            .map_batches(
                EmbedWorker,
                batch_size=files_per_batch,
                batch_format="pyarrow",
                fn_constructor_kwargs={
                    "model": manifest.embedder,
                    "backend": manifest.embed_backend,
                    "dimension": manifest.dimension,
                    "batch_size": batch_size,
                    "threads": threads_per_worker or 0,
                    "workers": actors,
                },
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=EMBED_ACTOR_CPUS,
                num_gpus=gpus,
            )
        )
        done_files = files_total - len(todo)
        staged = 0
        written = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                done_files += 1
                staged += _stage_row(index, row, report, manifest.dimension)
                if progress is not None:
                    progress.files(done_files, files_total)
                if staged >= commit_every:
                    index.commit()
                    written += staged
                    staged = 0
                    if progress is not None:
                        progress.chunks(written, report.chunks_added)
        index.commit()
        if progress is not None:
            progress.chunks(report.chunks_added, report.chunks_added)


def _stage_row(
    index: VectorStore, row: dict[str, Any], report: IngestReport, dimension: int
) -> int:
    """Stage one file's result in ``index`` (or record why it was skipped); returns its chunks."""
    if row["error"] is not None:
        report.skipped.append(SkippedFile(source=row["source"], reason=row["error"]))
        return 0
    documents = _DOCUMENTS.validate_json(row["documents"])
    chunks = _CHUNKS.validate_json(row["chunks"])
    vectors = np.frombuffer(row["vectors"], dtype="<f4").reshape(len(chunks), dimension)
    index.replace_file(
        row["key"], row["source"], row["digest"], documents, chunks=chunks, vectors=vectors
    )
    record_indexed(report, documents, chunks)
    return len(chunks)
