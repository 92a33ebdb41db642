"""What a pipeline step is, and how its inputs and outputs are read from its signature.

A step is any object with a ``run`` method whose keyword parameters are its inputs and whose
return annotation is a pydantic model whose fields are its outputs (the Haystack 2.x idea,
without a decorator or base class). ``run_batch`` is optional: steps that can process many
inputs at once (the generator) provide it, others are looped over. ``stream`` is optional too:
a step that can hand out its work piece by piece (the generator) takes the same inputs as
``run`` and returns a :class:`StepStream`, which :meth:`Pipeline.stream
<ragkit.pipeline.Pipeline.stream>` passes on before running the steps after it.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from ragkit.errors import RagkitError


class PipelineError(RagkitError):
    """A pipeline is wired wrongly or a step broke its declared contract."""


@runtime_checkable
class Step(Protocol):
    def run(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class StepStream(Protocol):
    """What a streaming step's ``stream(**inputs)`` returns.

    Iterating yields text pieces as they are produced; once exhausted, ``output`` holds the
    step's output (the model ``run`` would have returned for the same inputs). ``close()``
    abandons the work early and may be called from another thread than the one iterating.
    """

    output: BaseModel | None

    def __iter__(self) -> Iterator[str]: ...

    def __next__(self) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Port:
    name: str
    annotation: Any
    required: bool


@dataclass(frozen=True)
class StepSignature:
    inputs: dict[str, Port]
    output_model: type[BaseModel]

    @property
    def outputs(self) -> dict[str, Any]:
        return {name: field.annotation for name, field in self.output_model.model_fields.items()}


def step_name(step: Any) -> str:
    return str(getattr(step, "name", None) or type(step).__name__)


def signature_of(step: Any) -> StepSignature:
    """Inputs and outputs of ``step.run``, from its annotations (checked, not guessed)."""
    run = getattr(step, "run", None)
    if run is None or not callable(run):
        raise PipelineError(f"step {step_name(step)!r} has no run() method")
    explicit = getattr(step, "signature", None)
    if isinstance(explicit, StepSignature):
        return explicit
    try:
        hints = typing.get_type_hints(run)
    except (NameError, TypeError) as exc:
        raise PipelineError(
            f"step {step_name(step)!r}: cannot resolve run() annotations ({exc})"
        ) from None
    output = hints.get("return")
    if not (isinstance(output, type) and issubclass(output, BaseModel)):
        raise PipelineError(
            f"step {step_name(step)!r}: run() must be annotated to return a pydantic model, got {output!r}"
        )
    inputs: dict[str, Port] = {}
    for name, param in inspect.signature(run).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        inputs[name] = Port(name, hints.get(name, Any), param.default is inspect.Parameter.empty)
    return StepSignature(inputs=inputs, output_model=output)


def compatible(provided: Any, wanted: Any) -> bool:
    """Whether a value annotated ``provided`` may feed a parameter annotated ``wanted``."""
    if wanted is Any or provided is Any or provided == wanted:
        return True
    is_union = typing.get_origin(wanted) in (typing.Union, types.UnionType)
    wanted_options = typing.get_args(wanted) if is_union else (wanted,)
    for option in wanted_options:
        if option is Any or option == provided:
            return True
        if isinstance(option, type) and isinstance(provided, type) and issubclass(provided, option):
            return True
        origin = typing.get_origin(option)
        same_origin = origin is not None and origin == typing.get_origin(provided)
        if same_origin and typing.get_args(option) == typing.get_args(provided):
            return True
    return False


def describe(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
