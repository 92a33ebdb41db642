"""Composing steps: sequential pipelines, fan-out/merge, batched and streamed runs, traces.

Wiring is checked when a pipeline is built: every required input of every step must be
provided, with a compatible type, by the pipeline's inputs or by an earlier step's outputs.
A mistake is reported naming the step that needs the value and what is available from which
step, not discovered halfway through a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from ragkit.pipeline.component import LoadContext, component, component_spec, trace_outputs_of
from ragkit.pipeline.step import (
    PipelineError,
    Port,
    StepSignature,
    StepStream,
    compatible,
    describe,
    signature_of,
    step_name,
)
from ragkit.pipeline.trace import StepTrace, Trace, jsonable


class PipelineResult(BaseModel):
    """Everything the steps produced (by output name) and the trace of the run."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    outputs: dict[str, Any]
    trace: Trace

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]


class PipelineStream(Iterator[str]):
    """One run with a step streamed (:meth:`Pipeline.stream`): iterate for that step's pieces.

    Once the pieces are exhausted, the steps after it have run and ``result`` holds the run's
    :class:`PipelineResult`. ``close()`` (or leaving a ``with`` block) abandons the streamed
    step; it may be called from another thread than the one iterating.
    """

    def __init__(self, pieces: StepStream, finish: Callable[[Any], PipelineResult]) -> None:
        self._pieces = pieces
        self._finish = finish
        self._closed = False
        self.result: PipelineResult | None = None

    def __iter__(self) -> PipelineStream:
        return self

    def __next__(self) -> str:
        if self._closed or self.result is not None:
            raise StopIteration
        try:
            return next(self._pieces)
        except StopIteration:
            if self._closed:  # abandoned meanwhile: the output (if any) is not an answer
                raise
            self.result = self._finish(self._pieces.output)
            raise

    def close(self) -> None:
        self._closed = True
        self._pieces.close()

    def __enter__(self) -> PipelineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@component
class Parallel:
    """Fan-out: every branch runs on the same inputs; outputs are merged for a later step.

    Each branch's output ``field`` is exposed as ``<branch>_<field>``; a field that every
    branch produces is also collected, in branch order, as ``<field>_list`` — e.g. two
    retrievers' ``hits`` become ``hits_list`` for a fusion step.
    """

    component_name = "parallel"

    def __init__(self, **branches: Any) -> None:
        if len(branches) < 2:
            raise PipelineError("Parallel needs at least two branches")
        self.branches = branches
        self.name = "Parallel(" + ", ".join(branches) + ")"
        sigs = {name: signature_of(step) for name, step in branches.items()}
        inputs: dict[str, Port] = {}
        for sig in sigs.values():
            for port in sig.inputs.values():
                if port.name in inputs:
                    inputs[port.name] = Port(
                        port.name,
                        inputs[port.name].annotation,
                        inputs[port.name].required or port.required,
                    )
                else:
                    inputs[port.name] = port
        fields: dict[str, Any] = {}
        for name, sig in sigs.items():
            for field, annotation in sig.outputs.items():
                fields[f"{name}_{field}"] = (annotation, ...)
        common = set.intersection(*(set(sig.outputs) for sig in sigs.values()))
        for field in sorted(common):
            annotation = next(iter(sigs.values())).outputs[field]
            fields[f"{field}_list"] = (list[annotation], ...)  # type: ignore[valid-type]
        self._sigs = sigs
        self._common = sorted(common)
        output_model = create_model("ParallelOutput", **fields)
        self.signature = StepSignature(inputs=inputs, output_model=output_model)

    def run(self, **inputs: Any) -> BaseModel:
        produced: dict[str, BaseModel] = {}
        for name, step in self.branches.items():
            wanted = {k: v for k, v in inputs.items() if k in self._sigs[name].inputs}
            produced[name] = step.run(**wanted)
        values: dict[str, Any] = {}
        for name, output in produced.items():
            for field in self._sigs[name].outputs:
                values[f"{name}_{field}"] = getattr(output, field)
        for field in self._common:
            values[f"{field}_list"] = [getattr(produced[name], field) for name in self.branches]
        return self.signature.output_model(**values)

    def to_config(self) -> dict[str, Any]:
        return {"branches": {name: component_spec(step) for name, step in self.branches.items()}}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> Parallel:
        ctx = context if isinstance(context, LoadContext) else LoadContext(context)
        branches = config.get("branches")
        if not isinstance(branches, Mapping):
            raise PipelineError("parallel: 'branches' must be a mapping of name to component")
        return cls(**{name: ctx.build(spec, f"branch {name!r}") for name, spec in branches.items()})


