"""Few-shot prompting: examples chosen per query by a selector, laid out by templates.

Two shapes, for two uses:

* :class:`FewShotTemplate` builds a whole prompt string from a prefix, one example template
  applied per example, and a suffix holding the query. Use it when you own the prompt.
* :class:`FewShotStep` adds demonstrations to a prompt someone else built (ragkit's
  grounded-QA conversation), as user/assistant turns before the final question. Use it as a
  pipeline step between the prompt builder and the generator.

Both fit a token budget by dropping the lowest-ranked examples first and report what they
dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from prompts.budget import fit_ranked
from prompts.config import (
    counter_from_config,
    counter_to_config,
    selector_from_config,
    selector_to_config,
)
from prompts.examples import Example, insert_examples
from prompts.protocols import PromptValue
from prompts.selectors import ExampleSelector, FixedSelector
from prompts.template import PromptTemplate, TemplateVariableError

Order = Literal["best_first", "best_last"]


class FewShotPrompt(BaseModel):
    """A rendered few-shot prompt and the examples in it (in prompt order)."""

    model_config = ConfigDict(extra="forbid")

    prompt: PromptValue
    examples: list[Example]
    notes: list[str] = Field(default_factory=list)


def _as_selector(selector: ExampleSelector | Sequence[Example]) -> ExampleSelector:
    if isinstance(selector, ExampleSelector):
        return selector
    return FixedSelector(list(selector))


def _ordered(examples: list[Example], order: Order) -> list[Example]:
    # Ranked best first; "best_last" puts the most relevant example next to the query,
    # where it influences the completion most.
    return list(reversed(examples)) if order == "best_last" else examples


class FewShotTemplate:
    """``prefix`` + examples (each through ``example_template``) + ``suffix``.

    The suffix holds the query variable (``input`` by default); other variables of prefix and
    suffix are declared and checked like any template's. ``count_tokens`` with ``max_tokens``
    turns on budgeting.
    """

    def __init__(
        self,
        selector: ExampleSelector | Sequence[Example],
        example_template: str = "Input: {{ input }}\nOutput: {{ output }}",
        suffix: str = "Input: {{ input }}\nOutput:",
        prefix: str = "",
        separator: str = "\n\n",
        input_variable: str = "input",
        order: Order = "best_last",
        count_tokens: Callable[[Any], int] | None = None,
        max_tokens: int | None = None,
        name: str = "fewshot",
    ) -> None:
        if (count_tokens is None) != (max_tokens is None):
            raise ValueError("token budgeting needs both count_tokens and max_tokens")
        self.selector = _as_selector(selector)
        self.name = name
        self.example_template = PromptTemplate(name=f"{name}.example", template=example_template)
        self.prefix = PromptTemplate(name=f"{name}.prefix", template=prefix)
        self.suffix = PromptTemplate(name=f"{name}.suffix", template=suffix)
        if input_variable not in self.suffix.variables:
            raise TemplateVariableError(
                f"template {name!r}: the suffix must use the query variable {input_variable!r}"
            )
        self.separator = separator
        self.input_variable = input_variable
        self.order = order
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens

    @property
    def variables(self) -> list[str]:
        """Variables a caller passes to :meth:`render` (the query variable included)."""
        return sorted(set(self.prefix.variables) | set(self.suffix.variables))

    def _compose(self, examples: list[Example], values: dict[str, Any]) -> str:
        parts: list[str] = []
        head = self.prefix.render(**{v: values[v] for v in self.prefix.variables})
        if head:
            parts.append(head)
        for example in _ordered(examples, self.order):
            available = example.values()
            missing = [v for v in self.example_template.variables if v not in available]
            if missing:
                raise TemplateVariableError(
                    f"template {self.example_template.name!r}: example lacks field {missing[0]!r}"
                )
            parts.append(
                self.example_template.render(
                    **{v: available[v] for v in self.example_template.variables}
                )
            )
        parts.append(self.suffix.render(**{v: values[v] for v in self.suffix.variables}))
        return self.separator.join(parts)

    def build(self, **values: Any) -> FewShotPrompt:
        """Select examples for the query, render, fit the budget; report dropped examples."""
        declared = set(self.variables)
        missing = sorted(declared - set(values))
        if missing:
            raise TemplateVariableError(f"template {self.name!r}: missing variable {missing[0]!r}")
        unknown = sorted(set(values) - declared)
        if unknown:
            raise TemplateVariableError(f"template {self.name!r}: unknown variable {unknown[0]!r}")
        examples = self.selector.select(str(values[self.input_variable]))
        if self.count_tokens is None or self.max_tokens is None:
            return FewShotPrompt(prompt=self._compose(examples, values), examples=examples)
        fitted = fit_ranked(
            examples,
            lambda kept: self._compose(kept, values),
            self.count_tokens,
            self.max_tokens,
            variable="examples",
        )
        notes = [fitted.report.note] if fitted.report.dropped else []
        return FewShotPrompt(
            prompt=fitted.prompt, examples=_ordered(fitted.items, self.order), notes=notes
        )

    def render(self, **values: Any) -> str:
        """The prompt text only."""
        return str(self.build(**values).prompt)

    def run(self, question: str) -> FewShotPrompt:
        """Pipeline step: the query arrives as ``question``."""
        return self.build(**{self.input_variable: question})


class FewShotStep:
    """Pipeline step: insert selected demonstrations into an already-built prompt.

    ``run(prompt, question)`` selects examples for ``question`` and puts them before the
    final user message (see :func:`prompts.examples.insert_examples`), dropping the
    lowest-ranked ones when ``count_tokens``/``max_tokens`` say the prompt is too long.
    """

    component_name = "fewshot"
    trace_outputs: ClassVar[Mapping[str, str]] = {"notes": "notes"}

    def __init__(
        self,
        selector: ExampleSelector | Sequence[Example],
        count_tokens: Callable[[Any], int] | None = None,
        max_tokens: int | None = None,
        order: Order = "best_last",
        with_rationale: bool = False,
    ) -> None:
        if (count_tokens is None) != (max_tokens is None):
            raise ValueError("token budgeting needs both count_tokens and max_tokens")
        self.selector = _as_selector(selector)
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.order = order
        self.with_rationale = with_rationale

    def run(self, prompt: PromptValue, question: str) -> FewShotPrompt:
        examples = self.selector.select(question)

        def render(kept: list[Example]) -> PromptValue:
            return insert_examples(prompt, _ordered(kept, self.order), self.with_rationale)

        if self.count_tokens is None or self.max_tokens is None:
            return FewShotPrompt(prompt=render(examples), examples=_ordered(examples, self.order))
        fitted = fit_ranked(
            examples, render, self.count_tokens, self.max_tokens, variable="examples"
        )
        notes = [fitted.report.note] if fitted.report.dropped else []
        return FewShotPrompt(
            prompt=fitted.prompt, examples=_ordered(fitted.items, self.order), notes=notes
        )

    def to_config(self) -> dict[str, Any]:
        """Pipeline config; the selector's embedder and the token counter are re-attached."""
        return {
            "selector": selector_to_config(self.selector),
            "count_tokens": counter_to_config(self.count_tokens),
            "max_tokens": self.max_tokens,
            "order": self.order,
            "with_rationale": self.with_rationale,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> FewShotStep:
        params = dict(config)
        selector = selector_from_config(params.pop("selector", None), context, cls.component_name)
        count = counter_from_config(params.pop("count_tokens", None), context, cls.component_name)
        return cls(selector, count_tokens=count, **params)
