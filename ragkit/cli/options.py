"""Options more than one command takes, defined once.

Choices are typed with the library's own ``Literal`` types (``Strategy``, ``RetrieverKind``,
``Decoding``, the generator's ``BackendName``...), so typer checks them and ``--help`` lists them,
and a choice added to the library appears here without a second list to keep in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated

import typer

from ragkit.generation.backends import BackendName
from ragkit.generation.quantization import Quantization
from ragkit.rag import Decoding
from ragkit.rag.generate_step import MAX_ABSTAIN_BIAS
from ragkit.rag.strategies import Strategy
from ragkit.retrieval import RetrieverKind


def _in_range(low: float, high: float) -> Callable[[float | None], float | None]:
    """A range check that names a value that is not a number (``nan``, ``inf``) as such; typer's
    own ``min``/``max`` would report ``nan`` as "should be less than or equal to" the bound."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise typer.BadParameter(f"must be a number from {low:g} to {high:g}, not {value}")
        if not low <= value <= high:
            raise typer.BadParameter(f"must be from {low:g} to {high:g}, not {value:g}")
        return value

    return check


def _not_empty(value: str) -> str:
    """An empty ``--index ""`` would otherwise mean the current folder (``Path("")`` is ".")."""
    if not value.strip():
        raise typer.BadParameter("is empty: name the index directory (or a postgresql:// URL)")
    return value


# Where an index lives: a directory (FAISS + SQLite) or a PostgreSQL + pgvector store.
IndexOption = Annotated[
    str,
    typer.Option(
        "--index",
        "-i",
        callback=_not_empty,
        help="Index directory, or a postgresql://user@host/db[?schema=NAME] URL for a "
        "PostgreSQL + pgvector store (pip install 'ragkit\\[postgres]'; docs/postgres.md).",
    ),
]
RetrieverOption = Annotated[
    RetrieverKind,
    typer.Option(help="hybrid (RRF of dense + BM25, the default), dense or bm25."),
]
StrategyOption = Annotated[
    Strategy,
    typer.Option(
        help="Prompting strategy: plain, fewshot, cot, self-consistency or least-to-most."
    ),
]
MaxNewTokensOption = Annotated[
    int | None,
    typer.Option(min=1, help="Most tokens per answer (default: the generator's profile)."),
]

# The generator and how it is reached: ``ask``, ``chat``, ``eval --generate`` and ``serve``.
GeneratorOption = Annotated[
    str | None,
    typer.Option(
        "--generator",
        "-g",
        help="Generator: gemma3-270m (the packaged Gemma 3 270M, the default), smollm2 (the "
        "packaged SmolLM2-135M-Instruct), an HF id or a local path; with --generator-backend "
        "openai, the model name on the server.",
    ),
]
GeneratorBackendOption = Annotated[
    BackendName,
    typer.Option(
        "--generator-backend",
        help="auto (the default: llamacpp where it is installed and passes its quality guard "
        "on this machine, else transformers), transformers (in-process), llamacpp (in-process "
        "llama.cpp on the packaged GGUF or a .gguf file: ~5x faster CPU decoding, same grounded "
        "decoding and adapter; needs the ragkit llamacpp extra), openai (an OpenAI-compatible server such "
        "as vllm serve; --generator is then the served model's name) or vllm (in-process vLLM "
        "engine: needs the ragkit vllm extra and a GPU). See docs/backends.md.",
    ),
]
AdapterOption = Annotated[
    str | None,
    typer.Option(
        help="transformers and llamacpp backends: a LoRA adapter merged into the generator at "
        "load time (llamacpp: into a cached copy of the GGUF): "
        "grounded-qa (the packaged grounded-QA adapter of the chosen packaged model; the "
        "default for the packaged Gemma 3 270M), grounded-qa-gemma (= grounded-qa-sft), "
        "grounded-qa-rlhf (the same after PPO on feedback), grounded-qa-smollm2, a peft "
        "adapter folder (e.g. the adapter/ of a LoRA `ragkit align sft` run), or none."
    ),
]
QuantizeOption = Annotated[
    Quantization | None,
    typer.Option(
        help="transformers backend on a CPU: int8 (int8 linear layers: faster, answers may "
        "differ slightly), auto (int8 where it passes ragkit's quality guard on this machine) or "
        "none. Default: the generator's profile."
    ),
]
DecodingOption = Annotated[
    Decoding | None,
    typer.Option(
        help="grounded: the answer is a verbatim span of one passage (or an abstention), cited "
        "by its exact offsets; free: the model writes freely and cites with \\[n]. Default: the "
        "generator's profile (grounded for the packaged Gemma 3 270M)."
    ),
]
AbstainBelowOption = Annotated[
    float | None,
    typer.Option(
        "--abstain-below",
        callback=_in_range(0.0, 1.0),
        help="Grounded decoding: abstain when the adapter's answerability probe puts "
        "P(the passages hold the answer) below this (0: never veto). Default: the generator's "
        "profile.",
    ),
]
AbstainBiasOption = Annotated[
    float | None,
    typer.Option(
        "--abstain-bias",
        callback=_in_range(-MAX_ABSTAIN_BIAS, MAX_ABSTAIN_BIAS),
        help="Grounded decoding: added to the logit of the abstention path's first token; "
        "higher declines more often, lower answers more. Default: the generator's profile.",
    ),
]
MinRelevanceOption = Annotated[
    float | None,
    typer.Option(
        "--min-relevance",
        callback=_in_range(-1.0, 1.0),
        help="Grounded decoding: decline a question when no retrieved passage reaches this "
        "cosine similarity to it (-1: no gate). Default: the generator's profile (0.25 for "
        "indexes built with the default MiniLM embedder).",
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
