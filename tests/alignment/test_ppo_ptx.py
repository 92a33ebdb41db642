"""PPO-ptx: the demonstration stream, the mixed loss, its gradient, and resuming the stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignment import (
    Demonstration,
    PromptResponseEncoder,
    TokenizedDemonstration,
    ensure_pad_token,
    tokenize_demonstrations,
)
from alignment.collate import IGNORE_INDEX
from alignment.ppo import PPOConfig, PPOTrainer, PtxData
from alignment.ppo.ptx import split_rows
from alignment.sft import ResponseOnlyLM

from .conftest import make_model, make_tokenizer
from .test_ppo_trainer import batch, count_target, prompt_pool


def demonstrations(tokenizer: object, n: int = 12) -> list[TokenizedDemonstration]:
    """Demonstrations that all answer ``w9 w9 w9``: their loss is easy to move."""
    demos = [
        Demonstration(prompt=f"Human : w{i % 7} w{i % 5} Assistant :", response="w9 w9 w9")
        for i in range(n)
    ]
    encoder = PromptResponseEncoder(tokenizer, max_length=32, min_prompt_tokens=1)
    tokenized, report = tokenize_demonstrations(demos, encoder)
    assert len(tokenized) == n, report.summary()
    return tokenized


def make(ptx_coef: float, with_data: bool = True, **overrides: object) -> PPOTrainer:
    tokenizer = make_tokenizer()
    model = make_model()
    ensure_pad_token(tokenizer, model)
    settings: dict[str, object] = {
        "batch_size": 8,
        "mini_batches": 2,
        "grad_accumulation": 2,
        "ppo_epochs": 2,
        "response_length": 6,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "value": "head",
        "ptx_coef": ptx_coef,
        **overrides,
    }
    data = None
    if with_data:
        data = PtxData(demonstrations(tokenizer), int(tokenizer.pad_token_id), batch_size=4)  # type: ignore[attr-defined]
    return PPOTrainer(
        model,
        None,
        None,
        count_target,
        tokenizer,
        PPOConfig.model_validate(settings),
        ptx_data=data,
    )


@torch.no_grad()
def demo_loss(trainer: PPOTrainer) -> float:
    """Mean response-token NLL of all the trainer's demonstrations under its policy."""
    assert trainer.ptx_data is not None
    everything = PtxData(trainer.ptx_data.demonstrations, trainer.ptx_data.pad_token_id, 12)
    b = everything.batch(0)
    total, count = ResponseOnlyLM(trainer.policy)(
        b.input_ids, b.attention_mask, b.position_ids, b.labels
    )
    return float(total / count)


def test_ptx_stream_is_a_pure_cyclic_function_of_the_batch_index() -> None:
    tokenizer = make_tokenizer()
    ensure_pad_token(tokenizer)
    demos = demonstrations(tokenizer, n=10)
    data = PtxData(demos, int(tokenizer.pad_token_id), batch_size=4, seed=3)  # type: ignore[attr-defined]
    first_epoch = data.indices(0) + data.indices(1) + data.indices(2)[:2]
    assert sorted(first_epoch) == list(range(10))  # every demonstration once per epoch
    again = PtxData(demos, int(tokenizer.pad_token_id), batch_size=4, seed=3)  # type: ignore[attr-defined]
    assert [again.indices(k) for k in (7, 2, 5)] == [data.indices(k) for k in (7, 2, 5)]
    other = PtxData(demos, int(tokenizer.pad_token_id), batch_size=4, seed=4)  # type: ignore[attr-defined]
    assert [other.indices(k) for k in range(3)] != [data.indices(k) for k in range(3)]
    b = data.batch(0)
    assert b.labels is not None and b.size == 4
    # labels only on the response tokens (w9 w9 w9 + EOS), as in SFT
    assert int((b.labels != IGNORE_INDEX).sum()) == 4 * 4
    halves = split_rows(b, 2)
    assert [h.size for h in halves] == [2, 2]
    torch.testing.assert_close(torch.cat([h.input_ids for h in halves]), b.input_ids)
    with pytest.raises(ValueError, match="split"):
        split_rows(b, 3)
    with pytest.raises(ValueError, match="at least one"):
        PtxData([], 0, 4)


def test_ptx_loss_is_logged_and_changes_the_update_and_zero_coef_draws_nothing() -> None:
    prompts = batch(prompt_pool(), 0, 8)
    # the RNG is global: build and step each trainer in turn so that all sample alike
    plain = make(0.0, with_data=False)
    plain.step(prompts)
    off = make(0.0)
    assert off.ptx_data is not None
    drawn: list[int] = []
    original = off.ptx_data.batch
    off.ptx_data.batch = lambda index: drawn.append(index) or original(index)  # type: ignore[method-assign]
    m_off = off.step(prompts)
    on = make(1.0)
    m_on = on.step(prompts)
    assert drawn == [] and off.ptx_batches == 0 and "ptx_loss" not in m_off
    assert on.ptx_batches == 2 * 2  # one demonstration batch per PPO minibatch, 2 epochs × 2
    assert m_on["ptx_loss"] > 0
    # γ = 0 with data is exactly the plain trainer; γ = 1 moves the weights elsewhere
    for (name, a), (_, b) in zip(
        plain.trainable.named_parameters(), off.trainable.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert m_on["score"] == m_off["score"]  # same rollout: the difference is the update
    moved = [
        float((a - b).detach().abs().max())
        for a, b in zip(on.policy.parameters(), off.policy.parameters(), strict=True)
    ]
    assert max(moved) > 1e-4


def test_ptx_gradient_lowers_the_demonstration_loss() -> None:
    """Fails if the ptx term has the wrong sign or does not reach the policy's weights."""
    pool = prompt_pool()
    runs = {}
    for coef in (0.0, 2.0):
        trainer = make(coef)
        before = demo_loss(trainer)
        for update in range(3):
            trainer.step(batch(pool, update, 8))
        runs[coef] = demo_loss(trainer) - before
    assert runs[2.0] < -0.5, runs
    assert runs[2.0] < runs[0.0] - 0.5, runs


def test_resume_continues_the_ptx_stream(tmp_path: Path) -> None:
    pool = prompt_pool()
    straight = make(1.0)
    for update in range(3):
        expected = straight.step(batch(pool, update, 8))

    first = make(1.0)
    for update in range(2):
        first.step(batch(pool, update, 8))
    saved = first.save_checkpoint(tmp_path / "ckpt")
    resumed = make(1.0)
    resumed.load_checkpoint(saved)
    assert resumed.ptx_batches == first.ptx_batches == 8
    got = resumed.step(batch(pool, 2, 8))
    assert got["ptx_loss"] == pytest.approx(expected["ptx_loss"], rel=1e-6)
    for (name, a), (_, b) in zip(
        straight.trainable.named_parameters(), resumed.trainable.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_ptx_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="ptx_data"):
        make(0.5, with_data=False)
    with pytest.raises(ValueError, match="divisible"):
        make(0.5, batch_size=6, mini_batches=2, grad_accumulation=3)  # ptx batch 4 into 3
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PPOConfig(ptx_coef=-1.0)
