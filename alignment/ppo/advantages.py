"""Per-token rewards and generalised advantage estimation over masked response tokens.

Conventions (each has a test):

* response tensors are ``[batch, response_length]``, right-aligned after left-padded prompts;
  ``mask`` is 1 on real response tokens (up to and including the first EOS, or the last token
  of the first stop string) and 0 after;
* the per-token reward is ``−β·(log π − log π_ref)`` on every real token, and the sequence score
  is added once, at the *last real* token (the EOS, or the stop string's last token);
* statistics (whitening) use only masked positions, so padding never shifts them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over data-parallel processes (identity on one process)."""


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over ``dim``, or over everything)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def _masked_moments(
    x: torch.Tensor, mask: torch.Tensor, unbiased: bool, reduce: Reduce | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the masked entries; with ``reduce`` those of the global batch
    (two reductions: the sums and count, then the squared deviations)."""
    mask = mask.to(x.dtype)
    totals = torch.stack([(x * mask).sum(), mask.sum()])
    if reduce is not None:
        totals = reduce(totals)
    count = totals[1]
    mean = totals[0] / count.clamp(min=1.0)
    squares = ((x - mean) ** 2 * mask).sum()
    if reduce is not None:
        squares = reduce(squares)
    var = squares / count.clamp(min=1.0)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return mean, var


def masked_var(
    x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, reduce: Reduce | None = None
) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected by default, like the reference code).

    With ``reduce`` (a sum over processes) the statistics are those of the global batch, so a
    data-parallel run whitens exactly as one process holding every row would.
    """
    return _masked_moments(x, mask, unbiased, reduce)[1]


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """Scale masked entries to unit variance (and zero mean when ``shift_mean``); zero the rest.

    Rewards are whitened *without* shifting the mean (a shift would change which responses are
    better than nothing); advantages are shifted too. ``reduce`` makes the statistics global
    over data-parallel processes.
    """
    mean, var = _masked_moments(x, mask, True, reduce)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real response token in each row (0 for an empty row)."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def per_token_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(rewards, kl)``: the KL penalty on every real token plus the score at the last one.

    ``kl`` is the per-token estimate ``log π − log π_ref`` (zero on padding); its row sums are
    the per-sequence KL that the adaptive controller and the logs use.
    """
    maskf = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * maskf
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns ``(advantages, returns)``, zero on padding.

    The value after the last real token is 0 (the episode ends there): padding positions carry
    zero rewards and values, so the backward recursion restarts cleanly at each row's end.
    """
    maskf = mask.to(rewards.dtype)
    rewards = rewards * maskf
    values = values * maskf
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * maskf
    returns = (advantages + values) * maskf
    return advantages, returns
