"""The ``ragkit`` command line: parses arguments, calls the library, prints.

No logic lives here beyond presentation; every error the library raises for bad input is a
:class:`~ragkit.errors.RagkitError` and becomes one line on stderr with exit status 1.

Importing this module loads no model library (torch, transformers, sentence-transformers,
alignment): commands import what they need when they run, so ``--help`` and ``--version`` are
instant. Untrusted text (documents, model output, file names, messages quoting them) is printed
with :func:`_say` or as :func:`_text` cells: never parsed as rich markup or emoji codes, control
and bidi characters shown as symbols (:func:`ragkit.terminal.visible`); JSON goes through
:func:`_print_json` and keeps the exact text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ragkit.errors import RagkitError
from ragkit.terminal import terminal_json, visible

app = typer.Typer(
    name="ragkit",
    help="Retrieval-augmented question answering: index documents, search them, ask questions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Plain strings printed on these consoles are never read as markup or emoji codes; styling is
# done with Text objects.
out = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)

T = TypeVar("T")


def _text(value: str, *, one_line: bool = False) -> Text:
    """Untrusted text as a rich Text (no markup, no emoji codes), terminal-driving characters
    shown as symbols; ``one_line`` also shows newlines (file names, messages)."""
    return Text(visible(value, one_line=one_line))


def _say(message: str, *, console: Console = out, one_line: bool = False, end: str = "\n") -> None:
    """Print a line holding untrusted text: exactly what it says, nothing interpreted."""
    console.print(_text(message, one_line=one_line), end=end, soft_wrap=True)


def _print_json(value: Any) -> None:
    """Print JSON (a JSON string or data): exact text, escaped where a terminal would act on it."""
    out.print(JSONHighlighter()(Text(terminal_json(value))), soft_wrap=True)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("ragkit")
        except PackageNotFoundError:  # running from a source tree that is not installed
            from ragkit import __version__ as found
        _say(f"ragkit {found}")
        raise typer.Exit()


@app.callback()
def _main_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed ragkit version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Retrieval-augmented question answering: index documents, search them, ask questions."""


def _fail(message: str) -> None:
    err.print(
        Text.assemble(("error:", "bold red"), " ", _text(message, one_line=True)), soft_wrap=True
    )
    raise typer.Exit(code=1)


def _guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except RagkitError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(
            f"invalid setting {'.'.join(str(p) for p in first['loc']) or ''}: {first['msg']}".replace(
                ": Value error,", ":"
            )
        )
    except KeyboardInterrupt:
        _fail("interrupted; everything committed before this point is kept")
    raise AssertionError("unreachable")  # pragma: no cover


class _RichIngestProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.files_task = progress.add_task("reading files", total=None)
        self.chunks_task = progress.add_task("embedding chunks", total=None)

    def files(self, done: int, total: int) -> None:
        self.progress.update(self.files_task, completed=done, total=total)

    def chunks(self, done: int, total: int) -> None:
        self.progress.update(self.chunks_task, completed=done, total=total)


# Where an index lives: a directory (FAISS + SQLite) or a PostgreSQL + pgvector store.
IndexOption = Annotated[
    str,
    typer.Option(
        "--index",
        "-i",
        help="Index directory, or a postgresql://user@host/db[?schema=NAME] URL for a "
        "PostgreSQL + pgvector store (pip install 'ragkit[postgres]'; docs/postgres.md).",
    ),
]


