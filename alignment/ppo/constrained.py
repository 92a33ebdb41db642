"""PPO under a token constraint: the policy that is trained is the one that is served.

``ragkit ask`` answers with grounded span decoding: at each step only the tokens that continue a
verbatim span of the passages (or the abstention phrase) may be chosen, and the abstention's
first token carries an additive bias. The served policy is therefore not ``softmax(z / T)`` but

    π_c(a | s) = softmax(z / T + c_s)(a),   c_s(a) = bias(a) if a is allowed at s, else −∞,

and PPO must sample from, score and regularise *that* distribution, or the probability ratio and
the KL measure a policy nobody runs (a free-sampling PPO also spends its updates on answers the
server can never give). Here:

* sampling applies ``z / T`` (transformers' temperature warper) and then each row's constraint
  as explicit logits processors (the generation config's own temperature is 1), so the order is
  fixed whatever transformers does;
* every sampled row's constraint is *replayed* over its response afterwards — a
  :class:`~ragkit.generation.constraints.TokenConstraint` answers from the tokens so far only, so
  the replay gives exactly what sampling saw — into a compact trace (allowed ids and biases per
  step);
* each forward pass of the trainer turns the trace of its rows into the additive ``c`` above
  (a large finite negative in place of −∞, which gives the same probabilities and keeps the
  entropy finite) for the policy, the frozen reference and the entropy alike. The KL penalty is
  then between the constrained policy and the constrained reference: both answer under the same
  rule, so it measures only what PPO changed.

Positions after a row's end carry no constraint; they are masked out of every loss anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ragkit.generation.constraints import AllowedTokens, ConstraintProcessor, TokenConstraint

ConstraintFn = Callable[[str], TokenConstraint | None]
"""``constraint_for(prompt)``: the constraint one rollout prompt is answered under (None: free)."""

EXCLUDED = -1.0e9
"""The offset of a forbidden token: exp underflows to exactly 0, and 0 · offset stays finite."""


def sampling_processors(
    constraints: Sequence[TokenConstraint | None], prompt_width: int, temperature: float
) -> list[object]:
    """``z / T`` then each row's constraint: the constrained policy's sampling distribution.

    transformers' own temperature warper, placed explicitly first (the generation config's
    temperature is then 1, so transformers adds no second one in an order of its choosing).
    """
    from transformers import TemperatureLogitsWarper

    return [TemperatureLogitsWarper(temperature), ConstraintProcessor(constraints, prompt_width)]


@dataclass
class ConstraintTrace:
    """What each row's constraint allowed at each response step (``None``: unconstrained)."""

    steps: list[list[AllowedTokens | None]]

    def offsets(self, rows: torch.Tensor | Sequence[int], width: int, vocab: int) -> torch.Tensor:
        """The additive ``c`` for ``rows``: ``[len(rows), width, vocab]`` float32, on CPU."""
        chosen = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        out = torch.zeros(len(chosen), width, vocab, dtype=torch.float32)
        for i, row in enumerate(chosen):
            for t, allowed in enumerate(self.steps[row][:width]):
                if allowed is None:
                    continue
                position = out[i, t]
                position.fill_(EXCLUDED)
                if allowed.ids:
                    position[torch.tensor(list(allowed.ids), dtype=torch.long)] = 0.0
                for token, bias in allowed.bias.items():
                    position[token] += bias
        return out


def replay(
    constraints: Sequence[TokenConstraint | None],
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> ConstraintTrace:
    """Each row's constraint at each of its real response tokens, asked again after sampling.

    A sampled token the constraint forbids means sampling and replay disagree (a constraint
    that depends on more than the tokens so far): refused, since PPO would then train a policy
    other than the one that sampled.
    """
    steps: list[list[AllowedTokens | None]] = []
    for row, constraint in enumerate(constraints):
        length = int(response_mask[row].sum())
        tokens = response_ids[row, :length].tolist()
        trace: list[AllowedTokens | None] = []
        for t in range(length):
            allowed = None if constraint is None else constraint.allowed(tokens[:t])
            if allowed is not None and tokens[t] not in set(allowed.ids):
                raise ValueError(
                    f"row {row} sampled token {tokens[t]} at step {t}, which its constraint "
                    "forbids on replay: the constraint must depend on the generated tokens only"
                )
            trace.append(allowed)
        steps.append(trace)
    return ConstraintTrace(steps)


def constrained(logits: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """``logits`` (already divided by T) plus the constraint's offsets, in float32."""
    if offsets is None:
        return logits
    return logits.float() + offsets.to(logits.device)


def grounded_constraints(
    passages: dict[str, list[str]],
    tokenizer: object,
    eos_token_ids: Sequence[int],
    *,
    max_tokens: int,
    abstain_bias: float = 0.0,
) -> ConstraintFn:
    """``prompt -> SpanAutomaton`` over that prompt's passages: the constraint ``ragkit ask``
    answers under in grounded mode (no answerability veto: the probe reads a hidden state PPO
    is changing). A prompt without passages is a ``KeyError`` — the job checks beforehand."""
    from ragkit.generation.grounded import SpanAutomaton, token_table

    table = token_table(tokenizer)

    def constraint_for(prompt: str) -> TokenConstraint | None:
        return SpanAutomaton(
            passages[prompt],
            table,
            eos_token_ids,
            max_tokens=max_tokens,
            abstain_bias=abstain_bias,
        )

    return constraint_for
