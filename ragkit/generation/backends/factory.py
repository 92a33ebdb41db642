"""One entry point for every backend: ``make_generator(backend, model, **options)``.

The CLI's ``--generator-backend`` and saved pipelines both go through here, so a backend name
and its options are validated in one place, with a one-line error naming what is wrong.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

from ragkit.generation.backends.auto import auto_generator
from ragkit.generation.backends.base import GeneratorBackend, GeneratorBackendError
from ragkit.generation.backends.llamacpp_engine import LlamaCppGenerator
from ragkit.generation.backends.openai_api import OpenAIGenerator
from ragkit.generation.backends.vllm_engine import VLLMGenerator
from ragkit.generation.generator import Generator

BackendName = Literal["transformers", "auto", "llamacpp", "openai", "vllm"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
DEFAULT_BACKEND: BackendName = "transformers"


def _constructor(backend: str) -> Callable[..., GeneratorBackend]:
    constructors: dict[str, Callable[..., GeneratorBackend]] = {
        "transformers": Generator,
        "auto": auto_generator,
        "llamacpp": LlamaCppGenerator,
        "openai": OpenAIGenerator,
        "vllm": VLLMGenerator,
    }
    try:
        return constructors[backend]
    except KeyError:
        raise GeneratorBackendError(
            f"unknown generator backend {backend!r} (use one of: {', '.join(BACKENDS)})"
        ) from None


def backend_options(backend: str) -> tuple[str, ...]:
    """The keyword options ``make_generator`` accepts for ``backend`` (besides ``model``)."""
    parameters = inspect.signature(_constructor(backend)).parameters
    return tuple(name for name in parameters if name not in ("self", "model", "loader"))


def make_generator(
    backend: str = DEFAULT_BACKEND, model: str | None = None, **options: Any
) -> GeneratorBackend:
    """Build a generator for ``backend`` ("transformers", "auto", "llamacpp", "openai", "vllm").

    ``auto`` is llama.cpp where it is installed and passes its quality guard on this machine,
    else transformers (:mod:`ragkit.generation.backends.auto`); it takes the options both share.

    ``model`` means: transformers/vllm — None (the packaged default), a hub id or a folder;
    llamacpp — None, a packaged model name or a ``.gguf`` file; openai —
    the model name on the server (None: the first one it lists). ``options`` are the backend's
    constructor keywords (``device=`` for transformers, ``base_url=`` / ``api_key_env=`` for
    openai, ``gpu_memory_utilization=`` for vllm, ``n_threads=`` for llamacpp, ``options=`` decoding defaults for all);
    options of another backend are refused rather than ignored. Options that are None are
    treated as not given, so a CLI can pass its unset flags straight through.
    """
    given = {name: value for name, value in options.items() if value is not None}
    accepted = backend_options(backend)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise GeneratorBackendError(
            f"option(s) {', '.join(unknown)} do not apply to the {backend} generator backend "
            f"(it accepts: {', '.join(accepted)})"
        )
    return _constructor(backend)(model, **given)


def generator_from_config(config: Mapping[str, Any]) -> GeneratorBackend:
    """Rebuild a generator from its ``config.model_dump()`` (what a saved pipeline records).

    The ``backend`` key selects the backend; configs without one (written by the transformers
    :class:`~ragkit.generation.Generator`, which predates backends) are transformers configs.
    """
    data = dict(config)
    backend = data.pop("backend", DEFAULT_BACKEND)
    if backend == "transformers":
        return Generator.from_config(data)
    if backend == "llamacpp":
        return LlamaCppGenerator.from_config(data)
    if backend == "openai":
        return OpenAIGenerator.from_config(data)
    if backend == "vllm":
        return VLLMGenerator.from_config(data)
    raise GeneratorBackendError(
        f"unknown generator backend {backend!r} (use one of: {', '.join(BACKENDS)})"
    )
