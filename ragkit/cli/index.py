"""``ragkit index``, ``search``, ``info`` and ``delete``: building and reading an index."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragkit.chunking import ChunkUnit
from ragkit.cli.common import err, fail, guard, out, print_json, say, snippet, text
from ragkit.cli.options import IndexOption, RetrieverOption
from ragkit.errors import RagkitError
from ragkit.index import IndexType

# ``auto`` and the embedding backends of ragkit.embedding (BACKEND_NAMES; a test keeps the two
# in step): spelled out because typer needs the choices as a type.
EmbedBackendChoice = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
IngestBackend = Literal["local", "ray"]


class _RichIngestProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.files_task = progress.add_task("reading files", total=None)
        self.chunks_task = progress.add_task("embedding chunks", total=None)

    def files(self, done: int, total: int) -> None:
        self.progress.update(self.files_task, completed=done, total=total)

    def chunks(self, done: int, total: int) -> None:
        self.progress.update(self.chunks_task, completed=done, total=total)


class LoaderWarnings(logging.Handler):
    """Collects the loaders' warnings during ``ragkit index`` (JSONL lines skipped...) for the
    report, instead of letting them reach the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger("ragkit.loaders")
        self._propagate = self._logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:
            self.handleError(record)

    def __enter__(self) -> list[str]:
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self.messages

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _named_paths(paths: list[str]) -> list[str]:
    """Typed as ``Path``, an empty argument would be the current folder (``Path("")`` is ".")
    and index whatever is there; a path must be named."""
    if any(not p.strip() for p in paths):
        raise typer.BadParameter("a path is empty: name the files or folders to index")
    return paths


