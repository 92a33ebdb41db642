"""accelerate integration on one CPU process: a no-op wrapper, main-process-only writes, the
shared accumulation state, prompt sharding, launch-setting checks, and checkpoint refusals.

The real multi-process path (DDP over gloo on the CPU) is exercised by
``test_ppo_distributed.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from alignment.errors import CheckpointError
from alignment.ppo import PPOConfig, PPOTrainer, train_ppo
from alignment.ppo.job_data import prompts_for_process, prompts_for_update
from alignment.ppo.trainer import check_accelerator, configure_deepspeed

from .conftest import make_model, make_tokenizer
from .test_ppo_job import job
from .test_ppo_trainer import batch, count_target, prompt_pool

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"


def length_reward(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    """A reward that varies between responses (so that the first update has gradients)."""
    return torch.tensor([float(len(r.split())) for r in responses])


def make(reward: Any = count_target, **overrides: Any) -> PPOTrainer:
    settings: dict[str, Any] = {
        "batch_size": 8,
        "mini_batches": 1,
        "grad_accumulation": 2,
        "ppo_epochs": 1,
        "response_length": 5,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "value": "head",
        **overrides,
    }
    config = PPOConfig.model_validate(settings)
    return PPOTrainer(make_model(), None, None, reward, make_tokenizer(), config)


def grads_at_step(trainer: PPOTrainer) -> list[list[torch.Tensor]]:
    """Snapshot of the gradients each optimiser step sees."""
    seen: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append([p.grad.clone() for p in trainer.trainable.parameters() if p.grad is not None])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording  # type: ignore[method-assign]
    return seen


def test_single_process_accelerate_is_a_no_op_wrapper() -> None:
    from accelerate.optimizer import AcceleratedOptimizer

    trainer = make()
    assert trainer.accelerator.num_processes == 1
    assert trainer.model is trainer.trainable  # not wrapped in DDP on one process
    assert isinstance(trainer.optimizer, AcceleratedOptimizer)
    assert trainer.device == torch.device("cpu")


def test_another_accelerator_in_the_process_does_not_change_the_gradient() -> None:
    """accelerate keeps the accumulation count in process-wide state, and its backward divides
    by it: an Accelerator built elsewhere (an SFT loop) must not rescale PPO's gradients."""
    from accelerate import Accelerator

    prompts = batch(prompt_pool(), 0, 8)
    alone = make(length_reward, max_grad_norm=None)  # clipping would hide a rescaled gradient
    alone_grads = grads_at_step(alone)
    alone.step(prompts)

    disturbed = make(length_reward, max_grad_norm=None)
    disturbed_grads = grads_at_step(disturbed)
    other = Accelerator(gradient_accumulation_steps=5)  # e.g. built by another job meanwhile
    disturbed.step(prompts)
    assert other.gradient_accumulation_steps == 5  # the trainer restored the shared value
    assert len(alone_grads) == len(disturbed_grads) == 1
    assert max(float(g.abs().max()) for g in alone_grads[0]) > 1e-4
    for a, b in zip(alone_grads[0], disturbed_grads[0], strict=True):
        torch.testing.assert_close(a, b)
    Accelerator(gradient_accumulation_steps=1)  # leave the process as other tests expect


class NotMain:
    """A real accelerator that claims not to be the main process (a worker's point of view)."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)

    is_main_process = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


def test_only_the_main_process_writes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alignment.ppo.job as job_module

    real = job_module.make_accelerator
    monkeypatch.setattr(job_module, "make_accelerator", lambda: NotMain(real()))
    config = job(tmp_path, tiny_model_dir, "worker", updates=2, checkpoint_every=1)
    result = train_ppo(config)
    assert result.updates == 2 and result.last_metrics["score"] >= 0
    assert result.heldout_start == {}  # evaluation is the main process's job
    written = sorted(p.name for p in config.output_dir.iterdir())
    assert written == [], written


def test_prompts_are_sharded_disjointly_across_processes() -> None:
    pool = [f"p{i}" for i in range(13)]
    whole = prompts_for_update(pool, 3, 8, seed=1)
    parts = [prompts_for_process(pool, 3, 4, 1, rank, 2) for rank in range(2)]
    assert parts[0] + parts[1] == whole
    assert prompts_for_process(pool, 3, 4, 1, 0, 1) == prompts_for_update(pool, 3, 4, 1)


def fake_accelerator(**fields: Any) -> SimpleNamespace:
    defaults: dict[str, Any] = {"mixed_precision": "no", "distributed_type": "NO"}
    return SimpleNamespace(**{**defaults, **fields})


def test_launch_settings_are_checked() -> None:
    config = PPOConfig(batch_size=8, mini_batches=2, grad_accumulation=2, max_grad_norm=0.5)
    zero3 = fake_accelerator(
        distributed_type="DEEPSPEED",
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3)),
    )
    with pytest.raises(ValueError, match="ZeRO-3"):
        check_accelerator(zero3, config)
    # DeepSpeed without a dataloader: the trainer fills what accelerate would infer from one
    ds_config: dict[str, Any] = {"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {}}
    zero2 = fake_accelerator(
        distributed_type="DEEPSPEED",
        state=SimpleNamespace(
            deepspeed_plugin=SimpleNamespace(zero_stage=2, deepspeed_config=ds_config)
        ),
    )
    check_accelerator(zero2, config)
    configure_deepspeed(zero2, config)
    assert ds_config["train_micro_batch_size_per_gpu"] == 2
    assert ds_config["gradient_accumulation_steps"] == 2
    assert ds_config["gradient_clipping"] == 0.5
    ds_config["gradient_accumulation_steps"] = 4
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        configure_deepspeed(zero2, config)


def test_example_accelerate_configs_load() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = load_config_from_file(str(CONFIGS / "accelerate_ddp.yaml"))
    assert str(ddp.distributed_type.value) == "MULTI_GPU" and ddp.num_processes == 2
    zero2 = load_config_from_file(str(CONFIGS / "accelerate_zero2.yaml"))
    assert str(zero2.distributed_type.value) == "DEEPSPEED"
    assert zero2.deepspeed_config["zero_stage"] == 2
    assert "gradient_accumulation_steps" not in zero2.deepspeed_config  # left to the trainer
    assert ddp.mixed_precision == zero2.mixed_precision == "bf16"


def test_checkpoints_from_another_launch_are_refused(tmp_path: Path) -> None:
    trainer = make()
    saved = trainer.save_checkpoint(tmp_path / "ckpt")
    state = json.loads((saved / "state.json").read_text())
    assert state["processes"] == 1 and state["distributed_type"] == "NO"
    for field, value, message in (
        ("processes", 2, "2 processes"),
        ("distributed_type", "DEEPSPEED", "DeepSpeed"),
    ):
        changed = {**state, field: value}
        (saved / "state.json").write_text(json.dumps(changed))
        with pytest.raises(CheckpointError, match=message):
            make().load_checkpoint(saved)
    (saved / "state.json").write_text(json.dumps(state))
    make().load_checkpoint(saved)  # the untouched one loads
