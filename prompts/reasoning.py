"""Chain-of-thought prompting and self-consistency voting.

``ChainOfThought`` asks for reasoning before the answer — zero-shot with an instruction, or
few-shot with worked rationales — and splits the completion into reasoning and answer with a
configurable parser. ``SelfConsistency`` samples several reasoning paths in ONE batched
generator call (the prompt repeated, sampling on, seeded), extracts and normalises each
answer, and majority-votes; the vote share is the confidence.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from prompts.calls import CallNode, CallRecorder
from prompts.config import (
    need,
    parser_from_config,
    parser_to_config,
    selector_from_config,
    selector_to_config,
)
from prompts.examples import Example, insert_examples
from prompts.parsers import AnswerParser, MarkerParser, fallback_answer
from prompts.protocols import PromptValue, TextGenerator, as_messages
from prompts.selectors import ExampleSelector, FixedSelector

ZERO_SHOT_INSTRUCTION = "Let's think step by step."


class Reasoned(BaseModel):
    """A chain-of-thought result: ``text`` is the final answer, ``reasoning`` what led to it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The extracted final answer (the fallback when not parsed).")
    reasoning: str = Field(description="The completion before the answer.")
    raw: str = Field(description="The whole completion.")
    parsed: bool = Field(description="Whether the parser found an answer in the format asked.")
    prompt: PromptValue
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def answer(self) -> str:
        return self.text


def _query_of(prompt: PromptValue) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in as_messages(prompt) if m["role"] == "user"]
    return users[-1] if users else ""


def _append_to_last_user(prompt: PromptValue, addition: str) -> PromptValue:
    if isinstance(prompt, str):
        return f"{prompt.rstrip()}\n{addition}"
    messages = as_messages(prompt)
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = f"{message['content'].rstrip()}\n{addition}"
            return messages
    return [*messages, {"role": "user", "content": addition}]


def split_answer(raw: str, parser: AnswerParser) -> tuple[str, str, bool]:
    """``(answer, reasoning, parsed)`` of one completion."""
    found = parser.extract(raw)
    if found is None:
        return fallback_answer(raw), raw.strip(), False
    return found.answer, raw[: found.start].strip(), True


