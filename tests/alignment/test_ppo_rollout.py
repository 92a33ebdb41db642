"""Rollouts: EOS truncation, the no-EOS penalty, batched sampling, and the KL controllers."""

from __future__ import annotations

import pytest
import torch

from alignment import ensure_pad_token
from alignment.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    Rollout,
    sample_responses,
    score_rollout,
    truncate_after_eos,
)


def test_truncation_keeps_the_first_eos_and_masks_the_rest() -> None:
    raw = torch.tensor([[5, 0, 6, 0], [5, 6, 7, 8], [0, 9, 9, 9]])
    ids, mask, has_eos = truncate_after_eos(raw, [0], pad_token_id=99)
    assert ids.tolist() == [[5, 0, 99, 99], [5, 6, 7, 8], [0, 99, 99, 99]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_no_eos_penalty_applies_only_to_rows_without_eos() -> None:
    rollout = Rollout(
        prompts=["a", "b"],
        query_ids=torch.zeros(2, 1, dtype=torch.long),
        query_mask=torch.ones(2, 1, dtype=torch.long),
        response_ids=torch.zeros(2, 2, dtype=torch.long),
        response_mask=torch.ones(2, 2, dtype=torch.long),
        has_eos=torch.tensor([True, False]),
        texts=["x", "y"],
    )

    def reward(prompts: object, responses: object) -> torch.Tensor:
        return torch.tensor([1.0, 1.0])

    assert score_rollout(reward, rollout).tolist() == [1.0, 1.0]
    assert score_rollout(reward, rollout, no_eos_penalty=1.0).tolist() == [1.0, 0.0]


def test_sampling_is_batched_left_padded_and_truncated(
    tiny_lm: torch.nn.Module, tokenizer: object
) -> None:
    ensure_pad_token(tokenizer, tiny_lm)
    tok: object = tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id  # type: ignore[attr-defined]
    torch.manual_seed(0)
    prompts = ["Human : w1 w2 w3 Assistant :", "Human : w4 Assistant :"] * 4
    rollout = sample_responses(tiny_lm, tok, prompts, response_length=6, temperature=2.0)
    assert rollout.query_ids.shape[0] == 8 and rollout.response_ids.shape == (8, 6)
    assert rollout.query_mask[1].tolist() == [0, 0, 1, 1, 1, 1, 1]  # 5 tokens, left-padded
    for row in range(8):
        n = int(rollout.lengths[row])
        ids = rollout.response_ids[row].tolist()
        assert all(t == pad for t in ids[n:])
        assert (eos in ids[:n]) == bool(rollout.has_eos[row])
        if rollout.has_eos[row]:
            assert ids[n - 1] == eos and eos not in ids[: n - 1]
    assert rollout.has_eos.any() and not rollout.has_eos.all()  # both cases exercised
    assert len(rollout.texts) == 8 and all("<eos>" not in t for t in rollout.texts)


def test_sampling_refuses_pad_equal_to_eos(tiny_lm: torch.nn.Module, tokenizer: object) -> None:
    with pytest.raises(ValueError, match="pad token"):
        sample_responses(tiny_lm, tokenizer, ["w1"], response_length=2, temperature=1.0)


def test_adaptive_kl_controller_follows_the_instructgpt_rule() -> None:
    ctl = AdaptiveKLController(0.15, target=6.0, horizon=10_000)
    ctl.update(current_kl=9.0, n_steps=100)  # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.15 * (1 + 0.2 * 100 / 10_000))
    ctl.update(current_kl=5.4, n_steps=1000)  # error −0.1
    assert ctl.value == pytest.approx(0.15 * 1.002 * (1 - 0.1 * 0.1))
    before = ctl.value
    ctl.update(current_kl=0.0, n_steps=500)  # error −1 clipped to −0.2
    assert ctl.value == pytest.approx(before * (1 - 0.2 * 0.05))
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05


def test_config_rejects_typos_and_indivisible_batches() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PPOConfig.model_validate({"batch_sise": 8})
    with pytest.raises(ValidationError, match="divisible"):
        PPOConfig(batch_size=6, mini_batches=4)
    cfg = PPOConfig(batch_size=8, mini_batches=2, grad_accumulation=2)
    assert (cfg.mini_batch_size, cfg.micro_batch_size) == (4, 2)
    assert (cfg.gamma, cfg.lam, cfg.clip_range, cfg.vf_coef, cfg.adam_eps) == (
        1.0,
        0.95,
        0.2,
        0.1,
        1e-5,
    )
