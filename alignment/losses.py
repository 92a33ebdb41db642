"""The two training objectives and the pairwise metrics, as plain tensor functions.

Kept apart from the models so that they can be checked against hand-computed numbers.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from alignment.collate import IGNORE_INDEX


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log σ(r_chosen - r_rejected)``: the negative log-likelihood of the preferences.

    ``logsigmoid`` keeps it finite for large negative margins, where ``log(sigmoid(x))`` is not.
    """
    return -functional.logsigmoid(chosen - rejected).mean()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs ranked correctly; a tie counts one half (a constant model scores 0.5)."""
    margin = chosen - rejected
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def pairwise_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and mean margin ``mean(r_chosen - r_rejected)`` as floats, for logging."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    return {
        "loss": float(bradley_terry_loss(chosen, rejected)),
        "accuracy": float(pairwise_accuracy(chosen, rejected)),
        "margin": float((chosen - rejected).mean()),
    }


def response_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy over the positions whose target is not ``IGNORE_INDEX`` (response tokens).

    ``logits[i]`` predicts ``targets[i]``; callers shift labels by one before calling.
    """
    return functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )
