"""The few things ``prompts`` needs from a model, as typing protocols.

``prompts`` sits below ``ragkit``: any object with ``generate(prompts, **options)`` returning
items with a ``.text`` works as a generator (ragkit's ``Generator``, a hosted-API wrapper, a
scripted fake in tests), and any callable mapping texts to vectors works as an embedder. Token
accounting is read from the results when they carry it (``prompt_tokens``,
``completion_tokens``) and estimated from whitespace words otherwise, so budgets still bound
the work of generators that do not report usage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

Message = Mapping[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": ...}``."""

Prompt = str | Sequence[Message]
"""What a generator accepts per item: a string or a list of chat messages."""

EmbedFn = Callable[[list[str]], Any]
"""Texts to an array-like of shape ``(len(texts), dim)`` (e.g. ``Embedder.encode``)."""

TokenCounter = Callable[[Any], int]
"""Tokens of a prompt (string or messages) as the model would read it."""


@runtime_checkable
class Completion(Protocol):
    """What a generator returns per prompt; only ``text`` is required."""

    @property
    def text(self) -> str: ...


@runtime_checkable
class TextGenerator(Protocol):
    """Anything that completes a batch of prompts, results in the order of the prompts."""

    def generate(self, prompts: Sequence[Any], **options: Any) -> Sequence[Any]: ...


def completion_text(result: Any) -> str:
    """The text of one result: a plain string or an object with ``.text``."""
    if isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    if not isinstance(text, str):
        raise TypeError(f"a generator result needs a str .text, got {type(result).__name__}")
    return text


def _words(prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(prompt.split())
    return sum(len(str(m.get("content", "")).split()) for m in prompt)


def usage(result: Any, prompt: Any) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` of one call, estimated when not reported."""
    prompt_tokens = getattr(result, "prompt_tokens", None)
    completion_tokens = getattr(result, "completion_tokens", None)
    if not isinstance(prompt_tokens, int):
        prompt_tokens = _words(prompt)
    if not isinstance(completion_tokens, int):
        completion_tokens = len(completion_text(result).split())
    return prompt_tokens, completion_tokens


def token_counter(source: Any) -> TokenCounter:
    """A :data:`TokenCounter` from a generator with ``count_tokens`` or a plain callable.

    ragkit's ``Generator.count_tokens`` counts a prompt after its chat template, which is what
    a budget on the model's context must measure.
    """
    method = getattr(source, "count_tokens", None)
    if callable(method):
        return method
    if callable(source):
        return source
    raise TypeError(f"cannot count tokens with {type(source).__name__}")


def text_token_counter(source: Any) -> Callable[[str], int]:
    """Tokens of a bare piece of text (no chat template around it), e.g. one chunk."""
    method = getattr(source, "count_tokens", None)
    if callable(method):

        def count(text: str) -> int:
            try:
                return int(method(text, apply_chat_template=False))
            except TypeError:  # a counter without that keyword
                return int(method(text))

        count.counts_for = source  # type: ignore[attr-defined]  # lets a saved step name it
        return count
    if callable(source):
        return source
    raise TypeError(f"cannot count tokens with {type(source).__name__}")


def whitespace_tokens(prompt: Any) -> int:
    """A crude counter (whitespace words) for tests and generators without a tokenizer."""
    return _words(prompt)


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """A copy of a prompt as chat messages (a string becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


PromptValue = list[dict[str, str]] | str
"""The annotation steps use for a prompt, identical to ragkit's ``PromptBuilder`` output so a
pipeline's wiring check accepts prompts flowing between ragkit and ``prompts`` steps."""