@app.command("index")
def index_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders to index (folders recursively).")
    ],
    index: IndexOption,
    chunk_size: Annotated[
        int | None, typer.Option(help="Chunk size in --chunk-unit units.")
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(help="Overlap between neighbouring chunks.")
    ] = None,
    chunk_unit: Annotated[
        str, typer.Option(help="tokens (of the embedder's tokenizer) or chars.")
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
        str,
        typer.Option(
            help="auto (exact up to 50k vectors, HNSW above), flat (exact), hnsw, ivf or ivfpq "
            "(compressed, memory-mapped, for corpora beyond RAM); new indexes only."
        ),
    ] = "auto",
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 64,
    embed_backend: Annotated[
        str | None,
        typer.Option(
            help="auto (the fastest backend whose vectors stay within 0.99 cosine of fp32 on "
            "this machine; measured once, cached), torch, torch-bf16, onnx or onnx-int8. "
            "An existing index keeps the backend it was built with."
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="Remove indexed files under PATHS that no longer exist.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="local (this process: reading overlapped with embedding) or ray (load, chunk "
            "and embed on Ray workers, pip install 'ragkit[ray]'; docs/ray.md)."
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
    from ragkit.embedding.embedder import check_backend_name
    from ragkit.index import index_paths
    from ragkit.loaders import discover_files
    from ragkit.stores import is_postgres_url, open_or_create_store

    if chunk_unit not in ("tokens", "chars"):
        _fail(f"--chunk-unit must be 'tokens' or 'chars', got {chunk_unit!r}")
    if embed_backend is not None:
        try:
            check_backend_name(embed_backend)
        except ValueError as exc:
            _fail(f"--embed-backend: {exc}")
    if index_type not in ("auto", "flat", "hnsw", "ivf", "ivfpq"):
        _fail(f"--index-type must be auto, flat, hnsw, ivf or ivfpq, got {index_type!r}")
    if backend not in ("local", "ray"):
        _fail(f"--backend must be local or ray, got {backend!r}")
    if backend == "local" and (workers is not None or ray_address is not None):
        _fail("--workers and --ray-address apply to --backend ray only")
    if workers is not None and workers < 1:
        _fail(f"--workers must be positive, got {workers}")
    postgres = is_postgres_url(index)
    if backend == "ray" and postgres:
        _fail("--backend ray writes index directories; a PostgreSQL store is indexed locally")
    for path in paths:
        if not path.exists():
            _fail(f"path does not exist: {path}")

    def run() -> Any:
        discover_files(
            [str(p) for p in paths], include or (), exclude or ()
        )  # fail fast, before loading a model
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
        settings = ChunkingSettings.for_unit(chunk_unit, chunk_size, chunk_overlap)  # type: ignore[arg-type]
        # the same call for a directory or a postgresql:// URL; the chunking of an existing index
        # is checked only when given explicitly
        store = open_or_create_store(
            index,
            model,
            settings if explicit else None,
            index_type,  # type: ignore[arg-type]
        )
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
            if backend == "ray":
                from ragkit.index.ray_ingest import index_paths_ray

                return index_paths_ray(
                    store,
                    [str(p) for p in paths],
                    include or (),
                    exclude or (),
                    progress=_RichIngestProgress(progress),
                    prune=prune,
                    workers=workers,
                    address=ray_address,
                )
            return index_paths(
                store,
                [str(p) for p in paths],
                include or (),
                exclude or (),
                progress=_RichIngestProgress(progress),
                prune=prune,
            )

    with _LoaderWarnings() as warnings:
        report = _guard(run)
    if json_output:
        _print_json({**report.model_dump(mode="json"), "warnings": warnings})
    else:
        _say(
            f"indexed {report.files_indexed} file(s) ({report.documents} documents, {report.chunks_added} chunks), "
            f"{report.files_unchanged} unchanged, {len(report.skipped)} skipped"
            + (f", {report.files_removed} removed" if report.files_removed else "")
            + f"; index holds {report.chunks_total} chunks; {report.seconds:.1f} s"
        )
        for skipped in report.skipped:
            _say(f"skipped {skipped.source}: {skipped.reason}", console=err, one_line=True)
        for warning in warnings:
            _say(f"warning: {warning}", console=err, one_line=True)
    if report.skipped and not report.files_indexed and not report.files_unchanged:
        first = report.skipped[0]
        _fail(
            f"nothing was indexed: {first.source} was skipped ({first.reason})"
            if len(report.skipped) == 1
            else f"nothing was indexed: all {len(report.skipped)} files were skipped "
            f"(first: {first.source}: {first.reason})"
        )


class _LoaderWarnings(logging.Handler):
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


def _parse_filters(filters: list[str] | None) -> dict[str, Any] | None:
    """``key=value`` (JSON value if it parses, else string); repeat a key for ``in``."""
    if not filters:
        return None
    parsed: dict[str, Any] = {}
    for item in filters:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--filter must look like key=value, got {item!r}")
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


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    index: IndexOption,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 5,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Metadata filter key=value (repeat a key for 'in')."),
    ] = None,
    retriever: Annotated[
        str, typer.Option(help="hybrid (RRF of dense + BM25, the default), dense or bm25.")
    ] = "hybrid",
    json_output: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Print the chunks most similar to QUERY with their source and score."""
    from ragkit.retrieval import make_retriever
    from ragkit.stores import open_store

    if not query.strip():
        _fail("query is empty")
    if k <= 0:
        _fail(f"-k must be positive, got {k}")
    parsed = _parse_filters(filters)

    def run() -> Any:
        with open_store(index) as opened:
            return make_retriever(opened, retriever, k=k).search(query, k=k, filters=parsed)  # type: ignore[arg-type]

    hits = _guard(run)
    if json_output:
        _print_json([hit.to_json_dict() for hit in hits])
        return
    if not hits:
        _say("no results")
        return
    out.print(_hits_table(hits))


def _snippet(text: str, limit: int) -> str:
    """Whitespace runs folded to one space, cut at ``limit`` characters (marked with …)."""
    snippet = " ".join(text.split())
    return snippet[:limit] + ("…" if len(snippet) > limit else "")


def _hits_table(hits: list[Any]) -> Table:
    """``ragkit search``'s table: rank, score, source with span (and page), text snippet."""
    table = Table(show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source")
    table.add_column("text")
    for hit in hits:
        where = _text(hit.chunk.source, one_line=True)
        where.append(f"\n[{hit.chunk.start}:{hit.chunk.end}]")
        if "page" in hit.chunk.metadata:
            where.append_text(_text(f" p.{hit.chunk.metadata['page']}", one_line=True))
        table.add_row(
            str(hit.rank + 1), f"{hit.score:.3f}", where, _text(_snippet(hit.chunk.text, 300))
        )
    return table


@app.command("info")
def info_command(
    index: IndexOption,
) -> None:
    """Print an index's manifest (embedder, dimension, chunking, counts)."""
    from ragkit.index.manifest import IndexManifest
    from ragkit.stores import is_postgres_url, open_store

    def run() -> IndexManifest:
        if not is_postgres_url(index):
            return IndexManifest.load(Path(index))  # no model load for a directory
        with open_store(index) as opened:
            return opened.manifest.model_copy(update={"counts": opened.counts()})

    _print_json(_guard(run).model_dump_json())


@app.command("delete")
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

    count = _guard(run)
    _say(f"deleted {count} document(s)")


def _print_sources(answer: Any) -> None:
    """The cited sources, then the trace notes: one account of what is and is not cited."""
    if answer.citations:
        _say("\nSources:")
    elif not answer.abstained:
        _say("(no sources cited)", console=err)
    for c in answer.citations:
        source = visible(c.source, one_line=True)
        if c.quote is not None:
            quote = _snippet(c.quote, 160)
            _say(f"  [{c.n}] {source} [{c.quote_start}:{c.quote_end}] quotes: {quote}")
            _say(f"      in passage [{c.start}:{c.end}]: {_snippet(c.text, 160)}")
            continue
        flag = " (inferred: the passage contains the whole answer)" if c.inferred else ""
        _say(f"  [{c.n}] {source} [{c.start}:{c.end}]{flag}: {_snippet(c.text, 160)}")
    for note in answer.trace.notes if answer.trace else []:
        _say(f"note: {note}", console=err)


from ragkit.server.cli import (  # noqa: E402  (shared with serve; imports no FastAPI)
    AdapterOption,
    ApiKeyEnvOption,
    BaseUrlOption,
    DecodingOption,
    GeneratorBackendOption,
)


def _rag(
    index: str,
    generator: str | None,
    k: int,
    max_new_tokens: int | None,
    retriever: str = "hybrid",
    strategy: str = "plain",
    backend: str = "transformers",
    base_url: str | None = None,
    api_key_env: str | None = None,
    adapter: str | None = None,
    decoding: str | None = None,
) -> Any:
    from ragkit.rag import answering_pipeline

    return answering_pipeline(
        index,
        generator=generator,
        k=k,
        retriever=retriever,
        strategy=strategy,
        decoding=decoding,
        adapter=adapter,
        max_new_tokens=max_new_tokens,
        backend=backend,
        base_url=base_url,
        api_key_env=api_key_env,
    )


@app.command("ask")
def ask_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    index: IndexOption,
    k: Annotated[int, typer.Option("-k", help="Passages to retrieve.")] = 4,
    generator: Annotated[
        str | None,
        typer.Option(
            help="Generator: HF id or local path (default: packaged SmolLM2-135M-Instruct); "
            "with --generator-backend openai, the model name on the server."
        ),
    ] = None,
    generator_backend: GeneratorBackendOption = "transformers",
    adapter: AdapterOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print the answer as it is generated.")
    ] = True,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens to generate (default: the generator's profile).")
    ] = None,
    decoding: DecodingOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print answer, citations and trace as JSON.")
    ] = False,
    show_trace: Annotated[
        bool, typer.Option("--trace", help="Print the trace (steps, timings, final prompt).")
    ] = False,
    retriever: Annotated[
        str, typer.Option(help="hybrid (RRF of dense + BM25, the default), dense or bm25.")
    ] = "hybrid",
    strategy: Annotated[
        str, typer.Option(help="plain, fewshot, cot, self-consistency or least-to-most.")
    ] = "plain",
) -> None:
    """Answer QUESTION from the index, citing the passages used."""
    if not question.strip():
        _fail("question is empty")

    def run() -> Any:
        rag = _rag(
            index,
            generator,
            k,
            max_new_tokens,
            retriever,
            strategy,
            generator_backend,
            base_url,
            api_key_env,
            adapter,
            decoding,
        )
        if json_output or not stream:
            return rag.ask(question)
        answer_stream = rag.stream(question)
        for piece in answer_stream:
            _say(piece, end="")
        out.print()
        return answer_stream.answer

    answer = _guard(run)
    if json_output:
        _print_json(answer.to_json_dict())
        return
    if not stream:
        _say(answer.answer)
    _print_sources(answer)
    if show_trace and answer.trace is not None:
        _say(answer.trace.to_text(), console=err)


