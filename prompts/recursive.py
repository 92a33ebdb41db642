"""Recursive prompting: least-to-most decomposition, self-refine, recursive summarisation.

Each strategy makes several dependent model calls, so each has two independent brakes that
guarantee it terminates: a structural limit (decomposition depth and sub-question count,
refine rounds, summary levels) and an optional token budget (``max_tokens``, prompt plus
completion tokens over all calls, checked before every call). When a brake fires the
strategy returns its best answer so far and says why in ``stopped``. Every call is recorded
in ``calls``, a :class:`~prompts.calls.CallNode` tree that shows which stage made it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from prompts.builtin import library_template
from prompts.calls import CallNode, CallRecorder, TokenBudgetExhaustedError
from prompts.config import (
    counter_from_config,
    counter_to_config,
    need,
    template_from_config,
    template_to_config,
)
from prompts.protocols import PromptValue, TextGenerator, as_messages
from prompts.template import ChatTemplate, PromptTemplate

Template = PromptTemplate | ChatTemplate

_ITEM = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|Q\d*\s*:)\s*(.+?)\s*$")


def parse_subquestions(text: str, limit: int) -> list[str]:
    """Sub-questions from a numbered or bulleted list (lines ending in "?" otherwise)."""
    items = [m.group(1) for line in text.splitlines() if (m := _ITEM.match(line))]
    if not items:
        items = [line.strip() for line in text.splitlines() if line.strip().endswith("?")]
    unique = list(dict.fromkeys(item for item in items if item))
    return unique[:limit]


def _context_of(context: str, passages: Any) -> str:
    if not passages:
        return context
    lines = []
    for i, p in enumerate(passages, start=1):
        n = p.get("n", i) if isinstance(p, Mapping) else getattr(p, "n", i)
        text = p.get("text", "") if isinstance(p, Mapping) else getattr(p, "text", str(p))
        lines.append(f"[{n}] {text}")
    return "\n".join([context, *lines]).strip()


class SubAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str
    depth: int = Field(ge=1)


class LeastToMostResult(BaseModel):
    """The composed answer, the sub-questions in the order answered, and the call tree."""

    model_config = ConfigDict(extra="forbid")

    text: str
    steps: list[SubAnswer]
    stopped: Literal["complete", "budget"]
    calls: CallNode
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def answer(self) -> str:
        return self.text


class LeastToMost:
    """Decompose, answer sub-questions in order (each sees the earlier answers), compose.

    With ``max_depth > 1`` a sub-question is itself decomposed, recursively, until the depth
    limit; a question the model does not split (one item) is answered directly. At most
    ``max_subquestions`` are kept per split, so the number of calls is bounded by the tree of
    that fan-out and depth even without a token budget.
    """

    component_name = "least_to_most"

    def __init__(
        self,
        generator: TextGenerator,
        max_subquestions: int = 4,
        max_depth: int = 1,
        max_tokens: int | None = None,
        options: Mapping[str, Any] | None = None,
        decompose_template: Template | None = None,
        answer_template: Template | None = None,
    ) -> None:
        if max_subquestions < 1 or max_depth < 0:
            raise ValueError("max_subquestions must be >= 1 and max_depth >= 0")
        self.generator = generator
        self.max_subquestions = max_subquestions
        self.max_depth = max_depth
        self.max_tokens = max_tokens
        self.options = dict(options or {})
        self.decompose_template = decompose_template or library_template("decompose")
        self.answer_template = answer_template or library_template("answer_with_steps")

    def _answer(
        self,
        rec: CallRecorder,
        node: CallNode,
        question: str,
        context: str,
        steps: list[SubAnswer],
        kind: str,
    ) -> str:
        prompt = self.answer_template.render(
            question=question,
            context=context,
            steps=[s.model_dump() for s in steps],
        )
        return rec.generate([prompt], kind=kind, parent=node, labels=[question])[0].strip()

    def _solve(
        self,
        rec: CallRecorder,
        node: CallNode,
        question: str,
        context: str,
        prior: list[SubAnswer],
        depth: int,
        record: list[SubAnswer],
    ) -> str:
        if depth < self.max_depth:
            prompt = self.decompose_template.render(
                question=question, context=context, max_subquestions=self.max_subquestions
            )
            listing = rec.generate([prompt], kind="decompose", parent=node, labels=[question])[0]
            subs = parse_subquestions(listing, self.max_subquestions)
            if len(subs) > 1:
                solved: list[SubAnswer] = []
                for sub in subs:
                    child = rec.stage("subquestion", parent=node, label=sub)
                    answer = self._solve(
                        rec, child, sub, context, prior + solved, depth + 1, record
                    )
                    step = SubAnswer(question=sub, answer=answer, depth=depth + 1)
                    solved.append(step)
                    record.append(step)
                return self._answer(rec, node, question, context, prior + solved, "compose")
        return self._answer(rec, node, question, context, prior, "answer")

    def run(self, question: str, context: str = "", passages: Any = None) -> LeastToMostResult:
        """``passages`` (objects or dicts with ``n`` and ``text``) are added to the context."""
        rec = CallRecorder(self.generator, self.options, self.max_tokens)
        rec.root.kind, rec.root.label = "least_to_most", question
        record: list[SubAnswer] = []
        full_context = _context_of(context, passages)
        stopped: Literal["complete", "budget"] = "complete"
        try:
            text = self._solve(rec, rec.root, question, full_context, [], 0, record)
        except TokenBudgetExhaustedError:
            stopped = "budget"
            text = record[-1].answer if record else ""
        return LeastToMostResult(
            text=text,
            steps=record,
            stopped=stopped,
            calls=rec.root,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
        )

    def to_config(self) -> dict[str, Any]:
        """Pipeline config; the generator is re-attached from the load context."""
        return {
            "max_subquestions": self.max_subquestions,
            "max_depth": self.max_depth,
            "max_tokens": self.max_tokens,
            "options": dict(self.options),
            "decompose_template": template_to_config(self.decompose_template),
            "answer_template": template_to_config(self.answer_template),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> LeastToMost:
        params = _with_templates(config, ("decompose_template", "answer_template"))
        return cls(need(context, "generator", cls.component_name), **params)


def _with_templates(config: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Constructor keywords from a config, with the named templates rebuilt."""
    params = dict(config)
    for key in keys:
        if params.get(key) is not None:
            params[key] = template_from_config(params[key])
    return params


