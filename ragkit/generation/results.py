"""What a generation call returns, per prompt."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
