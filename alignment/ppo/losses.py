"""The clipped PPO objectives and the diagnostics that reveal a broken implementation.

Both losses average over real response tokens: by default the micro-batch's own tokens; with a
``normalizer`` (the token count of the whole minibatch across micro-batches and processes,
scaled by how many of them get averaged) every token of the minibatch weighs the same however
it is split, so gradient accumulation and data parallelism give the gradient of one big batch.
Diagnostics: approx-KL
``0.5·mean((log π_new − log π_old)²)``, the fraction of tokens where clipping bit, and the
probability ratio's mean and variance (exactly 1 and 0 on the first minibatch when dropout is
off; anything else means the rollout and training forward passes disagree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.ppo.advantages import masked_mean, masked_var


def _token_average(
    x: torch.Tensor, mask: torch.Tensor, normalizer: torch.Tensor | float | None
) -> torch.Tensor:
    if normalizer is None:
        return masked_mean(x, mask)
    return (x * mask.to(x.dtype)).sum() / normalizer


@dataclass
class PolicyLossOutput:
    """The loss (with grad) and detached diagnostics."""

    loss: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_var: torch.Tensor


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    normalizer: torch.Tensor | float | None = None,
) -> PolicyLossOutput:
    """``masked_mean(max(−A·r, −A·clip(r, 1−ε, 1+ε)))`` with ``r = exp(log π − log π_old)``."""
    diff = logprobs - old_logprobs
    ratio = torch.exp(diff)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = _token_average(torch.maximum(unclipped, clipped), mask, normalizer)
    with torch.no_grad():
        return PolicyLossOutput(
            loss=loss,
            approx_kl=0.5 * masked_mean(diff.detach() ** 2, mask),
            clip_fraction=masked_mean((clipped > unclipped).to(diff.dtype), mask),
            ratio_mean=masked_mean(ratio.detach(), mask),
            ratio_var=masked_var(ratio.detach(), mask),
        )


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
    normalizer: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5·masked_mean(max((v − R)², (v_clip − R)²))``; returns ``(loss, clip fraction)``.

    ``v_clip`` keeps the new value within ``clip_range_value`` of the rollout's value, which
    stops one large return from dragging the critic far in one update.
    """
    clipped_values = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * _token_average(torch.maximum(loss_unclipped, loss_clipped), mask, normalizer)
    with torch.no_grad():
        fraction = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)
    return loss, fraction
