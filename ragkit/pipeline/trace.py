"""Traces: what every step of a run received, returned and took, plus the exact final prompt.

A hidden prompt is the most common complaint about existing frameworks: the trace keeps the
text the model actually read, printable for a human and serialisable as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def jsonable(value: Any) -> Any:
    """A JSON-friendly view of step inputs/outputs (pydantic models dumped, others repr'd)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


class StepTrace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    seconds: float


class Trace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[StepTrace] = Field(default_factory=list)
    prompt: str | None = Field(
        None, description="The exact text sent to the model, after templating."
    )
    seconds: float = 0.0
    notes: list[str] = Field(
        default_factory=list, description="Warnings such as truncated passages."
    )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def to_text(self, width: int = 200) -> str:
        lines = [f"pipeline run: {self.seconds * 1000:.1f} ms"]
        for step in self.steps:
            lines.append(f"- {step.step} ({step.seconds * 1000:.1f} ms)")
            for label, data in (("in", step.inputs), ("out", step.outputs)):
                for key, value in data.items():
                    text = json.dumps(value, ensure_ascii=False)
                    lines.append(
                        f"    {label} {key}: {text[:width]}{'…' if len(text) > width else ''}"
                    )
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.prompt is not None:
            lines.append("final prompt:")
            lines.append(self.prompt)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()
