"""The ``ragkit`` command line: parses arguments, calls the library, prints.

No logic lives here beyond presentation; every error the library raises for bad input is a
:class:`~ragkit.errors.RagkitError` and becomes one line on stderr with exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragkit.errors import RagkitError

app = typer.Typer(
    name="ragkit",
    help="Retrieval-augmented question answering: index documents, search them, ask questions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

T = TypeVar("T")


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
        store: Any = open_or_create_store(
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

    report = _guard(run)
    if json_output:
        out.print_json(report.model_dump_json())
        return
    out.print(
        f"indexed {report.files_indexed} file(s) ({report.documents} documents, {report.chunks_added} chunks), "
        f"{report.files_unchanged} unchanged, {len(report.skipped)} skipped"
        + (f", {report.files_removed} removed" if report.files_removed else "")
        + f"; index holds {report.chunks_total} chunks; {report.seconds:.1f} s",
        highlight=False,
    )
    for skipped in report.skipped:
        err.print(f"skipped {skipped.source}: {skipped.reason}", highlight=False, soft_wrap=True)


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
        out.print_json(json.dumps([hit.to_json_dict() for hit in hits]))
        return
    if not hits:
        out.print("no results")
        return
    table = Table(show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source")
    table.add_column("text")
    for hit in hits:
        where = f"{hit.chunk.source}\n[{hit.chunk.start}:{hit.chunk.end}]"
        if "page" in hit.chunk.metadata:
            where += f" p.{hit.chunk.metadata['page']}"
        snippet = " ".join(hit.chunk.text.split())
        table.add_row(
            str(hit.rank + 1),
            f"{hit.score:.3f}",
            where,
            snippet[:300] + ("…" if len(snippet) > 300 else ""),
        )
    out.print(table)


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

    out.print_json(_guard(run).model_dump_json())


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
    out.print(f"deleted {count} document(s)")


def _print_sources(answer: Any) -> None:
    if not answer.citations:
        err.print("(no sources cited)", highlight=False)
        return
    out.print("\nSources:", highlight=False)
    for c in answer.citations:
        flag = " (inferred)" if c.inferred else ""
        snippet = " ".join(c.text.split())
        out.print(
            f"  [{c.n}] {c.source} [{c.start}:{c.end}]{flag}: {snippet[:160]}{'…' if len(snippet) > 160 else ''}",
            highlight=False,
            soft_wrap=True,
        )
    for note in answer.trace.notes if answer.trace else []:
        err.print(f"note: {note}", highlight=False, soft_wrap=True)


from ragkit.server.cli import (  # noqa: E402  (shared with serve; imports no FastAPI)
    AdapterOption,
    ApiKeyEnvOption,
    BaseUrlOption,
    GeneratorBackendOption,
)


def _rag(
    index: str,
    generator: str | None,
    k: int,
    max_new_tokens: int,
    retriever: str = "hybrid",
    strategy: str = "plain",
    backend: str = "transformers",
    base_url: str | None = None,
    api_key_env: str | None = None,
    adapter: str | None = None,
) -> Any:
    from ragkit.generation import make_generator
    from ragkit.rag import STRATEGIES, RAGPipeline

    if k <= 0:
        raise RagkitError(f"-k must be positive, got {k}")
    if strategy not in STRATEGIES:
        raise RagkitError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    model = make_generator(
        backend, generator, base_url=base_url, api_key_env=api_key_env, adapter=adapter
    )
    return RAGPipeline.from_index(
        index,
        generator=model,
        k=k,
        retriever=retriever,  # type: ignore[arg-type]
        options={"max_new_tokens": max_new_tokens},
        strategy=strategy,
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
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
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
        )
        if json_output or not stream:
            return rag.ask(question)
        answer_stream = rag.stream(question)
        for piece in answer_stream:
            out.print(piece, end="", highlight=False, markup=False, soft_wrap=True)
        out.print()
        return answer_stream.answer

    answer = _guard(run)
    if json_output:
        out.print_json(json.dumps(answer.to_json_dict()))
        return
    if not stream:
        out.print(answer.answer, highlight=False, markup=False, soft_wrap=True)
    elif answer.citations and any(c.inferred for c in answer.citations):
        out.print(
            f"(cited: {answer.answer[answer.answer.rfind('[') :]})", highlight=False, markup=False
        )
    _print_sources(answer)
    if show_trace and answer.trace is not None:
        err.print(answer.trace.to_text(), highlight=False, markup=False, soft_wrap=True)


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
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 128,
    generator_backend: GeneratorBackendOption = "transformers",
    adapter: AdapterOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
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
            )
        )
    )
    err.print("ragkit chat: ask a question (empty line, 'exit' or Ctrl-D to quit)", highlight=False)
    while True:
        try:
            question = input("> ")
        except EOFError:
            break
        if not question.strip() or question.strip().lower() in {"exit", "quit"}:
            break
        answer = _guard(lambda q=question: session.ask(q))  # type: ignore[misc]
        out.print(answer.answer, highlight=False, markup=False, soft_wrap=True)
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
    k: Annotated[int, typer.Option("-k", help="Passages retrieved per question.")] = 10,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate", help="Also answer with the generator: EM/F1, abstention, citations."
        ),
    ] = False,
    generator: Annotated[
        str | None, typer.Option(help="Generator for --generate (default: packaged SmolLM2).")
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
    """Measure retrieval (recall@1/5/10, MRR@10, nDCG@10) and, with --generate, answers."""
    import tempfile

    from ragkit.embedding import Embedder
    from ragkit.evaluation import evaluate, load_dataset, write_failures
    from ragkit.index import Index
    from ragkit.retrieval import CrossEncoderReranker, RerankedRetriever, make_retriever

    if dataset_format not in (None, "squad", "beir", "jsonl"):
        _fail(f"--format must be squad, beir or jsonl, got {dataset_format!r}")
    if k <= 0:
        _fail(f"-k must be positive, got {k}")

    def run() -> Any:
        data = load_dataset(dataset, dataset_format)  # type: ignore[arg-type]
        if not data.questions:
            raise RagkitError(f"{dataset} holds no questions")
        with tempfile.TemporaryDirectory(prefix="ragkit-eval-") as scratch:
            if index is None:
                if not data.corpus:
                    raise RagkitError(f"{data.format} datasets have no corpus: pass --index")
                opened = Index.create(Path(scratch) / "index", Embedder(embedder))
                opened.add_documents(data.corpus)
                opened.commit()
                unit = "document"
            else:
                opened = Index.open(index)
                unit = "chunk" if data.format == "squad" else "document"
            with (
                opened,
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
                task = progress.add_task("evaluating", total=None)
                base: Any = make_retriever(opened, retriever, k=k)  # type: ignore[arg-type]
                if rerank:
                    base = RerankedRetriever(
                        base, CrossEncoderReranker(rerank, k=k), candidates=max(20, 2 * k)
                    )
                rag = None
                if generate:
                    from ragkit.rag import RAGPipeline

                    rag = RAGPipeline(base, generator, options={"max_new_tokens": 48})
                return evaluate(
                    data,
                    base,
                    k=k,
                    unit=unit,  # type: ignore[arg-type]
                    index=opened,
                    rag=rag,
                    limit=limit,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )

    report = _guard(run)
    if failures is not None:
        write_failures(report, failures)
    if json_output:
        out.print_json(report.model_dump_json(exclude={"failures"}))
        return
    table = Table(
        title=f"{report.dataset}: {report.questions} questions ({report.unanswerable} unanswerable), retriever {report.retriever}"
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
    out.print(f"{len(report.failures)} failure(s); {report.seconds:.1f} s", highlight=False)


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
    out.print_json(json.dumps({**result.summary(), **extra}, default=str))


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


from alignment.ppo.cli import align_ppo_command  # noqa: E402  (torch loads lazily)

align_app.command("ppo")(align_ppo_command)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - `ragkit search ... | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
