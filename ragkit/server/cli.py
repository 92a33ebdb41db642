"""``ragkit serve`` and ``ragkit feedback export``: argument parsing only.

Registered in :mod:`ragkit.cli` (``app.command("serve")(serve_command)`` and a ``feedback``
sub-app); kept here so the CLI module does not import FastAPI unless the command runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from pydantic import ValidationError

from ragkit.errors import RagkitError
from ragkit.terminal import protect_logger, visible

log = logging.getLogger("ragkit.server")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {visible(message, one_line=True)}", err=True)
    raise typer.Exit(code=1)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where + ': ' if where else ''}{first['msg']}".replace("Value error, ", "")


# Generator-backend options, shared by ``ask``, ``chat`` (ragkit.cli) and ``serve``.
GeneratorBackendOption = Annotated[
    str,
    typer.Option(
        "--generator-backend",
        help="transformers (in-process, the default), openai (an OpenAI-compatible server such "
        "as vllm serve; --generator is then the served model's name) or vllm (in-process vLLM "
        "engine: needs the ragkit vllm extra and a GPU). See docs/backends.md.",
    ),
]
AdapterOption = Annotated[
    str | None,
    typer.Option(
        help="transformers backend: a LoRA adapter merged into the generator at load time: "
        "grounded-qa (the packaged grounded-QA adapter of the chosen packaged model; the "
        "default for the packaged Gemma 3 270M), grounded-qa-gemma, grounded-qa-smollm2, a peft "
        "adapter folder (e.g. the adapter/ of a LoRA `ragkit align sft` run), or none."
    ),
]
DecodingOption = Annotated[
    str | None,
    typer.Option(
        help="grounded: the answer is a verbatim span of one passage (or an abstention), cited "
        "by its exact offsets; free: the model writes freely and cites with [n]. Default: the "
        "generator's profile (grounded for the packaged Gemma 3 270M)."
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        help="openai backend: the server's API root (default $OPENAI_BASE_URL, "
        "else http://127.0.0.1:8000/v1)."
    ),
]
ApiKeyEnvOption = Annotated[
    str | None,
    typer.Option(
        help="openai backend: environment variable holding the server's API key "
        "(default OPENAI_API_KEY; keys are never taken on the command line)."
    ),
]


def serve_command(
    index: Annotated[
        str,
        typer.Option(
            "--index",
            "-i",
            help="Index directory to answer from, or a postgresql:// URL (docs/postgres.md).",
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Interface to bind; anything but loopback requires an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator",
            "-g",
            help="Model: default the packaged Gemma 3 270M; smollm2; a hub id or a path.",
        ),
    ] = None,
    generator_backend: GeneratorBackendOption = "transformers",
    adapter: AdapterOption = None,
    decoding: DecodingOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File with API keys, one a line (RAGKIT_API_KEY is also read)."),
    ] = None,
    retriever: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "hybrid",
    k: Annotated[int, typer.Option("-k", help="Passages per question.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask.")] = 512,
    feedback_db: Annotated[
        Path | None, typer.Option(help="SQLite file recording answers and feedback.")
    ] = None,
    batch_wait_ms: Annotated[
        float, typer.Option(help="Dynamic batching window in milliseconds.")
    ] = 10.0,
    max_batch_size: Annotated[int, typer.Option(help="Most questions per generation.")] = 16,
    no_batching: Annotated[
        bool, typer.Option("--no-batching", help="One question per generation call.")
    ] = False,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute per key; 0 disables.")] = 120,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow this origin via CORS (repeatable).")
    ] = None,
) -> None:
    """Serve the index over HTTP: query/search API, OpenAI-compatible chat, chat page at /."""
    import uvicorn

    from ragkit.rag import answering_pipeline
    from ragkit.retrieval import RetrieverKind
    from ragkit.server.app import create_app
    from ragkit.server.auth import load_api_keys
    from ragkit.server.settings import ServerSettings

    if retriever not in ("dense", "bm25", "hybrid"):
        _fail(f"unknown retriever {retriever!r} (use dense, bm25 or hybrid)")
    kind: RetrieverKind = retriever  # type: ignore[assignment]
    try:
        settings = ServerSettings(
            host=host,
            port=port,
            api_keys=load_api_keys(api_key_file),
            max_tokens=max_tokens,
            feedback_db=feedback_db,
            batch_wait_ms=batch_wait_ms,
            max_batch_size=max_batch_size,
            batching=not no_batching,
            rate_limit_per_minute=rate_limit or None,
            cors_origins=tuple(cors_origin or ()),
        )
        rag = answering_pipeline(
            index,
            generator=generator,
            k=k,
            retriever=kind,
            decoding=decoding,
            adapter=adapter,
            backend=generator_backend,
            base_url=base_url,
            api_key_env=api_key_env,
        )
        model_name = rag.generator.config.model or "the default model"
        typer.echo(f"loading {visible(model_name, one_line=True)} ...", err=True)
        rag.generator.warm_up()
        app = create_app(rag, settings)
    except ValidationError as exc:
        _fail(_validation_message(exc))
    except RagkitError as exc:
        _fail(str(exc))
    auth = "API key required" if settings.auth_required else "no API key (loopback only)"
    typer.echo(
        visible(f"serving {index} on http://{host}:{port} ({auth})", one_line=True), err=True
    )
    for name in ("ragkit.server", "uvicorn.error"):  # tracebacks may quote untrusted text
        protect_logger(name)
    uvicorn.run(app, host=host, port=port, log_level="info")


def feedback_export_command(
    db: Annotated[Path, typer.Argument(help="Feedback store (SQLite) written by the server.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    format: Annotated[str, typer.Option("--format", help="Output format (jsonl).")] = "jsonl",
    prompt: Annotated[
        str, typer.Option(help="'passages': passages + question as the prompt; 'question'.")
    ] = "passages",
) -> None:
    """Write preference pairs (choices and up/down votes) as JSONL for reward-model training."""
    from ragkit.feedback import export_preferences

    if format != "jsonl":
        _fail(f"unknown format {format!r} (only jsonl)")
    if prompt not in ("passages", "question"):
        _fail(f"unknown prompt style {prompt!r} (use passages or question)")
    style: Literal["passages", "question"] = "question" if prompt == "question" else "passages"
    try:
        count = export_preferences(db, output, style)
    except RagkitError as exc:
        _fail(str(exc))
    typer.echo(visible(f"wrote {count} preference pairs to {output}", one_line=True))