class Pipeline:
    """Steps run in order; each step's outputs become available to the steps after it.

    ``inputs`` names the pipeline's own inputs with their types; by default they are the
    first step's inputs. Compose with ``|``: ``retriever | prompt | generator``.
    """

    def __init__(
        self, steps: Sequence[Any], inputs: Mapping[str, Any] | None = None, name: str = "pipeline"
    ) -> None:
        if not steps:
            raise PipelineError("a pipeline needs at least one step")
        self.steps = list(steps)
        self.name = name
        self.signatures = [signature_of(step) for step in self.steps]
        if inputs is None:
            first = self.signatures[0]
            self.inputs: dict[str, Port] = dict(first.inputs)
        else:
            self.inputs = {k: Port(k, v, True) for k, v in inputs.items()}
        self._check_wiring()

    def __or__(self, other: Any) -> Pipeline:
        right = other.steps if isinstance(other, Pipeline) else [other]
        return Pipeline([*self.steps, *right], name=self.name)

    @classmethod
    def chain(cls, *steps: Any) -> Pipeline:
        return cls(list(steps))

    # -- wiring -----------------------------------------------------------------------------
    def _check_wiring(self) -> None:
        available: dict[str, tuple[Any, str]] = {
            name: (port.annotation, "pipeline input") for name, port in self.inputs.items()
        }
        for step, sig in zip(self.steps, self.signatures, strict=True):
            for port in sig.inputs.values():
                if port.name not in available:
                    if port.required:
                        offered = (
                            ", ".join(f"{n} (from {src})" for n, (_, src) in available.items())
                            or "nothing"
                        )
                        raise PipelineError(
                            f"step {step_name(step)!r} needs input {port.name!r} ({describe(port.annotation)}) "
                            f"that no earlier step provides; available: {offered}"
                        )
                    continue
                annotation, source = available[port.name]
                if not compatible(annotation, port.annotation):
                    raise PipelineError(
                        f"step {step_name(step)!r} needs {port.name!r} as {describe(port.annotation)}, "
                        f"but {source} provides {describe(annotation)}"
                    )
            for field, annotation in sig.outputs.items():
                available[field] = (annotation, f"step {step_name(step)!r}")

    # -- running ----------------------------------------------------------------------------
    def _validate_inputs(self, values: Mapping[str, Any]) -> None:
        missing = [
            name for name, port in self.inputs.items() if port.required and name not in values
        ]
        if missing:
            raise PipelineError(f"pipeline {self.name!r} is missing input {missing[0]!r}")
        known = set(self.inputs)
        for sig in self.signatures:
            known |= set(sig.inputs)
        unknown = [k for k in values if k not in known]
        if unknown:
            raise PipelineError(f"pipeline {self.name!r} got unknown input {unknown[0]!r}")

    def run(self, **inputs: Any) -> PipelineResult:
        """Run one input: a batch of one, so single and batched runs share one code path."""
        return self.run_batch([inputs])[0]

    def run_batch(self, inputs: Sequence[Mapping[str, Any]]) -> list[PipelineResult]:
        """Run many inputs; steps with ``run_batch`` (the generator) get them all at once."""
        for values in inputs:
            self._validate_inputs(values)
        states = [dict(values) for values in inputs]
        traces = [Trace() for _ in inputs]
        started = time.perf_counter()
        for position in range(len(self.steps)):
            self._run_step(position, states, traces)
        total = time.perf_counter() - started
        for trace in traces:
            trace.seconds = total
        return [
            PipelineResult(outputs=state, trace=trace)
            for state, trace in zip(states, traces, strict=True)
        ]

    def stream(self, at: Any, /, **inputs: Any) -> PipelineStream:
        """Run one input with step ``at`` (the step itself, or its position) streamed.

        The steps before it run now; then its ``stream(**inputs)`` (a
        :class:`~ragkit.pipeline.step.StepStream`) starts, and the returned
        :class:`PipelineStream` hands out its pieces as they come. When they are exhausted the
        step's output joins the run's values and the steps after it run on them, exactly as in
        :meth:`run`; the stream's ``result`` then holds the run's :class:`PipelineResult`. The
        streamed step's trace time runs from its start to its last piece.
        """
        position = self._position(at)
        step, sig = self.steps[position], self.signatures[position]
        stream_fn = getattr(step, "stream", None)
        if not callable(stream_fn):
            raise PipelineError(
                f"step {step_name(step)!r} cannot stream: it has no stream() method"
            )
        self._validate_inputs(inputs)
        state, trace = dict(inputs), Trace()
        started = time.perf_counter()
        for before in range(position):
            self._run_step(before, [state], [trace])
        kwargs = self._kwargs(sig, state)
        step_started = time.perf_counter()
        pieces = stream_fn(**kwargs)

        def finish(output: Any) -> PipelineResult:
            self._record(
                step, sig, state, trace, kwargs, output, time.perf_counter() - step_started
            )
            for after in range(position + 1, len(self.steps)):
                self._run_step(after, [state], [trace])
            trace.seconds = time.perf_counter() - started
            return PipelineResult(outputs=state, trace=trace)

        return PipelineStream(pieces, finish)

    def _position(self, at: Any) -> int:
        if isinstance(at, int) and not isinstance(at, bool):
            if not 0 <= at < len(self.steps):
                raise PipelineError(f"pipeline {self.name!r} has no step at position {at}")
            return at
        for position, step in enumerate(self.steps):
            if step is at:
                return position
        raise PipelineError(f"step {step_name(at)!r} is not a step of pipeline {self.name!r}")

    @staticmethod
    def _kwargs(sig: StepSignature, state: Mapping[str, Any]) -> dict[str, Any]:
        return {name: state[name] for name in sig.inputs if name in state}

    def _run_step(self, position: int, states: list[dict[str, Any]], traces: list[Trace]) -> None:
        """Run step ``position`` on every state (batched when it can be) and trace it."""
        step, sig = self.steps[position], self.signatures[position]
        batch_kwargs = [self._kwargs(sig, state) for state in states]
        t0 = time.perf_counter()
        batch_fn = getattr(step, "run_batch", None)
        if callable(batch_fn) and len(states) > 1:
            outputs = list(batch_fn(batch_kwargs))
            per_item = (time.perf_counter() - t0) / max(len(states), 1)
            timings = [per_item] * len(states)
        else:
            outputs, timings = [], []
            for kwargs in batch_kwargs:
                t1 = time.perf_counter()
                outputs.append(step.run(**kwargs))
                timings.append(time.perf_counter() - t1)
        if len(outputs) != len(states):
            raise PipelineError(
                f"step {step_name(step)!r}: run_batch returned {len(outputs)} results for {len(states)} inputs"
            )
        for state, trace, kwargs, output, seconds in zip(
            states, traces, batch_kwargs, outputs, timings, strict=True
        ):
            self._record(step, sig, state, trace, kwargs, output, seconds)

    def _record(
        self,
        step: Any,
        sig: StepSignature,
        state: dict[str, Any],
        trace: Trace,
        kwargs: Mapping[str, Any],
        output: Any,
        seconds: float,
    ) -> None:
        """A step's output joins the run's values; its inputs, outputs and time go to the trace."""
        values = self._outputs(step, sig, output)
        state.update(values)
        trace.steps.append(
            StepTrace(
                step=step_name(step),
                inputs=jsonable(dict(kwargs)),
                outputs=jsonable(values),
                seconds=seconds,
            )
        )
        self._fill_trace(trace, step, values)

    @staticmethod
    def _outputs(step: Any, sig: StepSignature, output: Any) -> dict[str, Any]:
        if not isinstance(output, sig.output_model):
            raise PipelineError(
                f"step {step_name(step)!r} returned {type(output).__name__}, declared {sig.output_model.__name__}"
            )
        return {field: getattr(output, field) for field in sig.outputs}

    @staticmethod
    def _fill_trace(trace: Trace, step: Any, values: Mapping[str, Any]) -> None:
        """The outputs a step declares as trace material (``trace_outputs``) go to the trace.

        The pipeline knows its trace's slots (the exact final prompt, notes), not which output
        of which step fills them: each step says so itself.
        """
        for field, slot in trace_outputs_of(step).items():
            value = values.get(field)
            if slot == "prompt" and isinstance(value, str):
                trace.prompt = value
            elif slot == "notes" and isinstance(value, list):
                trace.notes.extend(str(n) for n in value)
