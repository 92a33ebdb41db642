"""Passes sized by padded tokens: the plan, the padding trim, and an update equal to one pass."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from alignment.ppo import PPOConfig, PPOTrainer
from alignment.ppo.logprobs import response_forward
from alignment.ppo.passes import padded_widths, plan_passes, trim_left_padding

from .conftest import make_model, make_tokenizer
from .test_ppo_memory import count_block_calls
from .test_ppo_trainer import batch, prompt_pool, tiny_value_model


def response_words(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    """A reward that varies from the first rollout on (so the update is not zero)."""
    return torch.tensor([float(len(r.split())) for r in responses])


def test_plan_takes_longest_rows_first_and_respects_the_budget() -> None:
    rows = torch.tensor([10, 11, 12, 13, 14, 15])
    lengths = torch.tensor([50, 200, 60, 40, 100, 300])
    passes = plan_passes(rows, lengths, budget=250)
    assert [p.tolist() for p in passes] == [[15], [11], [14, 12], [10, 13]]
    # every row exactly once; each pass within budget unless it is a single over-long row
    assert sorted(torch.cat(passes).tolist()) == rows.tolist()
    by_row = dict(zip(rows.tolist(), lengths.tolist(), strict=True))
    for p in passes:
        cost = len(p) * max(by_row[int(r)] for r in p)
        assert cost <= 250 or len(p) == 1


def test_no_budget_or_one_row_is_a_single_pass() -> None:
    rows = torch.tensor([3, 1, 2])
    assert [p.tolist() for p in plan_passes(rows, torch.tensor([5, 9, 7]), None)] == [[3, 1, 2]]
    assert [p.tolist() for p in plan_passes(rows[:1], torch.tensor([500]), 1)] == [[3]]


def test_trim_drops_only_columns_that_are_padding_in_every_row() -> None:
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [0, 0, 4, 5, 6, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0]])
    trimmed_ids, trimmed_mask = trim_left_padding(ids, mask)
    assert trimmed_ids.tolist() == [[0, 5, 6, 7], [4, 5, 6, 0]]
    assert trimmed_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 0]]
    assert padded_widths(mask[:, :4], 2).tolist() == [3, 4]


def test_trimmed_rows_give_the_same_response_log_probs() -> None:
    model = make_model().eval()
    ids = torch.tensor([[0, 0, 0, 9, 10, 11, 12, 13], [0, 0, 0, 0, 0, 14, 15, 16]])
    mask = (ids != 0).long()
    full = response_forward(model, ids, mask, 2, 0.7).logits
    trimmed = response_forward(model, *trim_left_padding(ids, mask), 2, 0.7).logits
    alone = response_forward(model, *trim_left_padding(ids[1:], mask[1:]), 2, 0.7).logits
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, full[1:], rtol=1e-5, atol=1e-5)


def make(tokens_per_pass: int | None, **overrides: Any) -> PPOTrainer:
    tokenizer = make_tokenizer()
    settings: dict[str, Any] = {
        "batch_size": 8,
        "mini_batches": 2,
        "grad_accumulation": 2,
        "ppo_epochs": 2,
        "response_length": 6,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "tokens_per_pass": tokens_per_pass,
        **overrides,
    }
    config = PPOConfig.model_validate(settings)
    value = tiny_value_model(tokenizer) if config.value == "model" else None
    return PPOTrainer(make_model(), None, value, response_words, tokenizer, config)


@pytest.mark.parametrize("value", ["model", "head"])
def test_one_row_per_pass_gives_the_update_of_one_pass_per_micro_batch(value: str) -> None:
    """Same rollout (same seed), same metrics and weights; the split really happened."""
    prompts = batch(prompt_pool(), 0, 8)
    results = {}
    for budget in (None, 1):
        trainer = make(budget, value=value)
        calls: list[bool] = []
        with count_block_calls(trainer.policy, calls):
            metrics = trainer.step(prompts)
        params = {n: p.detach().clone() for n, p in trainer.trainable.named_parameters()}
        results[budget] = (metrics, params, len(calls))
    (whole, whole_params, whole_calls), (split, split_params, split_calls) = (
        results[None],
        results[1],
    )
    # training: 2 epochs × 2 minibatches × 2 micro-batches of 2 rows → 8 or 16 passes;
    # statistics: 4 micro-batches of 2 rows → 8 single-row passes (generation is the same)
    assert split_calls - whole_calls == (16 - 8) + (8 - 4)
    assert whole["grad_norm"] > 1e-3  # there was something to compare
    for key in (
        "score",
        "kl",
        "value_mean",
        "policy_loss",
        "value_loss",
        "grad_norm",
        "approx_kl",
        "clip_fraction",
        "entropy",
    ):
        assert split[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), key
    for name, value_ in whole_params.items():
        torch.testing.assert_close(split_params[name], value_, rtol=1e-4, atol=1e-6, msg=name)


def test_default_budget_is_in_the_config_and_checked() -> None:
    assert PPOConfig().tokens_per_pass == 512
    with pytest.raises(ValueError, match="tokens_per_pass"):
        PPOConfig.model_validate({"tokens_per_pass": 0})


def test_freed_memory_is_handed_back_after_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import alignment.ppo.trainer as trainer_module
    from alignment.ppo.memory import release_free_memory

    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert release_free_memory() is True
    calls: list[int] = []
    monkeypatch.setattr(trainer_module, "release_free_memory", lambda: calls.append(1) or True)
    prompts = batch(prompt_pool(), 0, 8)
    make(1, ppo_epochs=1).step(prompts)
    assert len(calls) == 8 + 8  # 8 statistics passes + 8 training passes of one row
    calls.clear()
    make(1, ppo_epochs=1, trim_cpu_memory=False).step(prompts)
    assert calls == []


def test_policy_and_value_model_one_after_the_other_give_the_joint_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two forward/backward passes (one per model) = one joint pass: the weights are disjoint."""
    prompts = batch(prompt_pool(), 0, 8)
    results = {}
    for split in (True, False):
        trainer = make(None)
        assert trainer._split_models(last=True) is True  # one process: always split
        if not split:
            monkeypatch.setattr(trainer, "_split_models", lambda last: False)
        value_calls: list[bool] = []
        assert trainer.value_model is not None
        with count_block_calls(trainer.value_model, value_calls):
            metrics = trainer.step(prompts)
        params = {n: p.detach().clone() for n, p in trainer.trainable.named_parameters()}
        results[split] = (metrics, params, len(value_calls))
    (split_m, split_p, split_calls), (joint_m, joint_p, joint_calls) = results[True], results[False]
    assert split_calls == joint_calls  # the value model runs once per pass either way
    assert joint_m["grad_norm"] > 1e-3
    for key in ("policy_loss", "value_loss", "grad_norm", "approx_kl", "entropy"):
        assert split_m[key] == pytest.approx(joint_m[key], rel=1e-5, abs=1e-7), key
    for name, value_ in joint_p.items():
        torch.testing.assert_close(split_p[name], value_, rtol=1e-5, atol=1e-7, msg=name)


def test_a_value_head_is_never_split() -> None:
    trainer = make(None, value="head")
    assert trainer._split_models(last=False) is False
    with pytest.raises(ValueError, match="value head"):
        trainer.trainable(
            torch.ones(1, 3, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.long),
            1.0,
            part="policy",
        )
