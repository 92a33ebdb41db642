"""``ragkit serve`` and ``ragkit feedback export``: the HTTP server and the feedback it collects.

FastAPI and uvicorn are imported when ``serve`` runs, not when the CLI loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ragkit.cli.common import err, guard, say
from ragkit.cli.options import (
    AbstainBelowOption,
    AbstainBiasOption,
    AdapterOption,
    ApiKeyEnvOption,
    BaseUrlOption,
    DecodingOption,
    GeneratorBackendOption,
    GeneratorOption,
    MinRelevanceOption,
    QuantizeOption,
    RetrieverOption,
)
from ragkit.feedback import PromptStyle

PromptStyleOption = Annotated[
    PromptStyle,
    typer.Option(
        help="passages (the passages the answer was grounded on, then the question) or question."
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
    generator: GeneratorOption = None,
    generator_backend: GeneratorBackendOption = "auto",
    adapter: AdapterOption = None,
    quantize: QuantizeOption = None,
    decoding: DecodingOption = None,
    abstain_below: AbstainBelowOption = None,
    abstain_bias: AbstainBiasOption = None,
    min_relevance: MinRelevanceOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File with API keys, one a line (RAGKIT_API_KEY is also read)."),
    ] = None,
    retriever: RetrieverOption = "hybrid",
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
    from ragkit.server.app import create_app
    from ragkit.server.auth import load_api_keys
    from ragkit.server.settings import ServerSettings
    from ragkit.terminal import protect_logger

    settings = guard(
        lambda: ServerSettings(
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
    )
    rag = guard(
        lambda: answering_pipeline(
            index,
            generator=generator,
            k=k,
            retriever=retriever,
            decoding=decoding,
            abstain_below=abstain_below,
            abstain_bias=abstain_bias,
            min_relevance=min_relevance,
            adapter=adapter,
            quantize=quantize,
            backend=generator_backend,
            base_url=base_url,
            api_key_env=api_key_env,
        )
    )
    say(
        f"loading {rag.generator.config.model or 'the default model'} ...",
        console=err,
        one_line=True,
    )
    guard(rag.generator.warm_up)
    server = guard(lambda: create_app(rag, settings))
    auth = "API key required" if settings.auth_required else "no API key (loopback only)"
    say(f"serving {index} on http://{host}:{port} ({auth})", console=err, one_line=True)
    for name in ("ragkit.server", "uvicorn.error"):  # tracebacks may quote untrusted text
        protect_logger(name)
    uvicorn.run(server, host=host, port=port, log_level="info")


feedback_app = typer.Typer(help="Feedback collected by the server.", no_args_is_help=True)


@feedback_app.command("export")
def feedback_export_command(
    db: Annotated[Path, typer.Argument(help="Feedback store (SQLite) written by the server.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    format: Annotated[
        Literal["jsonl"], typer.Option("--format", help="Output format (jsonl).")
    ] = "jsonl",
    prompt: PromptStyleOption = "passages",
) -> None:
    """Write preference pairs (choices and up/down votes) as JSONL for reward-model training."""
    from ragkit.feedback import export_preferences

    count = guard(lambda: export_preferences(db, output, prompt))
    say(f"wrote {count} preference pairs to {output}", one_line=True)
