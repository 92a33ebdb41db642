"""Decoding options: one validated object instead of loose keyword arguments.

Options are checked when they are built, not when the model runs, so a typo (``temprature``) or
a contradiction (``top_p`` without sampling) fails at once with a message naming the field,
instead of being silently ignored as plain ``model.generate`` keywords often are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class GenerationOptions(BaseModel):
    """How to decode. Defaults: greedy, 256 new tokens, no stop strings.

    Greedy (``do_sample=False, num_beams=1``), sampling (``do_sample=True`` with ``temperature``,
    ``top_k``, ``top_p``, ``seed``) and beam search (``num_beams > 1`` with ``length_penalty``,
    ``no_repeat_ngram_size``, ``early_stopping``) are mutually exclusive families; options of one
    family passed to another are rejected rather than ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(256, ge=1, description="Upper bound on generated tokens.")
    min_new_tokens: int = Field(0, ge=0, description="EOS is suppressed before this many tokens.")
    do_sample: bool = Field(False, description="Sample instead of taking the most likely token.")
    temperature: float | None = Field(None, gt=0.0, description="Sampling temperature (> 0).")
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely tokens.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(
        None, ge=0, description="Seeds sampling for reproducibility; the caller's RNG is untouched."
    )
    num_beams: int = Field(1, ge=1, description="Beam search width; 1 disables beam search.")
    length_penalty: float | None = Field(
        None, description="Beam search: exponent on length when ranking finished beams."
    )
    early_stopping: bool | Literal["never"] | None = Field(
        None, description="Beam search: stop when num_beams candidates are finished."
    )
    no_repeat_ngram_size: int = Field(0, ge=0, description="Forbid repeating n-grams of this size.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="> 1 discourages repeated tokens.")
    stop: tuple[str, ...] = Field(
        (), description="Stop strings: output is cut before the first one and generation ends."
    )
    apply_chat_template: bool | None = Field(
        None,
        description=(
            "Wrap prompts in the tokenizer's chat template. None: use it when the tokenizer has "
            "one. False: plain strings are sent verbatim (for pre-rendered prompts)."
        ),
    )
    batch_size: int | None = Field(
        None, ge=1, description="Prompts per forward batch; None uses the generator's default."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        if value is None:
            return ()
        return value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must be non-empty")
        return tuple(dict.fromkeys(value))  # de-duplicated, order kept

    @model_validator(mode="after")
    def _consistent(self) -> GenerationOptions:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens})"
            )
        sampling = [n for n in ("temperature", "top_k", "top_p") if getattr(self, n) is not None]
        if sampling and not self.do_sample:
            raise ValueError(
                f"{', '.join(sampling)} only apply when sampling: set do_sample=True "
                "(or drop them for greedy decoding)"
            )
        beam_only = [
            n for n in ("length_penalty", "early_stopping") if getattr(self, n) is not None
        ]
        if beam_only and self.num_beams == 1:
            raise ValueError(f"{', '.join(beam_only)} only apply to beam search: set num_beams > 1")
        if self.num_beams > 1 and self.do_sample:
            raise ValueError(
                "beam search with sampling is not supported: choose num_beams or do_sample"
            )
        return self

    @property
    def mode(self) -> Literal["greedy", "sample", "beam"]:
        """The decoding family these options select."""
        if self.num_beams > 1:
            return "beam"
        return "sample" if self.do_sample else "greedy"

    def merged(self, overrides: Mapping[str, Any] | None = None, **more: Any) -> GenerationOptions:
        """A copy with ``overrides`` applied and validated again (unknown keys are errors)."""
        changes = {**(overrides or {}), **more}
        if not changes:
            return self
        data = self.model_dump(exclude_unset=True)
        data.update(changes)
        return type(self).model_validate(data)

    @classmethod
    def coerce(
        cls, options: GenerationOptions | Mapping[str, Any] | None, overrides: Mapping[str, Any]
    ) -> GenerationOptions:
        """Build options from an object, a mapping (e.g. parsed YAML) or nothing, plus keywords."""
        if options is None:
            base = cls()
        elif isinstance(options, GenerationOptions):
            base = options
        elif isinstance(options, Mapping):
            base = cls.model_validate(dict(options))
        else:
            raise TypeError(
                f"options must be GenerationOptions, a mapping or None, not {type(options).__name__}"
            )
        return base.merged(overrides)
