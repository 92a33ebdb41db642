"""What every generator backend provides, and the pieces the non-transformers backends share.

RAG pipelines, ``prompts`` strategies and the server only ever call a handful of generator
methods: generate a batch, stream one answer, count / truncate tokens for prompt budgeting, warm
up, and read ``config.model`` for traces. :class:`GeneratorBackend` names exactly that surface, so
the transformers :class:`~ragkit.generation.Generator` (unchanged) and the OpenAI-API and vLLM
backends are interchangeable everywhere a generator is accepted.

Everything here is pure Python: no torch, transformers, openai or vllm import, so that importing
``ragkit.generation`` stays cheap whatever backend is installed.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ragkit.errors import RagkitError
from ragkit.generation.chat import Prompt, as_messages, plain_transcript
from ragkit.generation.options import GenerationOptions
from ragkit.generation.results import FinishReason, GenerationResult
from ragkit.generation.stopping import find_stop

DEFAULT_CONTEXT_LENGTH = 4096
"""Context assumed for a remote model whose length is neither configured nor reported."""

BYTES_PER_TOKEN = 3
"""Token estimate without a tokenizer: one token per 3 UTF-8 bytes.

Byte-level BPE vocabularies average about 4 bytes per token on English and about 3 on code or
non-Latin scripts; dividing by 3 over-counts English, which is the safe direction for a budget
(a prompt that is estimated to fit really fits)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Estimated tokens a chat template adds per message (role markers, separators)."""


class GeneratorBackendError(RagkitError):
    """A generator backend cannot do what was asked (bad setting, server refusal...)."""


class BackendUnavailableError(GeneratorBackendError):
    """The backend's package, hardware or server is missing or unreachable."""


class UnsupportedOptionError(GeneratorBackendError):
    """A decoding option has no equivalent in the backend (e.g. beam search over an API).

    Raised before any request is sent: silently dropping an option would return answers decoded
    differently from what the caller asked for.
    """


@runtime_checkable
class BackendSettings(Protocol):
    """A backend's init parameters (a pydantic model): what a saved pipeline records."""

    @property
    def model(self) -> str | None: ...

    def model_dump(self, *, mode: str = ..., exclude: Any = ...) -> dict[str, Any]: ...


