"""The training loop shared by the SFT and reward-model jobs.

Why our own loop rather than ``transformers.Trainer`` (which TRL's trainers build on): the jobs
need checkpoints that are atomic and pickle-free, a resume that reproduces the uninterrupted
run exactly (same batches, same optimizer state, same RNG), batches that keep every pair of one
prompt together, and prompts truncated from the left; each of these fights the Trainer's
defaults. The loop itself is small: plan the batches of each epoch from ``(seed, epoch)``,
accumulate gradients, step, log, evaluate, checkpoint. ``accelerate`` makes the same code run
data-parallel under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from alignment.batching import shard
from alignment.checkpoint import (
    LoopPosition,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from alignment.config import TrainingSettings
from alignment.errors import CheckpointError
from alignment.metrics import MetricsSink, average_over_processes

B = TypeVar("B")


class Interrupted(Exception):  # noqa: N818 - it is a control-flow signal, not an error
    """Raised by an ``on_step`` hook to stop training early (used to test resuming)."""


@dataclass
class LoopResult:
    """What a finished run reports."""

    steps: int
    epochs_started: int
    seconds: float
    examples: int
    train: dict[str, float] = field(default_factory=dict)
    eval: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    peak_rss_mb: float = 0.0
    train_seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        """Training examples (pairs or demonstrations) per second of optimisation (no eval)."""
        return self.examples / self.train_seconds if self.train_seconds > 0 else 0.0

    def summary(self, rate_name: str = "examples_per_second") -> dict[str, Any]:
        """The headline numbers a finished job prints (the rate under ``rate_name``)."""
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "train_seconds": round(self.train_seconds, 1),
            rate_name: round(self.examples_per_second, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
        }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _mean_metrics(items: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {k for item in items for k in item}
    return {
        k: sum(item[k] for item in items if k in item) / sum(k in i for i in items) for k in keys
    }


class TrainingLoop(Generic[B]):
    """Runs optimizer steps over planned batches with logging, evaluation and checkpoints.

    ``plan(epoch)`` returns the index batches of one epoch (the same for the same epoch, so a
    resumed run sees the same order); ``collate`` turns one index batch into model inputs;
    ``step_loss(model, batch)`` returns the loss to minimise and metrics to log.
    ``module`` is the ``nn.Module`` whose trainable parameters are optimised (it is what
    ``accelerate`` prepares, and what checkpoints save).
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
        self.progress_keys = tuple(progress_keys)
        self.description = description
        self.module = module
        self._plans: dict[int, list[list[int]]] = {}
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

    def _checkpoint(self, position: LoopPosition) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_checkpoint(
                self.output_dir,
                position,
                acc.unwrap_model(self.model),
                self.optimizer,
                self.scheduler,
                self.fingerprint,
                self.settings.keep_checkpoints,
            )
        acc.wait_for_everyone()

    def run(self, resume: bool = False) -> LoopResult:
        """Train to ``total_steps``; with ``resume`` continue from the newest checkpoint."""
        acc = self.accelerator
        position = LoopPosition()
        resumed_from: int | None = None
        if resume:
            found = latest_checkpoint(self.output_dir)
            if found is None:
                raise CheckpointError(f"--resume: no checkpoint under {self.output_dir}")
            position = load_checkpoint(
                found,
                acc.unwrap_model(self.model),
                self.optimizer,
                self.scheduler,
                self.fingerprint,
            )
            resumed_from = position.step
        sink = (
            MetricsSink(self.output_dir, resume_step=position.step) if acc.is_main_process else None
        )
        result = LoopResult(
            steps=position.step, epochs_started=position.epoch, seconds=0.0, examples=0
        )
        result.resumed_from = resumed_from
        started = time.perf_counter()
        settings = self.settings
        accum = settings.gradient_accumulation_steps
        self.model.train()
        progress = TrainingProgress(
            enabled=settings.progress and acc.is_main_process,
            total=self.total_steps,
            done=position.step,
            description=self.description,
        )
        running: dict[str, float] = {}
        try:
            with progress:
                while position.step < self.total_steps:
                    batches = self.epoch_plan(position.epoch)
                    if position.batch_in_epoch >= len(batches):
                        position = LoopPosition(position.step, position.epoch + 1, 0)
                        if not batches:
                            raise ValueError(f"epoch {position.epoch} has no batches")
                        continue
                    chunk = batches[position.batch_in_epoch : position.batch_in_epoch + accum]
                    step_started = time.perf_counter()
                    step_metrics = []
                    for j, indices in enumerate(chunk):
                        batch = self.collate(indices)
                        sync = j == len(chunk) - 1
                        ctx = contextlib.nullcontext() if sync else acc.no_sync(self.model)
                        with ctx:
                            loss, metrics = self.step_loss(self.model, batch)
                            acc.backward(loss / len(chunk))
                        step_metrics.append(metrics)
                        result.examples += len(indices)
                    if settings.max_grad_norm is not None:
                        norm = acc.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
                        step_metrics[-1]["grad_norm"] = float(norm)
                    lr = float(self.scheduler.get_last_lr()[0])
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    result.train_seconds += time.perf_counter() - step_started
                    position = LoopPosition(
                        position.step + 1, position.epoch, position.batch_in_epoch + len(chunk)
                    )
                    values = average_over_processes(self.accelerator, _mean_metrics(step_metrics))
                    values["lr"] = lr
                    values["epoch"] = position.epoch + position.batch_in_epoch / len(batches)
                    result.train = values
                    for key in self.progress_keys:
                        if key in values:
                            old = running.get(key)
                            running[key] = (
                                values[key] if old is None else 0.9 * old + 0.1 * values[key]
                            )
                    step = position.step
                    if sink is not None and step % settings.log_every == 0:
                        sink.log(step, "train", values)
                    last = step == self.total_steps
                    if settings.eval_every and step % settings.eval_every == 0 and not last:
                        result.eval = self._evaluate()
                        if sink is not None:
                            sink.log(step, "eval", result.eval)
                    if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                        self._checkpoint(position)
                    progress.advance(running, result.eval)
                    if self.on_step is not None:
                        self.on_step(step)
            result.eval = self._evaluate()
            if sink is not None and result.eval:
                sink.log(position.step, "eval", result.eval)
        finally:
            if sink is not None:
                sink.close()
        result.steps = position.step
        result.epochs_started = position.epoch + 1
        result.seconds = time.perf_counter() - started
        result.peak_rss_mb = peak_rss_mb()
        return result


class TrainingProgress:
    """A rich progress bar showing live (smoothed) training and last validation metrics.

    Shared by the SFT/reward loop and the PPO job; ``eval_keys`` are the validation metrics
    worth a place on the bar.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        total: int,
        done: int,
        description: str,
        eval_keys: tuple[str, ...] = ("loss", "accuracy"),
    ) -> None:
        self.enabled = enabled
        self.eval_keys = eval_keys
        self._bar: Any = None
        self._task: Any = None
        self.total, self.done, self.description = total, done, description

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            # stderr: a command's stdout stays machine-readable (the job summaries are JSON)
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(stderr=True),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.description, total=self.total, completed=self.done, metrics=""
            )
        return self

    def advance(self, running: dict[str, float], evaluation: dict[str, float]) -> None:
        """One more step; show the smoothed train metrics and the latest eval metrics."""
        if self._bar is None:
            return
        text = " ".join(f"{k} {v:.4f}" for k, v in running.items())
        if evaluation:
            text += " | val " + " ".join(
                f"{k} {v:.4f}" for k, v in evaluation.items() if k in self.eval_keys
            )
        self._bar.update(self._task, advance=1, metrics=text)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
