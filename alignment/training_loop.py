"""The training loop of the SFT and reward-model jobs: optimizer steps over planned batches.

Why our own loop rather than ``transformers.Trainer`` (which TRL's trainers build on): the jobs
need checkpoints that are atomic and pickle-free, a resume that reproduces the uninterrupted
run exactly (same batches, same optimizer state, same RNG), batches that keep every pair of one
prompt together, and prompts truncated from the left; each of these fights the Trainer's
defaults. :class:`TrainingLoop` is small: plan the batches of each epoch from ``(seed,
epoch)``, accumulate gradients, step; resume, metrics, evaluation, checkpoints and progress are
the shared job loop's (:class:`~alignment.job_loop.JobLoop`, which the PPO job runs on too).
``accelerate`` makes the same code run data-parallel under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn

from alignment.batching import group_batches, shard
from alignment.checkpoint import LoopPosition, load_checkpoint, save_checkpoint
from alignment.config import TrainingSettings
from alignment.job_loop import JobLoop, LoopResult, Schedule
from alignment.metrics import average_over_processes

B = TypeVar("B")


def make_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainingSettings, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or linear decay to 0 at ``total_steps``."""
    warmup = settings.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if settings.lr_schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, settings: TrainingSettings) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=settings.learning_rate, eps=settings.adam_epsilon
    )


class Groupable(Protocol):
    """A tokenised example batched by its group (its prompt) and length."""

    @property
    def group(self) -> str: ...

    @property
    def length(self) -> int: ...


def grouped_plan(
    examples: Sequence[Groupable], settings: TrainingSettings
) -> Callable[[int], list[list[int]]]:
    """``plan(epoch)`` for :class:`TrainingLoop`: batches of ``settings.batch_size`` that keep
    each group together, shuffled from ``(settings.seed, epoch)``, by length when
    ``settings.group_by_length``."""
    keys = [e.group for e in examples]
    lengths = [e.length for e in examples] if settings.group_by_length else None

    def plan(epoch: int) -> list[list[int]]:
        return group_batches(
            keys, settings.batch_size, seed=settings.seed, epoch=epoch, lengths=lengths
        )

    return plan