@runtime_checkable
class GenerationStream(Protocol):
    """Text pieces of one completion; ``result`` holds the full result once exhausted.

    The pieces concatenate to ``result.text``; ``close()`` abandons the generation.
    """

    result: GenerationResult | None

    def __iter__(self) -> Iterator[str]: ...

    def __next__(self) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class GeneratorBackend(Protocol):
    """The generator interface RAG pipelines, ``prompts`` strategies and the server rely on.

    :class:`ragkit.generation.Generator` satisfies it as is; so do
    :class:`~ragkit.generation.backends.OpenAIGenerator` and
    :class:`~ragkit.generation.backends.VLLMGenerator`.
    """

    @property
    def config(self) -> BackendSettings: ...

    @property
    def is_loaded(self) -> bool: ...

    def warm_up(self) -> object: ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]: ...

    def stream(
        self,
        prompt: Prompt,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> GenerationStream: ...

    def count_tokens(self, prompt: Prompt, apply_chat_template: bool | None = None) -> int: ...

    def max_prompt_tokens(
        self, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


class TokenConstrainedBackend(GeneratorBackend, Protocol):
    """A backend that restricts each step's tokens: what grounded span decoding needs.

    Local backends (transformers, llama.cpp) see every step's logits; API and vLLM backends do
    not. ``generate(..., constraints=[...])`` and ``stream(..., constraint=...)`` take one
    :class:`~ragkit.generation.constraints.TokenConstraint` per prompt.
    """

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    def token_table(self) -> Any:
        """The vocabulary as bytes per token (:class:`~ragkit.generation.grounded.TokenTable`)."""
        ...


def can_constrain_tokens(generator: object) -> bool:
    """Whether ``generator`` implements :class:`TokenConstrainedBackend`.

    Checked on the class, not with ``isinstance``: on Python 3.11 a runtime protocol check reads
    every property, and ``eos_token_ids`` loads the model.
    """
    return callable(getattr(type(generator), "token_table", None))


def package_installed(name: str) -> bool:
    """Whether ``import name`` can work, without importing it (an optional backend's package).

    A ``None`` entry in ``sys.modules`` (how tests simulate an absent package) counts as absent.
    """
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------- options


def resolve_options(
    defaults: GenerationOptions,
    options: GenerationOptions | Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
) -> GenerationOptions:
    """Backend defaults, then the fields set in ``options``, then keyword overrides.

    The same precedence as :class:`~ragkit.generation.Generator`, so a pipeline's options mean
    the same thing whichever backend runs them.
    """
    base = defaults
    if isinstance(options, GenerationOptions):
        base = base.merged(options.model_dump(exclude_unset=True))
    elif isinstance(options, Mapping):
        base = base.merged(dict(options))
    elif options is not None:
        raise TypeError(
            f"options must be GenerationOptions, a mapping or None, not {type(options).__name__}"
        )
    return base.merged(overrides)


def check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """The prompts as a list; a bare string is refused as :meth:`Generator.generate` does."""
    if isinstance(prompts, str):
        raise TypeError("generate() takes a list of prompts: wrap a single prompt in a list")
    return list(prompts)


def sample_seeds(opts: GenerationOptions, count: int) -> list[int | None]:
    """The seed of each prompt of a call: ``seed + i`` when sampling with a seed, else None.

    An API request or an engine request is seeded on its own, so one seed for every prompt
    would make repeated prompts (self-consistency samples one prompt N times) identical.
    Offsetting by the prompt's position keeps a call reproducible and its samples distinct.
    """
    if not opts.do_sample or opts.seed is None:
        return [None] * count
    return [opts.seed + i for i in range(count)]


def finish_text(
    text: str, api_finish: str | None, stop_reason: Any, stops: Sequence[str]
) -> tuple[str, FinishReason, str | None]:
    """The completion cut before its first stop string, our finish reason and the stop matched.

    ``stop_reason`` is vLLM's extension field (the stop string that ended generation server-side,
    whose text it already removed); other servers report only ``finish_reason="stop"`` for both
    EOS and a stop string, which is then reported as ``"stop"``.
    """
    match = find_stop(text, stops) if stops else None
    if match is not None:
        return text[: match[0]], "stop_string", match[1]
    if isinstance(stop_reason, str) and stop_reason in stops:
        return text, "stop_string", stop_reason
    if api_finish == "length":
        return text, "length", None
    return text, "stop", None


# ---------------------------------------------------------------------- token estimates


def estimate_text_tokens(text: str) -> int:
    """An upper-leaning token count of ``text`` without a tokenizer (see BYTES_PER_TOKEN)."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def estimate_prompt_tokens(prompt: Prompt, apply_chat_template: bool | None = None) -> int:
    """Estimated tokens of a prompt as a server would read it (template overhead included)."""
    if isinstance(prompt, str):
        overhead = 0 if apply_chat_template is False else MESSAGE_OVERHEAD_TOKENS
        return estimate_text_tokens(prompt) + overhead
    messages = as_messages(prompt)
    if apply_chat_template is False:
        return estimate_text_tokens(plain_transcript(messages))
    return sum(estimate_text_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def estimate_truncate(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` whose estimate is at most ``max_tokens``.

    Cut on a character boundary, so the result is an exact prefix of ``text``.
    """
    if max_tokens <= 0:
        return ""
    data = text.encode("utf-8")
    limit = max_tokens * BYTES_PER_TOKEN
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


# ---------------------------------------------------------------------- streams


class FinishedStream(Iterator[str]):
    """A stream for engines without incremental output: the whole answer as one piece.

    ``produce`` runs on the first ``next`` (not at construction), so building the stream stays
    cheap and ``close()`` before iterating costs nothing, as with the transformers stream.
    """

    def __init__(self, produce: Callable[[], GenerationResult]) -> None:
        self._produce = produce
        self._done = False
        self.result: GenerationResult | None = None

    def __iter__(self) -> FinishedStream:
        return self

    def __enter__(self) -> FinishedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing runs in the background: just mark the stream finished."""
        self._done = True

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        self._done = True
        self.result = self._produce()
        if not self.result.text:
            raise StopIteration
        return self.result.text