def index_command(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files or folders to index (folders recursively).", callback=_named_paths
        ),
    ],
    index: IndexOption,
    chunk_size: Annotated[
        int | None, typer.Option(help="Chunk size in --chunk-unit units.")
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(help="Overlap between neighbouring chunks.")
    ] = None,
    chunk_unit: Annotated[
        ChunkUnit, typer.Option(help="tokens (of the embedder's tokenizer) or chars.")
    ] = "tokens",
    embedder: Annotated[
        str | None,
        typer.Option(
            help="Embedding model: HF id or local path (default: packaged all-MiniLM-L6-v2)."
        ),
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Glob of files to include (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Glob of files to exclude (repeatable).")
    ] = None,
    index_type: Annotated[
        IndexType,
        typer.Option(
            help="auto (exact up to 50k vectors, HNSW above), flat (exact), hnsw, ivf or ivfpq "
            "(compressed, memory-mapped, for corpora beyond RAM); new indexes only."
        ),
    ] = "auto",
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 64,
    embed_backend: Annotated[
        EmbedBackendChoice | None,
        typer.Option(
            help="auto (the fastest backend whose vectors stay within 0.99 cosine of fp32 on "
            "this machine; measured once, cached), torch, torch-bf16, onnx or onnx-int8. "
            "An existing index keeps the backend it was built with.",
            case_sensitive=False,
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="Remove indexed files under PATHS that no longer exist.")
    ] = False,
    backend: Annotated[
        IngestBackend,
        typer.Option(
            help="local (this process: reading overlapped with embedding) or ray (load, chunk "
            "and embed on Ray workers, pip install 'ragkit\\[ray]'; docs/ray.md)."
        ),
    ] = "local",
    workers: Annotated[
        int | None, typer.Option(help="ray: embedding actors (default: the cluster's CPUs).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="ray: cluster address (default $RAY_ADDRESS, else a local Ray)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Index files into DIR (or a PostgreSQL store); unchanged files are not re-embedded."""
    from ragkit.chunking import ChunkingSettings
    from ragkit.embedding import Embedder
    from ragkit.index import index_paths
    from ragkit.loaders import discover_files
    from ragkit.stores import is_postgres_url, open_or_create_store

    if backend == "local" and (workers is not None or ray_address is not None):
        fail("--workers and --ray-address apply to --backend ray only")
    if workers is not None and workers < 1:
        fail(f"--workers must be positive, got {workers}")
    if batch_size < 1:  # 0 was a ZeroDivision-like traceback mid-index; -1 was accepted
        fail(f"--batch-size must be positive, got {batch_size}")
    if backend == "ray" and is_postgres_url(index):
        fail("--backend ray writes index directories; a PostgreSQL store is indexed locally")
    for path in paths:
        if not Path(path).exists():
            fail(f"path does not exist: {path}")
    sources = list(paths)

    def run() -> Any:
        discover_files(sources, include or (), exclude or ())  # fail fast, before loading a model
        if backend == "ray":
            from ragkit.index.ray_ingest import require_ray

            require_ray()
        # Without --embedder/--embed-backend an existing index keeps the model it was built
        # with (a new one gets the default); naming another model is refused on open.
        model = (
            Embedder(embedder, backend=embed_backend)
            if embedder is not None or embed_backend is not None
            else None
        )
        explicit = chunk_size is not None or chunk_overlap is not None or chunk_unit != "tokens"
        settings = ChunkingSettings.for_unit(chunk_unit, chunk_size, chunk_overlap)
        # the same call for a directory or a postgresql:// URL; the chunking of an existing index
        # is checked only when given explicitly
        store = open_or_create_store(index, model, settings if explicit else None, index_type)
        store.embedder.batch_size = batch_size
        with (
            store,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=json_output or not err.is_terminal,
            ) as progress,
        ):
            ingest: Callable[..., Any] = index_paths
            if backend == "ray":
                from ragkit.index.ray_ingest import index_paths_ray

                ingest = partial(index_paths_ray, workers=workers, address=ray_address)
            return ingest(
                store,
                sources,
                include or (),
                exclude or (),
                progress=_RichIngestProgress(progress),
                prune=prune,
            )

    with LoaderWarnings() as warnings:
        report = guard(run)
    if json_output:
        print_json({**report.model_dump(mode="json"), "warnings": warnings})
    else:
        say(
            f"indexed {report.files_indexed} file(s) ({report.documents} documents, {report.chunks_added} chunks), "
            f"{report.files_unchanged} unchanged, {len(report.skipped)} skipped"
            + (f", {report.files_removed} removed" if report.files_removed else "")
            + f"; index holds {report.chunks_total} chunks; {report.seconds:.1f} s"
        )
        for skipped in report.skipped:
            say(f"skipped {skipped.source}: {skipped.reason}", console=err, one_line=True)
        for warning in warnings:
            say(f"warning: {warning}", console=err, one_line=True)
    if report.skipped and not report.files_indexed and not report.files_unchanged:
        first = report.skipped[0]
        fail(
            f"nothing was indexed: {first.source} was skipped ({first.reason})"
            if len(report.skipped) == 1
            else f"nothing was indexed: all {len(report.skipped)} files were skipped "
            f"(first: {first.source}: {first.reason})"
        )


def _parse_filters(filters: list[str] | None) -> dict[str, Any] | None:
    """``key=value`` (JSON value if it parses, else string); repeat a key for ``in``."""
    if not filters:
        return None
    parsed: dict[str, Any] = {}
    for item in filters:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--filter must look like key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key in parsed:
            previous = parsed[key]
            parsed[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            parsed[key] = value
    return parsed


def search_command(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    index: IndexOption,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 5,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Metadata filter key=value (repeat a key for 'in')."),
    ] = None,
    retriever: RetrieverOption = "hybrid",
    json_output: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Print the chunks most similar to QUERY with their source and score."""
    from ragkit.retrieval import make_retriever
    from ragkit.stores import open_store

    if not query.strip():
        fail("query is empty")
    if k <= 0:
        fail(f"-k must be positive, got {k}")
    parsed = _parse_filters(filters)

    def run() -> Any:
        with open_store(index) as opened:
            return make_retriever(opened, retriever, k=k).search(query, k=k, filters=parsed)

    hits = guard(run)
    if json_output:
        print_json([hit.to_json_dict() for hit in hits])
        return
    if not hits:
        say("no results")
        return
    out.print(hits_table(hits))


def hits_table(hits: list[Any]) -> Table:
    """``ragkit search``'s table: rank, score, source with span (and page), text snippet."""
    table = Table(show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source")
    table.add_column("text")
    for hit in hits:
        where = text(hit.chunk.source, one_line=True)
        where.append(f"\n[{hit.chunk.start}:{hit.chunk.end}]")
        if "page" in hit.chunk.metadata:
            where.append_text(text(f" p.{hit.chunk.metadata['page']}", one_line=True))
        table.add_row(
            str(hit.rank + 1), f"{hit.score:.3f}", where, text(snippet(hit.chunk.text, 300))
        )
    return table


def info_command(index: IndexOption) -> None:
    """Print an index's manifest (embedder, dimension, chunking, counts)."""
    from ragkit.index.manifest import IndexManifest
    from ragkit.stores import is_postgres_url, open_store

    def run() -> IndexManifest:
        if not is_postgres_url(index):
            return IndexManifest.load(Path(index))  # no model load for a directory
        with open_store(index) as opened:
            return opened.manifest.model_copy(update={"counts": opened.counts()})

    print_json(guard(run).model_dump_json())


def delete_command(
    document_ids: Annotated[list[str], typer.Argument(help="Document ids to delete.")],
    index: IndexOption,
) -> None:
    """Delete documents (and their chunks) by id."""
    from ragkit.stores import open_store

    def run() -> int:
        with open_store(index) as opened:
            missing = [d for d in document_ids if opened.document(d) is None]
            if missing:
                raise RagkitError(f"no such document in {index}: {missing[0]}")
            opened.delete_documents(document_ids)
            opened.commit()
            return len(document_ids)

    count = guard(run)
    say(f"deleted {count} document(s)")
