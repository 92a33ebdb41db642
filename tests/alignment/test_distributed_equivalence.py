"""Data parallelism changes nothing but speed: 2 processes = 1 process with the same global batch.

The test runs this file as a script under ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2``
(accelerate's ``MULTI_CPU``: DDP over gloo, the code path of ``accelerate launch --num_processes
2`` except for the backend) and compares with single-process runs in the test process:

* reward-model training: 2 processes × batch 8 against 1 process × batch 8 with 2 accumulated
  micro-batches (the planner deals batch *i* to process ``i mod 2``, so the optimiser steps see
  the same pairs): the same loss curve and final weights;
* one PPO update on fixed rollouts: 2 processes × 2 rows against 1 process × 4 rows in 2
  accumulated micro-batches: the same weights afterwards. This holds only because advantage
  whitening uses statistics of the global batch and the losses are token sums over the global
  minibatch token count (a per-process mean would weigh tokens by how the batch was split).

Sampling is the one thing that is not compared: each process draws its own responses (its own
RNG stream), which is why the PPO comparison feeds fixed rollouts to both runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from distributed_launch import run_two_processes

ROLLOUT_TENSORS = ("query_ids", "query_mask", "response_ids", "response_mask", "has_eos")


# --------------------------------------------------------------------------- shared set-up


def _conftest() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "equivalence_conftest", Path(__file__).with_name("conftest.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reward_job(model_dir: Path, data: Path, out: Path, accumulation: int) -> Any:
    from alignment import RewardJobConfig

    return RewardJobConfig.model_validate(
        {
            "model": {"name_or_path": str(model_dir)},
            "data": {"path": str(data), "format": "fields", "validation_fraction": 0.25},
            "training": {
                "batch_size": 8,
                "gradient_accumulation_steps": accumulation,
                "learning_rate": 1e-3,
                "progress": False,
                "threads": 1,
                "group_by_length": False,
            },
            "max_length": 64,
            "min_prompt_tokens": 2,
            "output_dir": str(out),
        }
    )


def _word_count(prompts: Any, responses: Any) -> torch.Tensor:
    return torch.tensor([float(len(r.split())) for r in responses])


def _ppo_trainer(rows: int, accumulation: int, accelerator: Any = None, value: str = "head") -> Any:
    """A value head (one backbone, one joint pass), or a separate value model run in one-row
    passes: policy and value model back-propagated one after the other, except in the one
    backward per minibatch where DDP synchronises (each process has its own number of passes)."""
    from alignment import RewardModel, ensure_pad_token
    from alignment.ppo import PPOConfig, PPOTrainer, ValueModel

    conftest = _conftest()
    config = PPOConfig(
        batch_size=rows,
        mini_batches=1,
        grad_accumulation=accumulation,
        ppo_epochs=2,
        response_length=5,
        temperature=1.0,
        learning_rate=1e-3,
        value=value,
        max_grad_norm=None,
        kl_coef=0.05,
        tokens_per_pass=1 if value == "model" else 512,
    )
    tokenizer = conftest.make_tokenizer()
    value_model = None
    if value == "model":
        backbone = conftest.make_model(seed=1).model
        ensure_pad_token(tokenizer, backbone)
        value_model = ValueModel.from_reward_model(RewardModel(backbone, tokenizer))
    return PPOTrainer(
        conftest.make_model(),
        None,
        value_model,
        _word_count,
        tokenizer,
        config,
        accelerator=accelerator,
    )


def _save_rollout(rollout: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: getattr(rollout, k).contiguous() for k in ROLLOUT_TENSORS}, folder / "r.st")
    (folder / "r.json").write_text(json.dumps({"prompts": rollout.prompts, "texts": rollout.texts}))


def _load_rollout(folder: Path, rows: slice) -> Any:
    from safetensors.torch import load_file

    from alignment.ppo import Rollout

    tensors = load_file(str(folder / "r.st"))
    text = json.loads((folder / "r.json").read_text())
    return Rollout(
        prompts=text["prompts"][rows],
        texts=text["texts"][rows],
        **{k: tensors[k][rows] for k in ROLLOUT_TENSORS},
    )


def _ppo_update(trainer: Any, rollout: Any) -> dict[str, float]:
    """One update on ``rollout`` instead of freshly sampled responses."""
    trainer.sample = lambda prompts: rollout
    metrics: dict[str, float] = trainer.step(rollout.prompts)
    return metrics


def _reward_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "backbone" / "model.safetensors"))
    weights.update({f"head.{k}": v for k, v in load_file(str(folder / "head.safetensors")).items()})
    return weights


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


# --------------------------------------------------------------------------- the tests


def test_gradient_accumulation_does_not_change_a_ppo_update(tmp_path: Path) -> None:
    """Rows of unequal length in each micro-batch: every token must still weigh the same."""
    torch.manual_seed(0)
    prompts = [f"Human : w{i} Assistant :" for i in range(4)]
    rollout = _ppo_trainer(rows=4, accumulation=1).sample(prompts)
    rollout.response_mask[:2, 2:] = 0  # make the two micro-batches' token counts differ
    rollout.response_ids[:2, 2:] = 0
    assert rollout.response_mask[:2].sum() != rollout.response_mask[2:].sum()
    weights = []
    for accumulation in (1, 2):
        torch.manual_seed(0)
        trainer = _ppo_trainer(rows=4, accumulation=accumulation)
        _ppo_update(trainer, rollout)
        weights.append(_flat(trainer.trainable))
    assert float((weights[0] - weights[1]).abs().max()) < 1e-5


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(
    tmp_path: Path,
    tiny_model_dir: Path,
    make_pairs: Callable[..., list[Any]],
    write_pairs: Callable[[Path, list[Any]], Path],
) -> None:
    from safetensors.torch import load_file

    from alignment import train_reward_model
    from alignment.metrics import read_metrics

    # 64 pairs: 48 for training = 6 batches of 8, an even number, so the 2-process run drops none
    data = write_pairs(tmp_path / "pairs.jsonl", make_pairs(64, seed=3))
    torch.manual_seed(0)
    rollout_trainer = _ppo_trainer(rows=4, accumulation=1)
    prompts = [f"Human : w{i} w{i + 7} Assistant :" for i in range(4)]
    _save_rollout(rollout_trainer.sample(prompts), tmp_path)

    run_two_processes(Path(__file__), str(tiny_model_dir), str(data), str(tmp_path))

    # ---- reward model: same losses step by step, same weights
    single = train_reward_model(_reward_job(tiny_model_dir, data, tmp_path / "reward-1", 2))
    two = tmp_path / "reward-2"
    losses = {
        name: [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train"]
        for name, run in (("single", single.output_dir), ("two", two))
    }
    assert len(losses["single"]) == 3
    assert losses["two"] == pytest.approx(losses["single"], rel=1e-5, abs=1e-6)
    a, b = _reward_weights(single.model_dir), _reward_weights(two / "model")
    assert a.keys() == b.keys()
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert gap < 1e-4, f"2-process reward weights differ from 1 process by {gap}"
    # the backbone is saved without its LM head: ``model.layers.0...`` is ``layers.0...`` there
    initial = {
        k.removeprefix("model."): v for k, v in _conftest().make_model().state_dict().items()
    }
    compared = [k for k, v in initial.items() if k in a and a[k].shape == v.shape]
    unchanged = [k for k in compared if torch.allclose(a[k], initial[k])]
    assert len(compared) > 10 and len(unchanged) < len(compared) // 2, "training hardly moved"

    # ---- PPO: one update on the same 4 rollouts (value head; separate value model)
    for value in ("head", "model"):
        torch.manual_seed(0)
        trainer = _ppo_trainer(rows=4, accumulation=2, value=value)
        before = _flat(trainer.trainable).clone()
        _ppo_update(trainer, _load_rollout(tmp_path, slice(0, 4)))
        after = _flat(trainer.trainable)
        distributed = load_file(str(tmp_path / f"ppo-2-{value}.st"))["weights"]
        assert float((after - before).abs().max()) > 1e-4  # the update did something
        gap = float((distributed - after).abs().max())
        assert gap < 1e-5, f"2-process PPO weights ({value}) differ from 1 process by {gap}"


# --------------------------------------------------------------------------- the worker


def _worker(model_dir: Path, data: Path, work: Path) -> None:  # pragma: no cover
    from accelerate import Accelerator
    from safetensors.torch import save_file

    from alignment import train_reward_model

    torch.set_num_threads(1)
    acc = Accelerator()
    train_reward_model(_reward_job(model_dir, data, work / "reward-2", 1), accelerator=acc)

    rank = acc.process_index
    for value in ("head", "model"):
        torch.manual_seed(0)
        trainer = _ppo_trainer(rows=2, accumulation=1, accelerator=acc, value=value)
        _ppo_update(trainer, _load_rollout(work, slice(2 * rank, 2 * rank + 2)))
        if acc.is_main_process:
            weights = _flat(trainer.trainable).contiguous()
            save_file({"weights": weights}, str(work / f"ppo-2-{value}.st"))
        acc.wait_for_everyone()


if __name__ == "__main__":  # launched by the test through torchrun
    _worker(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