@app.command("chat")
def chat_command(
    index: IndexOption,
    k: Annotated[int, typer.Option("-k", help="Passages to retrieve.")] = 4,
    generator: Annotated[
        str | None,
        typer.Option(
            help="Generator: HF id or local path; with --generator-backend openai, the model "
            "name on the server."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens per answer (default: the generator's profile).")
    ] = None,
    generator_backend: GeneratorBackendOption = "transformers",
    adapter: AdapterOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    decoding: DecodingOption = None,
) -> None:
    """A multi-turn session: follow-up questions are rewritten using the conversation."""
    from ragkit.rag import ChatSession

    session = _guard(
        lambda: ChatSession(
            _rag(
                index,
                generator,
                k,
                max_new_tokens,
                backend=generator_backend,
                base_url=base_url,
                api_key_env=api_key_env,
                adapter=adapter,
                decoding=decoding,
            )
        )
    )
    _say("ragkit chat: ask a question (empty line, 'exit' or Ctrl-D to quit)", console=err)
    while True:
        try:
            question = input("> ")
        except EOFError:
            break
        if not question.strip() or question.strip().lower() in {"exit", "quit"}:
            break
        answer = _guard(lambda q=question: session.ask(q))  # type: ignore[misc]
        _say(answer.answer)
        _print_sources(answer)


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="SQuAD JSON, a BEIR folder, or a JSONL of questions.")
    ],
    dataset_format: Annotated[
        str | None, typer.Option("--format", help="squad, beir or jsonl (default: from the path).")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            "-i",
            help="Evaluate against this index (default: index the dataset's own corpus).",
        ),
    ] = None,
    retriever: Annotated[str, typer.Option(help="hybrid (default), dense or bm25.")] = "hybrid",
    rerank: Annotated[
        str | None, typer.Option(help="Cross-encoder model (HF id or local path) to rerank with.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Passages retrieved per question (scored).")] = 10,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate", help="Also answer with the generator: EM/F1, abstention, citations."
        ),
    ] = False,
    generate_k: Annotated[
        int, typer.Option(help="Passages the generator reads (as `ask -k`).")
    ] = 4,
    generator: Annotated[
        str | None,
        typer.Option(help="Generator for --generate (default: the packaged Gemma 3 270M)."),
    ] = None,
    generator_backend: GeneratorBackendOption = "transformers",
    adapter: AdapterOption = None,
    strategy: Annotated[
        str, typer.Option(help="plain, fewshot, cot, self-consistency or least-to-most.")
    ] = "plain",
    decoding: DecodingOption = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens per answer (default: the generator's profile).")
    ] = None,
    embedder: Annotated[
        str | None, typer.Option(help="Embedder when indexing the dataset's corpus.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N questions.")] = None,
    failures: Annotated[
        Path | None, typer.Option(help="Write per-question failures as JSONL here.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Measure retrieval (recall@1/5/10, MRR@10, nDCG@10) and, with --generate, answers.

    Answers are produced exactly as `ragkit ask` produces them (same pipeline builder, one
    question at a time), so the reported latency percentiles are `ask`'s.
    """
    from ragkit.evaluation import run_evaluation, write_failures

    if dataset_format not in (None, "squad", "beir", "jsonl"):
        _fail(f"--format must be squad, beir or jsonl, got {dataset_format!r}")
    if k <= 0:
        _fail(f"-k must be positive, got {k}")
    reported = {"step": -1}

    def progress(done: int, total: int) -> None:
        # always on stderr (also with --json): a long generation run must not look hung
        step = done * 20 // max(total, 1)
        if step != reported["step"] or done == total:
            reported["step"] = step
            err.print(f"evaluating: {done}/{total}", highlight=False, markup=False)

    def run() -> Any:
        return run_evaluation(
            dataset,
            dataset_format=dataset_format,  # type: ignore[arg-type]
            index=index,
            retriever=retriever,
            rerank=rerank,
            k=k,
            generate=generate,
            generate_k=generate_k,
            generator=generator,
            adapter=adapter,
            strategy=strategy,
            decoding=decoding,
            backend=generator_backend,
            max_new_tokens=max_new_tokens,
            embedder=embedder,
            limit=limit,
            progress=progress,
        )

    report = _guard(run)
    if failures is not None:
        write_failures(report, failures)
    if json_output:
        _print_json(report.model_dump_json(exclude={"failures"}))
        return
    table = Table(
        title=_text(
            f"{report.dataset}: {report.questions} questions ({report.unanswerable} unanswerable), retriever {report.retriever}",
            one_line=True,
        )
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report.retrieval.items():
        table.add_row(name, f"{value:.3f}" if name != "questions_scored" else str(int(value)))
    for name, value in (report.generation or {}).items():
        table.add_row(
            name, f"{value:.3f}" if name not in ("answered", "unanswerable") else str(int(value))
        )
    out.print(table)
    _say(f"{len(report.failures)} failure(s); {report.seconds:.1f} s")


from ragkit.server.cli import feedback_export_command, serve_command  # noqa: E402  (FastAPI loads lazily)

app.command("serve")(serve_command)
feedback_app = typer.Typer(help="Feedback collected by the server.", no_args_is_help=True)
feedback_app.command("export")(feedback_export_command)
app.add_typer(feedback_app, name="feedback")


align_app = typer.Typer(
    help="RLHF jobs: supervised fine-tuning, reward-model training and PPO.", no_args_is_help=True
)
app.add_typer(align_app, name="align")


def _align_config(
    kind: str, config: Path | None, output: Path | None, limit: int | None, model: str | None
) -> Any:
    from alignment import RewardJobConfig, SFTJobConfig, load_config
    from alignment.config import override

    cls: Any = RewardJobConfig if kind == "reward" else SFTJobConfig
    loaded = load_config(cls, config) if config is not None else cls()
    return override(
        loaded, {"output_dir": output, "data.limit": limit, "model.name_or_path": model}
    )


AlignConfig = Annotated[
    Path | None, typer.Option("--config", help="Job config (YAML); examples in examples/configs/.")
]
AlignResume = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")]
AlignOutput = Annotated[Path | None, typer.Option(help="Output folder (overrides output_dir).")]
AlignLimit = Annotated[int | None, typer.Option(help="Use only the first N records (quick run).")]
AlignModel = Annotated[
    str | None, typer.Option(help="Model: HF id or local folder (default: packaged SmolLM2).")
]


def _run_align(
    kind: str,
    config: Path | None,
    resume: bool,
    output: Path | None,
    limit: int | None,
    model: str | None,
    feedback: tuple[Path, str] | None = None,
) -> None:
    import alignment

    train = alignment.train_reward_model if kind == "reward" else alignment.train_sft
    job = _guard(lambda: _align_config(kind, config, output, limit, model))
    extra: dict[str, Any] = {}
    if feedback is not None:  # reward only: the feedback store's pairs replace data.path
        from alignment.jobs import reward_config_from_feedback

        db, style = feedback
        job, pairs = _guard(
            lambda: reward_config_from_feedback(job, db, prompt_style=style, resume=resume)
        )
        extra["feedback"] = {"db": str(db), "pairs": pairs, "data": str(job.data.path)}
    result = _guard(lambda: train(job, resume=resume))
    _print_json(json.dumps({**result.summary(), **extra}, default=str))


@align_app.command("reward")
def align_reward_command(
    config: AlignConfig = None,
    resume: AlignResume = False,
    output: AlignOutput = None,
    limit: AlignLimit = None,
    model: AlignModel = None,
    from_feedback: Annotated[
        Path | None,
        typer.Option(
            "--from-feedback",
            help="Train on the preference pairs of this feedback store (the SQLite file of "
            "`ragkit serve --feedback-db`) instead of data.path.",
        ),
    ] = None,
    feedback_prompt: Annotated[
        str,
        typer.Option(help="With --from-feedback: 'passages' (passages + question) or 'question'."),
    ] = "passages",
) -> None:
    """Train a pairwise (Bradley-Terry) reward model on preference pairs."""
    feedback = (from_feedback, feedback_prompt) if from_feedback is not None else None
    _run_align("reward", config, resume, output, limit, model, feedback)


@align_app.command("sft")
def align_sft_command(
    config: AlignConfig = None,
    resume: AlignResume = False,
    output: AlignOutput = None,
    limit: AlignLimit = None,
    model: AlignModel = None,
) -> None:
    """Supervised fine-tuning on demonstrations (loss on response tokens only)."""
    _run_align("sft", config, resume, output, limit, model)


@align_app.command("ppo")
def align_ppo_command(
    config: Annotated[
        Path,
        typer.Option("--config", help="Job config (YAML); see examples/configs/ppo.yaml."),
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Output folder (overrides output_dir).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Read only the first N prompt records.")
    ] = None,
) -> None:
    """PPO fine-tuning of the generator against a reward model (InstructGPT step 3)."""
    # The same options as alignment.ppo.cli's command, which runs the job: importing it at
    # module level would import alignment (and torch) for every ragkit command.
    from alignment.ppo.cli import align_ppo_command as run_ppo

    run_ppo(config, resume=resume, output=output, limit=limit)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - `ragkit search ... | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
