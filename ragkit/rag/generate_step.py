"""The generator as a pipeline step, batched when the pipeline runs many inputs.

Two decoding modes (``decoding``):

- ``"free"``: the model writes whatever it likes; citations come from its ``[n]`` markers.
- ``"grounded"``: every answer is a verbatim span of one retrieved passage or the abstention
  phrase (:mod:`ragkit.generation.grounded`), and the step reports where the span sits, so the
  citation is that exact span. Needs a backend that can constrain tokens (transformers,
  llama.cpp).

Both modes stream (:meth:`GenerateStep.stream`): the pieces come as the model writes them, and
the step's output afterwards is the one ``run`` returns for the same prompt and passages.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ragkit.errors import RagkitError
from ragkit.generation import GenerationOptions, GenerationStream, Generator, GeneratorBackend
from ragkit.generation.backends.base import can_constrain_tokens
from ragkit.pipeline import LoadContext, component
from ragkit.rag.schema import Grounding, Passage

Decoding = Literal["free", "grounded"]
DECODINGS: tuple[str, ...] = ("free", "grounded")
GROUNDED_MAX_TOKENS = 24
"""Longest grounded answer in tokens: SQuAD-style answers are a few words; a cap keeps a model
that never reaches a word end from copying a whole passage."""
MAX_ABSTAIN_BIAS = 100.0
"""The largest abstention bias, either sign: the models' logits span far less than this."""


class Generated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    prompt_text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    grounding: Grounding | None = None


class DecodingError(RagkitError):
    """A decoding mode the chosen generator backend cannot run."""