def _mean_metrics(items: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {k for item in items for k in item}
    return {
        k: sum(item[k] for item in items if k in item) / sum(k in i for i in items) for k in keys
    }


class TrainingLoop(Generic[B]):
    """Runs optimizer steps over planned batches on the shared :class:`JobLoop` (logging,
    evaluation, checkpoints, resume).

    ``plan(epoch)`` returns the index batches of one epoch (the same for the same epoch, so a
    resumed run sees the same order); ``collate`` turns one index batch into model inputs;
    ``step_loss(model, batch)`` returns the loss to minimise and metrics to log.
    ``module`` is the ``nn.Module`` whose trainable parameters are optimised (it is what
    ``accelerate`` prepares, and what checkpoints save). ``on_start(done)``: called on the main
    process once the run folder is ready (after a resume was accepted), to write the run's own
    files. A resume with no checkpoint in ``output_dir`` is an error.
    """

    def __init__(
        self,
        *,
        module: nn.Module,
        settings: TrainingSettings,
        output_dir: Path,
        plan: Callable[[int], list[list[int]]],
        collate: Callable[[list[int]], B],
        step_loss: Callable[[nn.Module, B], tuple[torch.Tensor, dict[str, float]]],
        evaluate: Callable[[nn.Module], dict[str, float]] | None,
        fingerprint: str,
        accelerator: Any = None,
        on_step: Callable[[int], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        progress_keys: Sequence[str] = ("loss",),
        description: str = "training",
    ) -> None:
        from accelerate import Accelerator

        self.accelerator = accelerator if accelerator is not None else Accelerator()
        self.settings = settings
        self.output_dir = output_dir
        self.plan_fn = plan
        self.collate = collate
        self.step_loss = step_loss
        self.evaluate_fn = evaluate
        self.fingerprint = fingerprint
        self.on_step = on_step
        self.on_start = on_start
        self.progress_keys = tuple(progress_keys)
        self.description = description
        self.module = module
        self._plans: dict[int, list[list[int]]] = {}
        self.position = LoopPosition()
        self.examples = 0  # training examples seen by this run (not counting a resumed one's)
        if settings.max_steps is not None:
            self.total_steps = settings.max_steps
        else:
            self.total_steps = sum(self.steps_in_epoch(e) for e in range(settings.epochs))
        if self.total_steps < 1:
            raise ValueError("no training batches: the training split is empty")
        optimizer = make_optimizer(module, settings)
        self.model, self.optimizer = self.accelerator.prepare(module, optimizer)
        self.scheduler = make_scheduler(self.optimizer, settings, self.total_steps)

    # ------------------------------------------------------------------ planning

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """This process's index batches for ``epoch`` (cached)."""
        if epoch not in self._plans:
            acc = self.accelerator
            self._plans[epoch] = shard(self.plan_fn(epoch), acc.process_index, acc.num_processes)
        return self._plans[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps one epoch gives (the last may accumulate fewer batches)."""
        return math.ceil(len(self.epoch_plan(epoch)) / self.settings.gradient_accumulation_steps)

    # ------------------------------------------------------------------ running

    def _evaluate(self) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        # Every process evaluates the whole validation set on the unwrapped model: redundant
        # under data parallelism, but it needs no collective ops (a DDP forward on one rank
        # only would wait forever for the others).
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        with torch.no_grad():
            metrics = self.evaluate_fn(model)
        self.model.train()
        return metrics

    def save_checkpoint(self, directory: Path, *, fingerprint: str) -> None:
        """Trainable weights, optimizer, schedule, RNG and data position (the main process
        writes; every process waits for it)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_checkpoint(
                directory,
                self.position,
                acc.unwrap_model(self.model),
                self.optimizer,
                self.scheduler,
                fingerprint,
            )
        acc.wait_for_everyone()

    def load_checkpoint(self, directory: Path, *, fingerprint: str) -> int:
        """Restore :meth:`save_checkpoint`; returns the optimizer steps done."""
        self.position = load_checkpoint(
            directory,
            self.accelerator.unwrap_model(self.model),
            self.optimizer,
            self.scheduler,
            fingerprint,
        )
        return self.position.step

    def _step(self, done: int) -> dict[str, float]:
        """One optimizer step over the next ``gradient_accumulation_steps`` batches."""
        acc = self.accelerator
        accum = self.settings.gradient_accumulation_steps
        position = self.position
        batches = self.epoch_plan(position.epoch)
        while position.batch_in_epoch >= len(batches):
            position = LoopPosition(position.step, position.epoch + 1, 0)
            batches = self.epoch_plan(position.epoch)
            if not batches:
                raise ValueError(f"epoch {position.epoch} has no batches")
        chunk = batches[position.batch_in_epoch : position.batch_in_epoch + accum]
        step_metrics = []
        for j, indices in enumerate(chunk):
            batch = self.collate(indices)
            sync = j == len(chunk) - 1
            ctx = contextlib.nullcontext() if sync else acc.no_sync(self.model)
            with ctx:
                loss, metrics = self.step_loss(self.model, batch)
                acc.backward(loss / len(chunk))
            step_metrics.append(metrics)
            self.examples += len(indices)
        if self.settings.max_grad_norm is not None:
            norm = acc.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
            step_metrics[-1]["grad_norm"] = float(norm)
        lr = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.position = LoopPosition(
            position.step + 1, position.epoch, position.batch_in_epoch + len(chunk)
        )
        values = average_over_processes(acc, _mean_metrics(step_metrics))
        values["lr"] = lr
        values["epoch"] = self.position.epoch + self.position.batch_in_epoch / len(batches)
        return values

    def run(self, resume: bool = False) -> LoopResult:
        """Train to ``total_steps``; with ``resume`` continue from the newest checkpoint."""
        settings = self.settings
        on_step = self.on_step
        loop = JobLoop(
            output_dir=self.output_dir,
            schedule=Schedule(
                total_steps=self.total_steps,
                log_every=settings.log_every,
                eval_every=settings.eval_every,
                checkpoint_every=settings.checkpoint_every,
                keep_checkpoints=settings.keep_checkpoints,
            ),
            step=self._step,
            state=self,
            fingerprint=self.fingerprint,
            accelerator=self.accelerator,
            evaluate=self._evaluate,
            on_start=self.on_start,
            on_step=None if on_step is None else lambda step, _values: on_step(step),
            progress=settings.progress,
            description=self.description,
            progress_keys=self.progress_keys,
        )
        self.position = LoopPosition()
        self.examples = 0
        self.model.train()
        result = loop.run(resume=resume)
        result.examples = self.examples
        result.epochs_started = self.position.epoch + 1
        return result
