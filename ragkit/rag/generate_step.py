"""The generator as a pipeline step, batched when the pipeline runs many inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from ragkit.generation import GenerationOptions, Generator, GeneratorBackend


class Generated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    prompt_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class GenerateStep:
    component_name = "generator"

    def __init__(
        self,
        generator: GeneratorBackend | None = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
    ) -> None:
        self.generator = generator or Generator()
        self.options = GenerationOptions.coerce(options, {}) if options is not None else None

    def run(self, prompt: list[dict[str, str]] | str) -> Generated:
        return self.run_batch([{"prompt": prompt}])[0]

    def run_batch(self, inputs: Sequence[Mapping[str, Any]]) -> list[Generated]:
        results = self.generator.generate([item["prompt"] for item in inputs], self.options)
        return [
            Generated(
                text=r.text.strip(),
                prompt_text=r.prompt_text,
                finish_reason=r.finish_reason,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
            )
            for r in results
        ]

    def to_config(self) -> dict[str, Any]:
        data: dict[str, Any] = self.generator.config.model_dump(mode="json", exclude={"options"})
        if self.options is not None:
            data["options"] = self.options.model_dump(mode="json", exclude_unset=True)
        return data
