"""A GeneratorBackend that always writes the same text: citations and wiring checked by content."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ragkit.generation import GenerationOptions, GenerationResult, Generator


class ScriptedGenerator:
    """The smallest object satisfying GeneratorBackend: the protocol is all a pipeline needs."""

    def __init__(self, text: str = "Paris [1]") -> None:
        self.config = Generator("scripted").config
        self.text = text
        self.prompts: list[Any] = []

    @property
    def is_loaded(self) -> bool:
        return True

    def warm_up(self) -> ScriptedGenerator:
        return self

    def generate(
        self,
        prompts: Sequence[Any],
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> list[GenerationResult]:
        self.prompts.extend(prompts)
        return [
            GenerationResult(
                text=self.text,
                prompt_text="p",
                prompt_tokens=3,
                completion_tokens=2,
                finish_reason="stop",
            )
            for _ in prompts
        ]

    def stream(self, prompt: Any, options: Any = None, **overrides: Any) -> Any:
        raise NotImplementedError  # pragma: no cover - not used by these tests

    def count_tokens(self, prompt: Any, apply_chat_template: bool | None = None) -> int:
        return 1

    def max_prompt_tokens(self, options: Any = None) -> int:
        return 10_000

    def truncate(self, text: str, max_tokens: int) -> str:
        return text
