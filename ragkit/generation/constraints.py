"""Per-row token constraints: which tokens each prompt of a batch may generate next.

Why a row-level contract instead of a plain transformers ``LogitsProcessor``: the generator sorts
prompts by length and cuts them into batches, so a processor built for "the batch" cannot know
which prompt sits in which row. A :class:`TokenConstraint` belongs to one prompt and answers from
that prompt's own generated tokens only; the generator builds one :class:`ConstraintProcessor` per
batch from the constraints of the rows it chose. Because the answer depends only on the tokens
generated so far (not on call order), the same constraint gives the same tokens batched, alone or
streamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AllowedTokens:
    """The tokens a row may take next, with optional additive logit biases among them."""

    ids: Sequence[int]
    bias: dict[int, float] = field(default_factory=dict)


@runtime_checkable
class TokenConstraint(Protocol):
    """Restricts one prompt's continuation; ``None`` means "no restriction" (e.g. finished)."""

    def allowed(self, generated: Sequence[int]) -> AllowedTokens | None: ...


@runtime_checkable
class ObservesAnswerability(Protocol):
    """A constraint that takes the generator's P(the prompt's passages hold the answer).

    A generator with an answerability probe (:mod:`ragkit.generation.answerability`) calls this
    once per prompt, after reading the prompt and before the first token is chosen; one
    without a probe never calls it, and the constraint then decides as it would alone.
    """

    def observe_answerability(self, probability: float) -> None: ...


class ConstraintProcessor:
    """A transformers logits processor applying each row's :class:`TokenConstraint`.

    ``width`` is where generated tokens begin in every row (left padding + longest prompt).
    Rows are matched to constraints by index; beam search rows (``rows * beams``) map back to
    their prompt by integer division, and because each row's tokens are replayed from the
    sequence itself, beam reordering needs no bookkeeping.
    """

    def __init__(self, constraints: Sequence[TokenConstraint | None], width: int) -> None:
        self.constraints = list(constraints)
        self.width = width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        import torch

        rows = input_ids.shape[0]
        per_prompt = max(1, rows // max(1, len(self.constraints)))
        generated = input_ids[:, self.width :].tolist()
        masked: Any = scores
        for row in range(rows):
            constraint = self.constraints[min(row // per_prompt, len(self.constraints) - 1)]
            if constraint is None:
                continue
            allowed = constraint.allowed(generated[row])
            if allowed is None:
                continue
            if masked is scores:
                masked = scores.clone()
            keep = torch.full_like(scores[row], float("-inf"))
            if allowed.ids:
                index = torch.tensor(list(allowed.ids), dtype=torch.long, device=scores.device)
                keep[index] = 0.0
            for token, bias in allowed.bias.items():
                keep[token] += bias
            masked[row] = scores[row] + keep
        return masked


def check_constraints(constraints: Sequence[TokenConstraint | None] | None, prompts: int) -> None:
    """Constraints, when given, must pair one-to-one with the prompts of a call."""
    if constraints is not None and len(constraints) != prompts:
        raise ValueError(
            f"constraints must give one entry per prompt ({prompts}), not {len(constraints)}"
        )


def constraint_factory(constraints: Sequence[TokenConstraint | None]) -> Any:
    """A ``width -> processor`` factory for the rows in ``constraints`` (one batch)."""

    def build(width: int) -> ConstraintProcessor:
        return ConstraintProcessor(constraints, width)

    return build
