"""Bradley–Terry loss, pairwise accuracy and margin against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from alignment import bradley_terry_loss, pairwise_accuracy, pairwise_metrics
from alignment.losses import response_token_loss


def test_bradley_terry_loss_matches_hand_computation() -> None:
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.0, 0.0, 1.0])
    # -log σ(2) = log(1 + e^-2); -log σ(0) = log 2; -log σ(-2) = log(1 + e^2)
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.126928 + 0.693147 + 2.126928) / 3, rel=1e-5)


def test_loss_is_finite_for_huge_negative_margins_and_has_the_right_gradient() -> None:
    chosen = torch.tensor([-200.0], requires_grad=True)
    loss = bradley_terry_loss(chosen, torch.tensor([200.0]))
    assert loss.item() == pytest.approx(400.0)
    loss.backward()
    assert chosen.grad is not None
    assert chosen.grad.item() == pytest.approx(-1.0)  # d/dm -log σ(m) = -(1 - σ(m))


def test_accuracy_counts_ties_as_half_and_margin_is_the_mean_difference() -> None:
    chosen = torch.tensor([1.0, 0.5, 0.0, 3.0])
    rejected = torch.tensor([0.0, 0.5, 1.0, 2.0])
    assert pairwise_accuracy(chosen, rejected).item() == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    metrics = pairwise_metrics(chosen, rejected)
    assert metrics["margin"] == pytest.approx((1 + 0 - 1 + 1) / 4)
    assert metrics["accuracy"] == pytest.approx(0.625)
    assert metrics["loss"] == pytest.approx(bradley_terry_loss(chosen, rejected).item())


def test_response_token_loss_ignores_masked_positions() -> None:
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, -5.0]]])
    targets = torch.tensor([[-100, 0, -100]])
    expected = math.log1p(math.exp(-2))  # only the middle position counts
    assert response_token_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert response_token_loss(logits, targets, reduction="sum").item() == pytest.approx(
        expected, rel=1e-6
    )
