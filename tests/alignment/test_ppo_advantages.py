"""GAE, masked whitening and where the KL penalty and the score land (checklist items)."""

from __future__ import annotations

import pytest
import torch

from alignment.ppo import (
    encode_prompts,
    gae,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    truncate_after_eos,
)


def test_gae_matches_a_hand_computed_example() -> None:
    # one row of 3 real tokens + 1 padding column; γ = 0.9, λ = 0.5
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 2.0 + 0.9 * 0.0 - 1.5  # the value after the last real token is 0
    d1 = 0.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2, 0.0])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5, 0.0])


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.3, 0.1, -0.4, 0.2], [1.0, -1.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    expected_returns = torch.tensor([[1.2, 1.1, 1.3, 1.0], [2.5, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(ret, expected_returns)
    torch.testing.assert_close(adv, (expected_returns - values) * mask)


def test_masked_whitening_ignores_padding() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    real = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert float(masked_mean(x, mask)) == pytest.approx(3.0)
    assert float(masked_var(x, mask)) == pytest.approx(float(real.var()))
    white = masked_whiten(x, mask)
    expected = (real - real.mean()) / real.std()
    torch.testing.assert_close(white[mask.bool()], expected, atol=1e-5, rtol=1e-5)
    assert white[~mask.bool()].eq(0).all()
    kept = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept[mask.bool()], expected + real.mean(), atol=1e-5, rtol=1e-5)


def test_kl_penalty_on_every_real_token_and_score_once_at_the_last() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-2.0, -0.5, -1.0, -4.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    scores = torch.tensor([10.0, -3.0])
    rewards, kl = per_token_rewards(logprobs, ref, scores, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [1.0, -0.5, 0.0, 3.0]]))
    expected = torch.tensor([[-0.05, 0.1, 10.0, 0.0], [-0.1, 0.05, 0.0, -3.0 - 0.3]])
    torch.testing.assert_close(rewards, expected)


def test_score_sits_at_the_eos_of_each_left_padded_row(tokenizer: object) -> None:
    from alignment import ensure_pad_token

    tok: object = tokenizer
    ensure_pad_token(tok)
    pad, eos = tok.pad_token_id, tok.eos_token_id  # type: ignore[attr-defined]
    ids, query_mask = encode_prompts(tok, ["w1 w2 w3 w4 w5", "w1"], max_prompt_length=16)
    assert query_mask.tolist() == [[1] * 5, [0, 0, 0, 0, 1]]  # left padding
    assert ids[1, :4].eq(pad).all()
    raw = torch.tensor([[5, eos, 7, 8], [6, 7, 8, eos]])
    resp, mask, _ = truncate_after_eos(raw, [eos], pad)
    rewards, _ = per_token_rewards(
        torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([1.0, 2.0]), mask, kl_coef=0.1
    )
    assert rewards.tolist() == [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]
    assert resp[0].tolist() == [5, eos, pad, pad]
