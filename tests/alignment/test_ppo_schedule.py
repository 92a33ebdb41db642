"""Learning-rate schedules per optimiser step, their validation, and their resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alignment.ppo import PPOConfig, PPOTrainer, lr_factor

from .conftest import make_model, make_tokenizer
from .test_ppo_trainer import batch, count_target, prompt_pool

BASE_LR = 1e-3


def test_lr_factor_warmup_then_constant_or_linear_decay() -> None:
    constant = [lr_factor(s, "constant", 2, None) for s in range(4)]
    assert constant == [0.5, 1.0, 1.0, 1.0]
    linear = [lr_factor(s, "linear", 2, 8) for s in range(9)]
    assert linear == pytest.approx([0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])
    assert [lr_factor(s, "linear", 0, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(0, "constant", 0, None) == 1.0
    with pytest.raises(ValueError, match="total"):
        lr_factor(0, "linear", 0, None)


def make(total_updates: int | None = 4, **overrides: Any) -> PPOTrainer:
    settings: dict[str, Any] = {
        "batch_size": 4,
        "mini_batches": 2,
        "ppo_epochs": 1,
        "response_length": 4,
        "temperature": 1.0,
        "learning_rate": BASE_LR,
        "value": "head",
        "lr_schedule": "linear",
        "warmup_steps": 2,
        **overrides,
    }
    config = PPOConfig.model_validate(settings)
    return PPOTrainer(
        make_model(),
        None,
        None,
        count_target,
        make_tokenizer(),
        config,
        total_updates=total_updates,
    )


def record_lrs(trainer: PPOTrainer) -> list[float]:
    """Record the learning rate each optimiser step actually uses."""
    seen: list[float] = []
    step = trainer.optimizer.step

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(float(trainer.optimizer.param_groups[0]["lr"]))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording  # type: ignore[method-assign]
    return seen


def test_resume_continues_the_lr_trajectory(tmp_path: Path) -> None:
    pool = prompt_pool()
    straight = make()
    lrs = record_lrs(straight)
    metrics = [straight.step(batch(pool, u, 4)) for u in range(4)]
    # 4 updates × 1 epoch × 2 minibatches = 8 optimiser steps: warm-up 2, then linear decay
    expected = [BASE_LR * f for f in (0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)]
    assert lrs == pytest.approx(expected)
    assert [m["lr"] for m in metrics] == pytest.approx(expected[1::2])  # last step's rate

    first = make()
    cut = record_lrs(first)
    for update in range(2):
        first.step(batch(pool, update, 4))
    saved = first.save_checkpoint(tmp_path / "ckpt")
    resumed = make()
    resumed_lrs = record_lrs(resumed)
    resumed.load_checkpoint(saved)
    assert resumed.optimizer_steps == 4
    for update in range(2, 4):
        resumed.step(batch(pool, update, 4))
    assert cut + resumed_lrs == pytest.approx(lrs)


def test_constant_schedule_needs_no_run_length() -> None:
    trainer = make(total_updates=None, lr_schedule="constant", warmup_steps=0)
    lrs = record_lrs(trainer)
    trainer.step(batch(prompt_pool(), 0, 4))
    assert lrs == [BASE_LR, BASE_LR]


def test_schedule_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="total_updates"):
        make(total_updates=None)  # linear without a run length
    with pytest.raises(ValueError, match="warmup_steps 8"):
        make(total_updates=4, warmup_steps=8)  # 8 optimiser steps in all: nothing to decay
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PPOConfig.model_validate({"lr_schedule": "cosine"})
    with pytest.raises(ValidationError):
        PPOConfig.model_validate({"warmup_steps": -1})
    # a checkpoint is refused by a run of another length (its schedule would differ)
    from alignment.errors import CheckpointError

    saved = make(total_updates=4).save_checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="optimiser steps"):
        make(total_updates=5).load_checkpoint(saved)
