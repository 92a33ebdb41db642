"""PPO under real data parallelism: 2 processes, DDP over gloo on the CPU (``torchrun``).

The test launches this file as a script with ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2``
(accelerate then runs ``MULTI_CPU`` DDP), the same code path as ``accelerate launch`` on GPUs
except for the backend (gloo instead of NCCL). Each process trains on its own prompts; the
script checks what must hold across processes and rank 0 writes a JSON report:

* the trainer (with PPO-ptx and gradient checkpointing on): weights and the gradients of every
  optimiser step identical on both processes (DDP synchronised them, with accumulation over
  two micro-batches), rollouts different (own prompts, own RNG stream), metrics identical
  (averaged over processes);
* the job: files written once (by the main process), a checkpoint with both RNG states, and a
  run resumed from update 1 that ends with the same weights as the uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from distributed_launch import run_two_processes


@pytest.mark.slow
def test_two_process_ddp_training_and_job(tmp_path: Path, tiny_model_dir: Path) -> None:
    report_path = tmp_path / "report.json"
    run_two_processes(Path(__file__), str(report_path), str(tiny_model_dir), str(tmp_path / "work"))
    report = json.loads(report_path.read_text())

    assert report["distributed_type"] == "MULTI_CPU" and report["processes"] == 2
    assert report["wrapped"] == "DistributedDataParallel"
    assert report["weights_equal_across_ranks"]
    assert report["grads_equal_across_ranks"] and report["optimizer_steps"] == 4
    assert report["grad_nonzero"]
    assert report["rollouts_differ_across_ranks"]
    assert report["metrics_equal_across_ranks"]
    assert report["ptx_logged"]
    assert report["train_steps_logged"] == [1, 2]  # once, not once per process
    assert report["rng_files"] == ["rng-rank1.safetensors", "rng.safetensors"]
    assert report["checkpoint_processes"] == 2
    assert report["resumed_from"] == 1
    assert report["resumed_weights_equal"]


# --------------------------------------------------------------------------- the worker


def _conftest() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ppo_conftest", Path(__file__).with_name("conftest.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(report_path: Path, model_dir: Path, work: Path) -> None:  # pragma: no cover
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from safetensors.torch import load_file

    from alignment import (
        Demonstration,
        PromptResponseEncoder,
        ensure_pad_token,
        tokenize_demonstrations,
    )
    from alignment.metrics import read_metrics
    from alignment.ppo import PPOConfig, PPOJobConfig, PPOTrainer, PtxData, train_ppo

    torch.set_num_threads(1)
    conftest = _conftest()
    acc = Accelerator(gradient_accumulation_steps=2)
    rank = acc.process_index
    report: dict[str, Any] = {
        "distributed_type": str(acc.distributed_type.value),
        "processes": acc.num_processes,
    }

    # ---- the trainer
    def reward(prompts: Any, responses: Any) -> torch.Tensor:
        return torch.tensor([float(len(r.split())) for r in responses])

    config = PPOConfig(
        batch_size=4,
        mini_batches=1,
        grad_accumulation=2,
        ppo_epochs=2,
        response_length=5,
        temperature=1.0,
        learning_rate=1e-3,
        value="head",
        max_grad_norm=None,
        ptx_coef=0.5,
        gradient_checkpointing=True,
    )
    tokenizer = conftest.make_tokenizer()
    model = conftest.make_model()
    ensure_pad_token(tokenizer, model)
    demos, _ = tokenize_demonstrations(
        [Demonstration(prompt=f"Human : w{i} Assistant :", response="w9 w9") for i in range(6)],
        PromptResponseEncoder(tokenizer, max_length=16, min_prompt_tokens=1),
    )
    ptx = PtxData(demos, int(tokenizer.pad_token_id), batch_size=2)
    trainer = PPOTrainer(
        model, None, None, reward, tokenizer, config, accelerator=acc, ptx_data=ptx
    )
    report["wrapped"] = type(trainer.model).__name__
    grads: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording(*args: Any, **kwargs: Any) -> Any:
        grads.append([p.grad.clone() for p in trainer.trainable.parameters() if p.grad is not None])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording  # type: ignore[method-assign]
    words = conftest.WORDS
    prompts = [f"Human : {words[rank * 10 + i]} Assistant :" for i in range(4)]
    metrics = [trainer.step(prompts) for _ in range(2)]
    assert trainer.last_rollout is not None
    flat_weights = torch.cat([p.detach().flatten() for p in trainer.trainable.parameters()])
    flat_grads = [torch.cat([g.flatten() for g in step_grads]) for step_grads in grads]
    gathered = gather_object(
        [
            {
                "weights": flat_weights,
                "grads": flat_grads,
                "texts": trainer.last_rollout.texts,
                "metrics": metrics,
            }
        ]
    )
    if rank == 0:
        a, b = gathered
        report["weights_equal_across_ranks"] = bool(torch.equal(a["weights"], b["weights"]))
        report["optimizer_steps"] = len(a["grads"])
        report["grads_equal_across_ranks"] = all(
            torch.allclose(x, y, rtol=1e-6, atol=1e-9)
            for x, y in zip(a["grads"], b["grads"], strict=True)
        )
        report["grad_nonzero"] = bool(a["grads"][0].abs().max() > 1e-6)
        report["rollouts_differ_across_ranks"] = a["texts"] != b["texts"]
        timing = {"time_generation", "time_scoring", "time_training", "time_total"}
        report["ptx_logged"] = all(m["ptx_loss"] > 0 for m in a["metrics"])
        report["metrics_equal_across_ranks"] = all(
            abs(x[k] - y[k]) < 1e-9
            for x, y in zip(a["metrics"], b["metrics"], strict=True)
            for k in x
            if k not in timing
        )

    # ---- the job
    data = work / "hh.jsonl"
    if acc.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps(
                {
                    "chosen": f"\n\nHuman: {words[i]} {words[i + 1]}\n\nAssistant: good",
                    "rejected": f"\n\nHuman: {words[i]} {words[i + 1]}\n\nAssistant: bad",
                }
            )
            for i in range(20)
        ]
        data.write_text("\n".join(lines) + "\n")
    acc.wait_for_everyone()
    settings: dict[str, Any] = {
        "policy": {"name_or_path": str(model_dir)},
        "reward": {"rule": "length"},
        "data": {"path": str(data), "heldout_fraction": 0.2, "heldout_max": 2},
        "ppo": {
            "batch_size": 2,
            "mini_batches": 1,
            "grad_accumulation": 2,
            "ppo_epochs": 1,
            "response_length": 4,
            "temperature": 1.0,
            "learning_rate": 1e-3,
            "max_prompt_length": 32,
            "value": "head",
        },
        "updates": 2,
        "checkpoint_every": 1,
        "sample_every": 1,
        "samples_per_log": 1,
        "output_dir": str(work / "run"),
    }
    job = PPOJobConfig.model_validate(settings)
    full = train_ppo(job)
    out = job.output_dir
    if acc.is_main_process:
        train = [r for r in read_metrics(full.metrics_path) if r["split"] == "train"]
        report["train_steps_logged"] = [r["step"] for r in train]
        last = out / "checkpoints" / "update-000002"
        report["rng_files"] = sorted(p.name for p in last.glob("rng*.safetensors"))
        report["checkpoint_processes"] = json.loads((last / "state.json").read_text())["processes"]
        shutil.copytree(out / "model", work / "full-model")
        # forget the last update, as if the run had been killed after checkpoint 1
        shutil.rmtree(last)
        shutil.rmtree(out / "model")
    acc.wait_for_everyone()
    resumed = train_ppo(job, resume=True)
    if acc.is_main_process:
        report["resumed_from"] = resumed.resumed_from
        a = load_file(str(work / "full-model" / "model.safetensors"))
        b = load_file(str(out / "model" / "model.safetensors"))
        report["resumed_weights_equal"] = a.keys() == b.keys() and all(
            torch.equal(a[k], b[k]) for k in a
        )
        report_path.write_text(json.dumps(report, indent=1))
    acc.wait_for_everyone()


if __name__ == "__main__":  # launched by the test through torchrun
    _worker(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
