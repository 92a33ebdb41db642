"""What a generation call returns, per prompt."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragkit.generation.stopping import find_stop

FinishReason = Literal["stop", "length", "stop_string"]
"""``stop``: the model emitted EOS; ``length``: max_new_tokens reached (or the context was
full); ``stop_string``: a stop string appeared and the text was cut before it."""


class GenerationResult(BaseModel):
    """One completion with the accounting a caller needs (budgets, traces, cost)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(description="The completion, cut before a stop string if one matched.")
    prompt_text: str = Field(description="The exact text sent to the model (after templating).")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0, description="Tokens generated, including a final EOS.")
    finish_reason: FinishReason
    stop_string: str | None = Field(None, description="The stop string that ended generation.")

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __str__(self) -> str:
        return self.text


def result_from_tokens(
    new_ids: Sequence[int],
    *,
    prompt_text: str,
    prompt_tokens: int,
    stops: Sequence[str],
    decode: Callable[[list[int]], str],
    terminators: Collection[int],
    eos_ids: Collection[int],
) -> GenerationResult:
    """Cut a row at its first terminator and at the first stop string; count and label it.

    One rule for every local backend (transformers, llama.cpp): ``terminators`` are the ids
    after which nothing is the model's text (EOS, and the pad id of a padded batch); an EOS is
    counted as a generated token, padding is not.
    """
    ids = list(new_ids)
    end = next((i for i, t in enumerate(ids) if t in terminators), len(ids))
    text = decode(ids[:end])
    reason: FinishReason
    match = find_stop(text, stops) if stops else None
    if match is not None:
        text, reason, used = text[: match[0]], "stop_string", end
    elif end < len(ids) and ids[end] in eos_ids:
        reason, used = "stop", end + 1
    else:
        reason, used = "length", end
    return GenerationResult(
        text=text,
        prompt_text=prompt_text,
        prompt_tokens=prompt_tokens,
        completion_tokens=used,
        finish_reason=reason,
        stop_string=match[1] if match is not None else None,
    )