@component(trace_outputs={"prompt_text": "prompt"})
class GenerateStep:
    component_name = "generator"

    def __init__(
        self,
        generator: GeneratorBackend | None = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        decoding: Decoding = "free",
        abstain_bias: float = 0.0,
        max_answer_tokens: int = GROUNDED_MAX_TOKENS,
        abstain_below: float | None = None,
        require_probe: bool = False,
    ) -> None:
        if decoding not in DECODINGS:
            raise DecodingError(
                f"unknown decoding {decoding!r} (use one of: {', '.join(DECODINGS)})"
            )
        if not math.isfinite(abstain_bias) or abs(abstain_bias) > MAX_ABSTAIN_BIAS:
            # beyond this the bias already decides every first token; larger values overflow
            # the float32 logits (an infinite logit turns the sampler's softmax into NaN)
            raise DecodingError(
                f"--abstain-bias must be a number from {-MAX_ABSTAIN_BIAS:g} to "
                f"{MAX_ABSTAIN_BIAS:g}, got {abstain_bias}"
            )
        self.generator = generator or Generator()
        self.options = GenerationOptions.coerce(options, {}) if options is not None else None
        self.decoding: Decoding = decoding
        self.abstain_bias = abstain_bias
        self.max_answer_tokens = max_answer_tokens
        self.abstain_below = abstain_below
        """Abstain when the generator's answerability probe (if its adapter has one) gives
        P(answerable) below this; None: the probe is only reported, never decides."""
        self.require_probe = require_probe
        """The threshold was asked for explicitly: a generator without a probe is an error then,
        not a veto that silently never runs (a profile's default threshold is not)."""
        if decoding == "grounded":
            check_grounded_backend(self.generator)

    # -- free ----------------------------------------------------------------------------------
    def run(
        self, prompt: list[dict[str, str]] | str, passages: list[Passage] | None = None
    ) -> Generated:
        return self.run_batch([{"prompt": prompt, "passages": passages}])[0]

    def run_batch(self, inputs: Sequence[Mapping[str, Any]]) -> list[Generated]:
        prompts = [item["prompt"] for item in inputs]
        if self.decoding == "grounded":
            passages = [list(item.get("passages") or []) for item in inputs]
            return self._grounded(prompts, passages)
        return [_generated(r) for r in self.generator.generate(prompts, self.options)]

    # -- streamed ------------------------------------------------------------------------------
    def stream(
        self, prompt: list[dict[str, str]] | str, passages: list[Passage] | None = None
    ) -> GeneratedStream:
        """The generation of ``run`` piece by piece; its ``output`` is what ``run`` returns."""
        if self.decoding == "grounded":
            quotable = list(passages or [])
            if not any(p.text.strip() for p in quotable):
                return GeneratedStream(None, None, finished=_nothing_to_quote())
            constraint = self.constraint(quotable)
            pieces = self.generator.stream(prompt, self.grounded_options(), constraint=constraint)
            return GeneratedStream(pieces, quotable, constraint=constraint)
        return GeneratedStream(self.generator.stream(prompt, self.options), None)

    # -- grounded ------------------------------------------------------------------------------
    def grounded_options(self) -> GenerationOptions:
        """The step's options with the grounded mode's stop and length cap applied."""
        base = self.options or GenerationOptions()
        stops = tuple(dict.fromkeys((*base.stop, "\n")))
        return base.merged(
            {
                "stop": stops,
                "max_new_tokens": min(base.max_new_tokens, self.max_answer_tokens),
            }
        )

    def constraint(self, passages: Sequence[Passage]) -> Any:
        """The span automaton over ``passages`` (None when there is nothing to quote)."""
        from ragkit.generation.grounded import SpanAutomaton

        generator: Any = self.generator
        generator.warm_up()
        if (
            self.require_probe
            and self.abstain_below
            and getattr(generator, "answerability_probe", None) is None
        ):
            raise DecodingError(
                f"--abstain-below {self.abstain_below:g} needs an answerability probe, and this "
                "generator's adapter has none (the packaged grounded-qa-gemma has one)"
            )
        return SpanAutomaton(
            [p.text for p in passages],
            generator.token_table(),
            generator.eos_token_ids,
            max_tokens=self.max_answer_tokens,
            abstain_bias=self.abstain_bias,
            abstain_below=self.abstain_below,
        )

    def _grounded(self, prompts: list[Any], passages: list[list[Passage]]) -> list[Generated]:
        out = [_nothing_to_quote() for _ in prompts]
        todo = [i for i, ps in enumerate(passages) if any(p.text.strip() for p in ps)]
        if todo:
            generator: Any = self.generator
            constraints = [self.constraint(passages[i]) for i in todo]
            results = generator.generate(
                [prompts[i] for i in todo], self.grounded_options(), constraints=constraints
            )
            for i, r, c in zip(todo, results, constraints, strict=True):
                out[i] = _generated(r, ground(r.text, passages[i], c))
        return out

    def to_config(self) -> dict[str, Any]:
        data: dict[str, Any] = self.generator.config.model_dump(mode="json", exclude={"options"})
        if self.options is not None:
            data["options"] = self.options.model_dump(mode="json", exclude_unset=True)
        if self.decoding != "free":
            data["decoding"] = self.decoding
            data["abstain_bias"] = self.abstain_bias
            data["max_answer_tokens"] = self.max_answer_tokens
            if self.abstain_below is not None:
                data["abstain_below"] = self.abstain_below
            if self.require_probe:
                data["require_probe"] = True
        return data

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> GenerateStep:
        """The saved generator config rebuilds the model, unless the load context's shared
        ``generator`` is that model (then it is re-used: one model in memory); the step's
        generator is offered as the shared one when none was."""
        from ragkit.generation.backends import generator_from_config

        params = dict(config)
        step_keys = (
            "options",
            "decoding",
            "abstain_bias",
            "max_answer_tokens",
            "abstain_below",
            "require_probe",
        )
        step = {key: params.pop(key) for key in step_keys if key in params}
        ctx = context if isinstance(context, LoadContext) else LoadContext(context)
        shared = ctx.get("generator")
        saved = getattr(shared, "config", None)
        if saved is not None and saved.model_dump(mode="json", exclude={"options"}) == params:
            generator = shared
        else:
            generator = generator_from_config({**params, "options": {}})
            ctx.provide("generator", generator)  # a no-op when another one is shared already
        return cls(generator, **step)