class ChainOfThought:
    """Pipeline step and standalone strategy: reason step by step, then answer.

    ``examples`` (a list or a selector) turns on few-shot CoT: each example's ``rationale`` is
    shown before its answer, in the format the parser reads. Without examples the zero-shot
    instruction ("Let's think step by step.") is used. ``options`` are generator keywords
    (``max_new_tokens`` should leave room for the reasoning).
    """

    component_name = "chain_of_thought"

    def __init__(
        self,
        generator: TextGenerator,
        parser: AnswerParser | None = None,
        examples: Sequence[Example] | ExampleSelector | None = None,
        instruction: str = ZERO_SHOT_INSTRUCTION,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.generator = generator
        self.parser: AnswerParser = parser or MarkerParser()
        if examples is None or isinstance(examples, ExampleSelector):
            self.selector = examples
        else:
            self.selector = FixedSelector(list(examples))
        self.instruction = instruction
        self.options = dict(options or {})

    def prepare(self, prompt: PromptValue) -> PromptValue:
        """The prompt with worked examples (if any) and the reasoning instruction added."""
        if self.selector is not None:
            shots = self.selector.select(_query_of(prompt))
            missing = [e.input for e in shots if not e.rationale]
            if missing:
                raise ValueError(f"few-shot CoT needs a rationale on every example: {missing[0]!r}")
            prompt = insert_examples(prompt, shots, with_rationale=True)
        return _append_to_last_user(prompt, f"{self.instruction} {self.parser.instruction}")

    def _result(self, prompt: PromptValue, node: CallNode) -> Reasoned:
        answer, reasoning, parsed = split_answer(node.output, self.parser)
        return Reasoned(
            text=answer,
            reasoning=reasoning,
            raw=node.output,
            parsed=parsed,
            prompt=prompt,
            prompt_tokens=node.prompt_tokens,
            completion_tokens=node.completion_tokens,
        )

    def run(self, prompt: PromptValue) -> Reasoned:
        return self.run_batch([{"prompt": prompt}])[0]

    def run_batch(self, inputs: Sequence[Mapping[str, Any]]) -> list[Reasoned]:
        """Many prompts in one generator call (the pipeline's batched path)."""
        prepared = [self.prepare(item["prompt"]) for item in inputs]
        recorder = CallRecorder(self.generator, self.options)
        recorder.generate(prepared, kind="reason")
        return [
            self._result(p, node) for p, node in zip(prepared, recorder.root.children, strict=True)
        ]

    def ask(self, question: str) -> Reasoned:
        """Standalone use with a plain question."""
        return self.run(question)

    def to_config(self) -> dict[str, Any]:
        """Pipeline config; the generator is re-attached from the load context."""
        return {
            "parser": parser_to_config(self.parser),
            "examples": selector_to_config(self.selector) if self.selector is not None else None,
            "instruction": self.instruction,
            "options": dict(self.options),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> ChainOfThought:
        return cls(need(context, "generator", cls.component_name), **_cot_params(config, context))


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation.replace(".", ""))


def normalize_answer(answer: str) -> str:
    """Lower case, digits' thousands separators, punctuation, articles and spaces removed.

    The SQuAD normalisation plus number clean-up, so "The Eiffel Tower." and "eiffel tower"
    — or "1,000" and "1000" — vote together.
    """
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", answer.lower())
    text = re.sub(r"(\d+)\.0+\b", r"\1", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", "", text)  # keep only decimal points
    text = text.translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


class Sample(BaseModel):
    """One sampled reasoning path."""

    model_config = ConfigDict(extra="forbid")

    raw: str
    reasoning: str
    answer: str
    normalized: str
    parsed: bool


class Voted(BaseModel):
    """The majority answer, its vote share, and every sample behind it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The winning answer, in its most frequent surface form.")
    confidence: float = Field(ge=0.0, le=1.0, description="Winning votes / samples drawn.")
    votes: dict[str, int] = Field(description="Normalised answer -> votes, most votes first.")
    samples: list[Sample]
    notes: list[str] = Field(default_factory=list)
    calls: CallNode
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def answer(self) -> str:
        return self.text

    @property
    def distribution(self) -> dict[str, float]:
        """Vote shares over all samples (unparsed samples count in the denominator)."""
        n = len(self.samples) or 1
        return {k: v / n for k, v in self.votes.items()}


class SelfConsistency:
    """Pipeline step and standalone strategy: sample N reasoning paths and majority-vote.

    The N samples come from one generator call (the prompt repeated N times, ``do_sample``,
    ``temperature``, ``seed``), so a batched backend decodes them together. Only answers the
    parser found vote; when none was parsed the fallback answers vote and a note says so. Ties
    go to the answer that appeared first, so a seeded run is reproducible.
    """

    component_name = "self_consistency"
    trace_outputs: ClassVar[Mapping[str, str]] = {"notes": "notes"}

    def __init__(
        self,
        generator: TextGenerator,
        n: int = 5,
        temperature: float = 0.7,
        seed: int | None = 0,
        parser: AnswerParser | None = None,
        normalize: Callable[[str], str] = normalize_answer,
        examples: Sequence[Example] | ExampleSelector | None = None,
        instruction: str = ZERO_SHOT_INSTRUCTION,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature <= 0:
            raise ValueError("self-consistency needs temperature > 0 (distinct samples)")
        self.cot = ChainOfThought(generator, parser, examples, instruction, options)
        self.n = n
        self.temperature = temperature
        self.seed = seed
        self.normalize = normalize

    def _sampling(self) -> dict[str, Any]:
        options: dict[str, Any] = {"do_sample": True, "temperature": self.temperature}
        if self.seed is not None:
            options["seed"] = self.seed
        return options

    def run(self, prompt: PromptValue) -> Voted:
        prepared = self.cot.prepare(prompt)
        recorder = CallRecorder(self.cot.generator, self.cot.options)
        stage = recorder.stage("self_consistency", label=f"n={self.n}")
        recorder.generate([prepared] * self.n, kind="sample", parent=stage, **self._sampling())
        samples = []
        for node in stage.children:
            answer, reasoning, parsed = split_answer(node.output, self.cot.parser)
            samples.append(
                Sample(
                    raw=node.output,
                    reasoning=reasoning,
                    answer=answer,
                    normalized=self.normalize(answer),
                    parsed=parsed,
                )
            )
        return self._vote(samples, recorder)

    def _vote(self, samples: list[Sample], recorder: CallRecorder) -> Voted:
        notes: list[str] = []
        voters = [s for s in samples if s.parsed]
        if not voters:
            notes.append("no sample gave an answer in the requested format; voting on last lines")
            voters = samples
        counts = Counter(s.normalized for s in voters)
        first_seen = {key: i for i, key in reversed(list(enumerate(s.normalized for s in voters)))}
        ranked = sorted(counts, key=lambda k: (-counts[k], first_seen[k]))
        winner = ranked[0]
        forms = Counter(s.answer for s in voters if s.normalized == winner)
        text = max(
            forms, key=lambda f: (forms[f], -next(i for i, s in enumerate(voters) if s.answer == f))
        )
        return Voted(
            text=text,
            confidence=counts[winner] / len(samples),
            votes={k: counts[k] for k in ranked},
            samples=samples,
            notes=notes,
            calls=recorder.root,
            prompt_tokens=recorder.prompt_tokens,
            completion_tokens=recorder.completion_tokens,
        )

    def ask(self, question: str) -> Voted:
        return self.run(question)

    @property
    def generator(self) -> TextGenerator:
        return self.cot.generator

    def to_config(self) -> dict[str, Any]:
        """Pipeline config; the generator is re-attached from the load context."""
        if self.normalize is not normalize_answer:
            raise ValueError("a custom normalize function cannot be saved")
        return {
            "n": self.n,
            "temperature": self.temperature,
            "seed": self.seed,
            **self.cot.to_config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> SelfConsistency:
        return cls(need(context, "generator", cls.component_name), **_cot_params(config, context))


def _cot_params(config: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Constructor keywords from a chain-of-thought config (parser and examples rebuilt)."""
    params = dict(config)
    if params.get("parser") is not None:
        params["parser"] = parser_from_config(params["parser"])
    if params.get("examples") is not None:
        params["examples"] = selector_from_config(params["examples"], context, "chain_of_thought")
    return params
