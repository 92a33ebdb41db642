"""Clipped losses, diagnostics and the lean log-prob computation."""

from __future__ import annotations

import math

import pytest
import torch

from alignment import ensure_pad_token
from alignment.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    response_forward,
    selected_logprobs,
)


def test_policy_loss_clips_in_the_direction_of_the_advantage() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    out = clipped_policy_loss(new, old, adv, mask, clip_range=0.2)
    # token 0: A>0, r=1.5 → clipped to 1.2; token 1: A>0, r=0.5 → unclipped (pessimistic);
    # token 2: A<0, r=1.1 inside the range
    expected = (-1.2 - 0.5 + 2.0 * 1.1) / 3
    assert float(out.loss) == pytest.approx(expected, abs=1e-6)
    assert float(out.clip_fraction) == pytest.approx(1 / 3)
    diffs = [math.log(1.5), math.log(0.5), math.log(1.1)]
    assert float(out.approx_kl) == pytest.approx(0.5 * sum(d * d for d in diffs) / 3, rel=1e-5)
    assert float(out.ratio_mean) == pytest.approx((1.5 + 0.5 + 1.1) / 3, rel=1e-5)


def test_policy_loss_gradient_raises_probability_of_positive_advantage() -> None:
    new = torch.zeros(1, 2, requires_grad=True)
    out = clipped_policy_loss(
        new, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), 0.2
    )
    out.loss.backward()
    assert new.grad is not None
    assert new.grad[0, 0] < 0 < new.grad[0, 1]  # descent raises log π where A > 0


def test_value_loss_is_clipped_around_the_old_value() -> None:
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1, -1.0]])
    returns = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, fraction = clipped_value_loss(new, old, returns, mask, clip_range_value=0.2)
    # token 0: unclipped 0, clipped (0.2-1)² = 0.64 → 0.64; token 1: 0.01 both; token 2 masked
    assert float(loss) == pytest.approx(0.5 * (0.64 + 0.01) / 2)
    assert float(fraction) == pytest.approx(0.5)


def test_selected_logprobs_match_log_softmax_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 11, (2, 3))
    weights = torch.randn(2, 3, dtype=torch.float64)
    ours = selected_logprobs(logits.float(), tokens)
    reference = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours.double(), reference, atol=1e-5, rtol=1e-5)
    from alignment.ppo.logprobs import SelectedLogProb

    assert torch.autograd.gradcheck(lambda z: SelectedLogProb.apply(z, tokens) * weights, (logits,))


def test_entropy_matches_the_definition() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 5, 7)
    p = torch.softmax(logits, -1)
    expected = -(p * torch.log(p)).sum(-1)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_tokens=4), expected)


def test_fused_response_forward_equals_the_model_logits_at_temperature(
    tiny_lm: torch.nn.Module, tokenizer: object
) -> None:
    ensure_pad_token(tokenizer, tiny_lm)
    tiny_lm.eval()
    pad = tokenizer.pad_token_id  # type: ignore[attr-defined]
    ids = torch.tensor([[pad, pad, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24, 25, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    out = response_forward(tiny_lm, ids, mask, response_length=3, temperature=0.7)
    assert out.logits.shape == (2, 3, tiny_lm.config.vocab_size)
    with torch.no_grad():
        full = tiny_lm(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
        ).logits
    torch.testing.assert_close(out.logits, full[:, -4:-1] / 0.7, atol=1e-5, rtol=1e-5)
    # left padding does not change the logits of row 0 (positions start at its first token)
    with torch.no_grad():
        alone = tiny_lm(input_ids=ids[:1, 2:]).logits
    torch.testing.assert_close(out.logits[0], alone[0, -4:-1] / 0.7, atol=1e-5, rtol=1e-5)