class GeneratedStream(Iterator[str]):
    """:meth:`GenerateStep.stream`'s pieces; ``output`` (a :class:`Generated`) once exhausted.

    ``passages`` is set for grounded decoding: the finished text is then located in them.
    ``finished`` is an output known without the model (grounded decoding with nothing to
    quote): no piece, just the output.
    """

    def __init__(
        self,
        pieces: GenerationStream | None,
        passages: list[Passage] | None,
        finished: Generated | None = None,
        constraint: Any = None,
    ) -> None:
        self._pieces = pieces
        self._passages = passages
        self._constraint = constraint
        self._collected: list[str] = []
        self.output: Generated | None = finished

    def __iter__(self) -> GeneratedStream:
        return self

    def __next__(self) -> str:
        if self._pieces is None or self.output is not None:
            raise StopIteration
        try:
            piece = next(self._pieces)
        except StopIteration:
            self.output = self._finish()
            raise
        self._collected.append(piece)
        return piece

    def _finish(self) -> Generated:
        result = getattr(self._pieces, "result", None)
        if result is None:  # a backend that kept no result: what was streamed is the text
            text = "".join(self._collected)
            grounding = (
                ground(text, self._passages, self._constraint)
                if self._passages is not None
                else None
            )
            return Generated(
                text=text.strip(),
                prompt_text="",
                finish_reason="stop",
                prompt_tokens=0,
                completion_tokens=0,
                grounding=grounding,
            )
        grounding = (
            ground(result.text, self._passages, self._constraint)
            if self._passages is not None
            else None
        )
        return _generated(result, grounding)

    def close(self) -> None:
        if self._pieces is not None:
            self._pieces.close()


def _nothing_to_quote() -> Generated:
    """Grounded decoding with no passage text: abstain without calling the model."""
    return Generated(
        text="",
        prompt_text="",
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
        grounding=Grounding(abstained=True, reason="no passages to answer from"),
    )


def _generated(result: Any, grounding: Grounding | None = None) -> Generated:
    return Generated(
        text=result.text.strip(),
        prompt_text=result.prompt_text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        grounding=grounding,
    )


def ground(text: str, passages: Sequence[Passage], constraint: Any = None) -> Grounding:
    """Where a grounded answer sits in ``passages`` (or that it abstained, and why).

    ``constraint`` is the automaton that produced ``text``: it carries the answerability
    probe's estimate when the generator has a probe, and whether that estimate decided.
    """
    grounding = _located(text, passages)
    estimate = getattr(constraint, "answerability", None)
    if estimate is None:
        return grounding
    update: dict[str, Any] = {"answerability": estimate}
    if grounding.abstained and getattr(constraint, "gated", False):
        update["reason"] = (
            f"the answerability check put P(answerable) at {estimate:.2f}, "
            f"below {constraint.abstain_below:.2f}"
        )
    return grounding.model_copy(update=update)


def _located(text: str, passages: Sequence[Passage]) -> Grounding:
    from ragkit.generation.grounded import (
        ABSTAIN_PHRASE,
        holds_answer_word,
        is_abstention,
        locate_span,
        span_text,
    )

    if not text.strip() or is_abstention(text):
        return Grounding(abstained=True, reason="the model chose to abstain")
    location = locate_span(text, [p.text for p in passages])
    if location is None:
        if ABSTAIN_PHRASE.startswith(span_text(text).lower()):  # cut by the length cap
            return Grounding(abstained=True, reason="the model chose to abstain")
        return Grounding(abstained=True, reason="the answer is not a span of any passage")
    if not holds_answer_word(span_text(text).encode("utf-8")):
        return Grounding(abstained=True, reason="the span holds no answer word")
    passage = passages[location.source]
    return Grounding(passage=passage.n, start=location.start, end=location.end)


def check_grounded_backend(generator: Any) -> None:
    """Refuse, in one line, a backend that cannot restrict tokens (API clients)."""
    if not can_constrain_tokens(generator):
        name = type(generator).__name__
        raise DecodingError(
            f"decoding 'grounded' needs a backend that can constrain tokens; {name} cannot "
            "(use --generator-backend transformers, the default, or llamacpp)"
        )