class RefineRound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    draft: str
    critique: str
    refined: str | None = None


class Refined(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    rounds: list[RefineRound]
    stopped: Literal["done", "max_rounds", "unchanged", "budget"]
    calls: CallNode
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def answer(self) -> str:
        return self.text


def _task_of(prompt: PromptValue) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(m["content"] for m in as_messages(prompt) if m["role"] != "assistant")


class SelfRefine:
    """Generate, critique, refine — until the critique says ``DONE`` or ``max_rounds``.

    It also stops when a refinement returns the draft unchanged (another round would see the
    same draft and, with greedy decoding, write the same critique).
    """

    component_name = "self_refine"

    def __init__(
        self,
        generator: TextGenerator,
        max_rounds: int = 2,
        max_tokens: int | None = None,
        stop_marker: str = "DONE",
        options: Mapping[str, Any] | None = None,
        critique_template: Template | None = None,
        refine_template: Template | None = None,
    ) -> None:
        if max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {max_rounds}")
        self.generator = generator
        self.max_rounds = max_rounds
        self.max_tokens = max_tokens
        self.stop_marker = stop_marker
        self.done = re.compile(rf"\b{re.escape(stop_marker)}\b")
        self.options = dict(options or {})
        self.critique_template = critique_template or library_template("critique")
        self.refine_template = refine_template or library_template("refine")

    def run(self, prompt: PromptValue) -> Refined:
        rec = CallRecorder(self.generator, self.options, self.max_tokens)
        rec.root.kind = "self_refine"
        task = _task_of(prompt)
        rounds: list[RefineRound] = []
        draft = ""
        stopped: Literal["done", "max_rounds", "unchanged", "budget"] = "max_rounds"
        try:
            draft = rec.generate([prompt], kind="draft")[0].strip()
            for i in range(1, self.max_rounds + 1):
                stage = rec.stage("round", label=str(i))
                critique = rec.generate(
                    [self.critique_template.render(task=task, draft=draft)],
                    kind="critique",
                    parent=stage,
                )[0].strip()
                rounds.append(RefineRound(draft=draft, critique=critique))
                if self.done.search(critique):
                    stopped = "done"
                    break
                refined = rec.generate(
                    [self.refine_template.render(task=task, draft=draft, critique=critique)],
                    kind="refine",
                    parent=stage,
                )[0].strip()
                rounds[-1].refined = refined
                if refined == draft:
                    stopped = "unchanged"
                    break
                draft = refined
        except TokenBudgetExhaustedError:
            stopped = "budget"
        return Refined(
            text=draft,
            rounds=rounds,
            stopped=stopped,
            calls=rec.root,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
        )

    def to_config(self) -> dict[str, Any]:
        """Pipeline config; the generator is re-attached from the load context."""
        return {
            "max_rounds": self.max_rounds,
            "max_tokens": self.max_tokens,
            "stop_marker": self.stop_marker,
            "options": dict(self.options),
            "critique_template": template_to_config(self.critique_template),
            "refine_template": template_to_config(self.refine_template),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> SelfRefine:
        params = _with_templates(config, ("critique_template", "refine_template"))
        return cls(need(context, "generator", cls.component_name), **params)


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    levels: list[int] = Field(description="Chunks summarised at each map level.")
    stopped: Literal["fits", "max_depth", "no_progress", "budget"]
    notes: list[str] = Field(default_factory=list)
    calls: CallNode
    prompt_tokens: int = 0
    completion_tokens: int = 0


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_to_fit(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Chunks of at most ``max_tokens`` tokens, cut at paragraph, sentence or word boundaries.

    Pieces are packed greedily in order; a chunk's real token count is checked after packing
    (token counts are not exactly additive) and its last piece moves on if it overflows. Only a
    single word longer than the budget can produce an oversized chunk: words are never cut.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")

    def pieces(part: str, level: int) -> list[str]:
        if count_tokens(part) <= max_tokens or level == 3:
            return [part]
        if level == 0:
            parts = part.split("\n\n")
        elif level == 1:
            parts = _SENTENCE.split(part)
        else:
            parts = part.split()
        out: list[str] = []
        for p in parts:
            if p.strip():
                out.extend(pieces(p.strip(), level + 1))
        return out

    chunks: list[str] = []
    current: list[str] = []
    for piece in pieces(text.strip(), 0):
        candidate = " ".join([*current, piece])
        if current and count_tokens(candidate) > max_tokens:
            chunks.append(" ".join(current))
            current = [piece]
        else:
            current.append(piece)
    if current:
        chunks.append(" ".join(current))
    return chunks


class RecursiveSummary:
    """Map-reduce summarisation that recurses until the text fits one call.

    A text of at most ``max_input_tokens`` (counted by ``count_tokens`` on the bare text) is
    summarised in one call. A longer one is split into chunks that fit, every chunk is
    summarised (all in one batched call per level), and the joined summaries are treated as
    the new text. At ``max_depth`` levels — or when a level did not shrink the text — the
    lowest-priority (last) chunks are dropped so the final call fits, and a note says so.
    """

    component_name = "recursive_summary"
    trace_outputs: ClassVar[Mapping[str, str]] = {"notes": "notes"}

    def __init__(
        self,
        generator: TextGenerator,
        count_tokens: Callable[[str], int],
        max_input_tokens: int,
        max_depth: int = 3,
        max_words: int = 80,
        max_tokens: int | None = None,
        options: Mapping[str, Any] | None = None,
        template: Template | None = None,
    ) -> None:
        if max_input_tokens < 1 or max_depth < 0:
            raise ValueError("max_input_tokens must be >= 1 and max_depth >= 0")
        self.generator = generator
        self.count_tokens = count_tokens
        self.max_input_tokens = max_input_tokens
        self.max_depth = max_depth
        self.max_words = max_words
        self.max_tokens = max_tokens
        self.options = dict(options or {})
        self.template = template or library_template("summarize")

    def _prompt(self, text: str) -> Any:
        return self.template.render(text=text, max_words=self.max_words)

    def run(self, text: str) -> Summary:
        rec = CallRecorder(self.generator, self.options, self.max_tokens)
        rec.root.kind = "recursive_summary"
        levels: list[int] = []
        notes: list[str] = []
        current = text
        stopped: Literal["fits", "max_depth", "no_progress", "budget"] = "fits"
        try:
            while self.count_tokens(current) > self.max_input_tokens:
                chunks = split_to_fit(current, self.count_tokens, self.max_input_tokens)
                if len(levels) >= self.max_depth:
                    stopped = "max_depth"
                    current = self._keep_fitting(chunks, notes)
                    break
                stage = rec.stage("map", label=f"level {len(levels) + 1}")
                summaries = rec.generate(
                    [self._prompt(c) for c in chunks],
                    kind="summarize_chunk",
                    parent=stage,
                    labels=[f"chunk {i}" for i in range(len(chunks))],
                )
                levels.append(len(chunks))
                merged = "\n\n".join(s.strip() for s in summaries if s.strip())
                if self.count_tokens(merged) >= self.count_tokens(current):
                    stopped = "no_progress"
                    notes.append(f"level {len(levels)} did not shorten the text")
                    current = self._keep_fitting(
                        split_to_fit(merged, self.count_tokens, self.max_input_tokens), notes
                    )
                    break
                current = merged
            final = rec.generate([self._prompt(current)], kind="summarize")[0].strip()
        except TokenBudgetExhaustedError:
            stopped = "budget"
            final = current if self.count_tokens(current) <= self.max_input_tokens else ""
            notes.append("token budget spent before the final summary")
        return Summary(
            text=final,
            levels=levels,
            stopped=stopped,
            notes=notes,
            calls=rec.root,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
        )

    def _keep_fitting(self, chunks: list[str], notes: list[str]) -> str:
        kept = chunks[:1]
        for chunk in chunks[1:]:
            candidate = "\n\n".join([*kept, chunk])
            if self.count_tokens(candidate) > self.max_input_tokens:
                break
            kept.append(chunk)
        if len(kept) < len(chunks):
            notes.append(
                f"dropped the last {len(chunks) - len(kept)} of {len(chunks)} chunk(s) to fit"
            )
        return "\n\n".join(kept)

    def to_config(self) -> dict[str, Any]:
        """Pipeline config; the generator and its token counter are re-attached."""
        return {
            "count_tokens": counter_to_config(self.count_tokens),
            "max_input_tokens": self.max_input_tokens,
            "max_depth": self.max_depth,
            "max_words": self.max_words,
            "max_tokens": self.max_tokens,
            "options": dict(self.options),
            "template": template_to_config(self.template),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> RecursiveSummary:
        params = _with_templates(config, ("template",))
        count = counter_from_config(params.pop("count_tokens", None), context, cls.component_name)
        return cls(need(context, "generator", cls.component_name), count, **params)
