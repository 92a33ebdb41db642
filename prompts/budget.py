"""Fitting ranked, variable-length prompt parts into a token budget.

Retrieved passages and few-shot examples arrive ranked (best first). When the prompt is too
long the cheapest loss is the lowest-ranked item, so items are dropped whole from the end
until the rendered prompt fits; an item is never cut, so no token is ever split. What was
dropped is reported, because a prompt that silently lost its evidence is hard to debug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class PromptBudgetError(ValueError):
    """Even with every droppable item removed the prompt exceeds the budget."""


class FitReport(BaseModel):
    """What fitting a prompt into a budget kept and dropped."""

    model_config = ConfigDict(extra="forbid")

    variable: str = Field(description="The template variable whose items were fitted.")
    budget: int = Field(ge=0)
    tokens: int = Field(ge=0, description="Tokens of the final prompt.")
    kept: int = Field(ge=0, description="Items kept (the best-ranked ones).")
    dropped: list[int] = Field(
        default_factory=list, description="Rank positions (0 = best) of the dropped items."
    )

    @property
    def note(self) -> str:
        """A one-line human summary, empty when nothing was dropped."""
        if not self.dropped:
            return ""
        return (
            f"dropped {len(self.dropped)} lowest-ranked item(s) of {self.variable!r} "
            f"(ranks {', '.join(str(i) for i in self.dropped)}) to fit {self.budget} tokens"
        )


class Fitted(BaseModel, Generic[T]):
    """The rendered prompt, the items that made it in, and the report."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    prompt: Any
    items: list[T]
    report: FitReport


def fit_ranked(
    items: Sequence[T],
    render: Callable[[list[T]], Any],
    count_tokens: Callable[[Any], int],
    budget: int,
    variable: str = "items",
) -> Fitted[T]:
    """Render with the longest best-first prefix of ``items`` whose prompt fits ``budget``.

    Raises :class:`PromptBudgetError` when even the prompt without any item is too long: the
    fixed part (instructions, question) is not ours to cut.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    kept = list(items)
    while True:
        prompt = render(kept)
        tokens = count_tokens(prompt)
        if tokens <= budget:
            report = FitReport(
                variable=variable,
                budget=budget,
                tokens=tokens,
                kept=len(kept),
                dropped=list(range(len(kept), len(items))),
            )
            return Fitted(prompt=prompt, items=kept, report=report)
        if not kept:
            raise PromptBudgetError(
                f"the prompt needs {tokens} tokens without any {variable!r} item; the budget is {budget}"
            )
        kept.pop()
