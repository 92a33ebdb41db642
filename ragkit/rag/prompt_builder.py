"""Building the grounded-QA prompt from retrieved hits, within the model's context.

Passages are numbered so the answer can cite them. If everything does not fit, the
lowest-ranked passages are dropped first and, as a last resort, the remaining passage is
shortened; the question itself is never truncated. Each such decision is reported in
``notes`` (and so in the trace).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from prompts import ChatTemplate, PromptTemplate, library_template
from ragkit.errors import InvalidQueryError
from ragkit.pipeline import LoadContext, component
from ragkit.rag.schema import Passage
from ragkit.schema import Hit

DEFAULT_TEMPLATE = "grounded_qa"


class TokenBudget(Protocol):
    """The part of a generator the builder needs to fit a prompt in the context."""

    def count_tokens(self, prompt: Any, apply_chat_template: bool | None = None) -> int: ...

    def max_prompt_tokens(self, options: Any = None) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


class BuiltPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: list[dict[str, str]] | str
    passages: list[Passage]
    notes: list[str] = Field(default_factory=list)


@component(trace_outputs={"notes": "notes"})
class PromptBuilder:
    """Pipeline step: question + hits → numbered passages rendered into a template."""

    component_name = "prompt_builder"

    def __init__(
        self,
        template: str | PromptTemplate | ChatTemplate = DEFAULT_TEMPLATE,
        budget: TokenBudget | None = None,
        max_passage_chars: int | None = None,
        max_prompt_tokens: int | None = None,
    ) -> None:
        """``max_prompt_tokens`` caps the prompt below the model's context (the answering
        profile's cap: the longest prompt its adapter was trained on); lower-ranked passages are
        dropped to fit, with a note. It needs ``budget`` to count tokens."""
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}")
        self.template_name = template if isinstance(template, str) else None
        self.template = library_template(template) if isinstance(template, str) else template
        missing = {"question", "passages"} - set(self.template.variables)
        if missing:
            raise ValueError(
                f"a RAG template needs variables 'question' and 'passages'; {self.template.name!r} lacks {sorted(missing)}"
            )
        self.budget = budget
        self.max_passage_chars = max_passage_chars
        self.max_prompt_tokens = max_prompt_tokens

    @property
    def completion(self) -> bool:
        """Whether the template is completion-style text (for base models), not chat turns."""
        return isinstance(self.template, PromptTemplate)

    def render(self, question: str, passages: list[Passage]) -> list[dict[str, str]] | str:
        values = {"question": question, "passages": [p.model_dump() for p in passages]}
        return self.template.render(**values)

    def run(self, question: str, hits: list[Hit]) -> BuiltPrompt:
        if not question.strip():
            raise InvalidQueryError("question is empty")
        passages = [Passage.from_hit(i, hit) for i, hit in enumerate(hits, start=1)]
        notes: list[str] = []
        if self.max_passage_chars is not None:
            passages = [
                p.model_copy(update={"text": p.text[: self.max_passage_chars]}) for p in passages
            ]
        prompt = self.render(question, passages)
        if self.budget is None:
            return BuiltPrompt(prompt=prompt, passages=passages, notes=notes)
        context = self.budget.max_prompt_tokens()
        limit = min(context, self.max_prompt_tokens or context)
        fits = "the model's context" if limit == context else "the answering profile's prompt cap"
        if self.budget.count_tokens(self.render(question, [])) > limit:
            raise InvalidQueryError(
                f"the question alone is longer than the model's prompt budget of {limit} tokens"
            )
        dropped = 0
        while passages and self.budget.count_tokens(prompt) > limit and len(passages) > 1:
            passages = passages[:-1]
            dropped += 1
            prompt = self.render(question, passages)
        if dropped:
            notes.append(
                f"dropped the {dropped} lowest-ranked passage(s) to fit {fits} of {limit} prompt tokens"
            )
        if passages and self.budget.count_tokens(prompt) > limit:
            excess = self.budget.count_tokens(prompt) - limit
            only = passages[0]
            passage_tokens = self.budget.count_tokens(only.text, apply_chat_template=False)
            keep = max(0, passage_tokens - excess - 8)
            short = self.budget.truncate(only.text, keep)
            passages = [only.model_copy(update={"text": short})]
            prompt = self.render(question, passages)
            notes.append(
                f"truncated passage [1] from {passage_tokens} to {keep} tokens to fit {fits}"
            )
        return BuiltPrompt(prompt=prompt, passages=passages, notes=notes)

    def to_config(self) -> dict[str, Any]:
        """``budget`` is ``"generator"`` when the builder fits prompts to the pipeline's
        generator (re-attached at load time), None when it does not budget."""
        template: Any = self.template_name
        if template is None:
            template = self.template.model_dump(mode="json")
        return {
            "template": template,
            "max_passage_chars": self.max_passage_chars,
            "budget": None if self.budget is None else "generator",
            **({"max_prompt_tokens": self.max_prompt_tokens} if self.max_prompt_tokens else {}),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> PromptBuilder:
        """The budget binds to the pipeline's generator as soon as the load provides one (files
        written before ``budget`` was saved always budgeted when the pipeline had a generator)."""
        params = dict(config)
        budget = params.pop("budget", "generator")
        template = params.get("template")
        if isinstance(template, Mapping):
            params["template"] = (
                ChatTemplate.model_validate(dict(template))
                if template.get("kind") == "chat"
                else PromptTemplate.model_validate(dict(template))
            )
        builder = cls(**params)
        if budget == "generator":
            ctx = context if isinstance(context, LoadContext) else LoadContext(context)
            ctx.bind("generator", builder._attach_budget)
        elif budget is not None:
            raise ValueError(f"budget must be 'generator' or null, got {budget!r}")
        return builder

    def _attach_budget(self, generator: Any) -> None:
        if self.budget is None:
            self.budget = generator
