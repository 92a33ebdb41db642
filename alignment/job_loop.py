"""The loop every training job runs on: resume, fingerprint, metrics, progress, evaluation,
checkpoints.

A job gives :class:`JobLoop` what is its own: ``step(done)``, which makes one step (an
optimizer step of SFT or reward training, one PPO update) and returns its metrics, an optional
``evaluate()``, and a :class:`JobState` that writes and restores the job's checkpoints. The loop
owns the rest, the same for every job:

* **resume**: the newest complete checkpoint of the run folder is restored (the job's state
  refuses a checkpoint whose job fingerprint differs); a fresh run forgets the checkpoints and
  metrics an earlier run left in the folder;
* **metrics**: ``metrics.jsonl`` (and TensorBoard) through :class:`MetricsSink`, truncated on
  resume to the step resumed from, so the file reads as one uninterrupted run;
* **schedule** (:class:`Schedule`): train metrics every ``log_every`` steps, evaluation every
  ``eval_every`` steps and after the last, checkpoints every ``checkpoint_every`` steps (pruned
  to the newest ``keep_checkpoints``);
* **progress**: a rich progress bar on stderr with the latest train and validation metrics.

Only the main process writes files; under ``accelerate launch`` every process runs the loop,
and each takes part in checkpoints (the job's state decides who writes what).
"""

from __future__ import annotations

import logging
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alignment.checkpoint import CHECKPOINT_DIR, STEP_CHECKPOINTS, CheckpointLayout
from alignment.errors import CheckpointError
from alignment.metrics import METRICS_FILE, MetricsSink, read_metrics

logger = logging.getLogger(__name__)


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
    eval_start: dict[str, float] = field(default_factory=dict)
    """The evaluation before the first step (``Schedule.evaluate_at_start``; read back from
    ``metrics.jsonl`` on the main process of a resumed run)."""

    @property
    def examples_per_second(self) -> float:
        """Training examples (pairs or demonstrations) per second of optimisation (no eval)."""
        return self.examples / self.train_seconds if self.train_seconds > 0 else 0.0

    def record(self, rate_name: str = "examples_per_second") -> dict[str, Any]:
        """The loop's part of a job's ``result.json`` (the rate under ``rate_name``)."""
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "train_seconds": self.train_seconds,
            rate_name: self.examples_per_second,
            "peak_rss_mb": self.peak_rss_mb,
            "resumed_from": self.resumed_from,
        }

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


class JobState(Protocol):
    """What a job's checkpoints hold (weights, optimizer, RNG, data position…).

    Every process calls both methods; the state decides which process writes.
    """

    def save_checkpoint(self, directory: Path, *, fingerprint: str) -> object:
        """Write the state into the folder ``directory``, atomically, recording
        ``fingerprint``."""
        ...

    def load_checkpoint(self, directory: Path, *, fingerprint: str) -> int:
        """Restore the state from ``directory`` and return the steps it had done; raise
        :class:`CheckpointError` when the recorded fingerprint is not ``fingerprint``."""
        ...


@dataclass(frozen=True)
class Schedule:
    """When a :class:`JobLoop` logs, evaluates and checkpoints (steps count from 1).

    ``evaluate_at_start``: also evaluate before the first step of a fresh run (logged at step
    0). ``final_checkpoint``: checkpoint the last step even when ``checkpoint_every`` does not
    fall on it. ``resume_needs_checkpoint``: a resume with no checkpoint in the folder is an
    error (else it is a fresh start).
    """

    total_steps: int
    log_every: int = 1
    eval_every: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    evaluate_at_start: bool = False
    final_checkpoint: bool = False
    resume_needs_checkpoint: bool = True


class JobLoop:
    """Runs ``step`` to ``schedule.total_steps`` with resume, metrics, evaluation, checkpoints
    and a progress bar (see the module docstring).

    ``step(done)`` makes step ``done + 1`` and returns its metrics (already averaged over
    processes). ``evaluate()`` returns validation metrics (``{}``: nothing to log; a job that
    evaluates on the main process only returns ``{}`` on the others). ``fingerprint``: the
    digest of the job's trajectory-deciding settings, recorded in and checked against its
    checkpoints. ``on_start(done)``: called on the main process once the folder is ready and
    the start step known (to write the run's config and reports). ``on_step(step, metrics)``:
    called after each step's bookkeeping (raising :class:`Interrupted` there stops the run).
    ``progress_keys``: the train metrics on the progress bar, smoothed exponentially with
    ``smoothing`` (0: the latest value); ``eval_keys``: the validation metrics on it.
    """

    def __init__(
        self,
        *,
        output_dir: Path,
        schedule: Schedule,
        step: Callable[[int], dict[str, float]],
        state: JobState,
        fingerprint: str,
        accelerator: Any,
        evaluate: Callable[[], dict[str, float]] | None = None,
        layout: CheckpointLayout = STEP_CHECKPOINTS,
        on_start: Callable[[int], None] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        progress: bool = True,
        description: str = "training",
        progress_keys: Sequence[str] = ("loss",),
        eval_keys: Sequence[str] = ("loss", "accuracy"),
        smoothing: float = 0.9,
    ) -> None:
        if schedule.total_steps < 1:
            raise ValueError("a job needs at least one step")
        self.output_dir = output_dir
        self.schedule = schedule
        self.step_fn = step
        self.state = state
        self.fingerprint = fingerprint
        self.accelerator = accelerator
        self.evaluate_fn = evaluate
        self.layout = layout
        self.on_start = on_start
        self.on_step = on_step
        self.progress = progress
        self.description = description
        self.progress_keys = tuple(progress_keys)
        self.eval_keys = tuple(eval_keys)
        self.smoothing = smoothing
        self._last_saved: int | None = None

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def _restore(self, resume: bool) -> tuple[int, int | None]:
        """(steps done, step resumed from or None); prepares the folder for a fresh run."""
        out = self.output_dir
        found = self.layout.latest(out) if resume else None
        if resume and found is None and self.schedule.resume_needs_checkpoint:
            raise CheckpointError(f"--resume: no checkpoint under {out}")
        self.accelerator.wait_for_everyone()  # every process has looked before the folder changes
        if found is not None:
            done = self.state.load_checkpoint(found[1], fingerprint=self.fingerprint)
            self._last_saved = done
            if self.is_main:
                logger.info("%s: resumed from step %d (%s)", self.description, done, found[1])
            return done, done
        if self.is_main:  # a fresh run: forget what an earlier run in this folder wrote
            if resume:
                logger.info(
                    "%s: no checkpoint under %s, starting from scratch", self.description, out
                )
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
            (out / METRICS_FILE).unlink(missing_ok=True)
        return 0, None

    def _evaluate(self, sink: MetricsSink | None, step: int) -> dict[str, float]:
        metrics = self.evaluate_fn() if self.evaluate_fn is not None else {}
        if sink is not None and metrics:
            sink.log(step, "eval", metrics)
        return metrics

    def _checkpoint(self, step: int) -> None:
        self.state.save_checkpoint(
            self.layout.path(self.output_dir, step), fingerprint=self.fingerprint
        )
        if self.is_main:
            self.layout.prune(self.output_dir, self.schedule.keep_checkpoints)
        self._last_saved = step

    def _start_metrics(self) -> dict[str, float]:
        """A resumed run's evaluation at step 0, read back from the metrics file."""
        return {
            k: v
            for r in read_metrics(self.output_dir / METRICS_FILE)
            if r.get("split") == "eval" and r.get("step") == 0
            for k, v in r.items()
            if k not in {"step", "split"}
        }

    def run(self, resume: bool = False) -> LoopResult:
        """Run to ``schedule.total_steps``; with ``resume`` continue from the newest checkpoint."""
        plan = self.schedule
        started = time.perf_counter()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        done, resumed_from = self._restore(resume)
        if self.is_main and self.on_start is not None:
            self.on_start(done)
        self.accelerator.wait_for_everyone()
        sink = MetricsSink(self.output_dir, resume_step=done) if self.is_main else None
        result = LoopResult(steps=done, epochs_started=0, seconds=0.0, examples=0)
        result.resumed_from = resumed_from
        try:
            if plan.evaluate_at_start:
                if done == 0:
                    result.eval_start = self._evaluate(sink, 0)
                elif sink is not None:
                    result.eval_start = self._start_metrics()
            latest_eval = dict(result.eval_start)
            bar = TrainingProgress(
                enabled=self.progress and self.is_main,
                total=plan.total_steps,
                done=done,
                description=self.description,
                keys=self.progress_keys,
                eval_keys=self.eval_keys,
                smoothing=self.smoothing,
            )
            with bar:
                while done < plan.total_steps:
                    step_started = time.perf_counter()
                    values = self.step_fn(done)
                    result.train_seconds += time.perf_counter() - step_started
                    done += 1
                    result.train = values
                    if sink is not None and done % plan.log_every == 0:
                        sink.log(done, "train", values)
                    last = done == plan.total_steps
                    if plan.eval_every and done % plan.eval_every == 0 and not last:
                        latest_eval = self._evaluate(sink, done) or latest_eval
                    if plan.checkpoint_every and done % plan.checkpoint_every == 0:
                        self._checkpoint(done)
                    bar.advance(values, latest_eval)
                    if self.on_step is not None:
                        self.on_step(done, values)
            if plan.final_checkpoint and self._last_saved != done:
                self._checkpoint(done)
            result.eval = self._evaluate(sink, done)
        finally:
            if sink is not None:
                sink.close()
        result.steps = done
        result.seconds = time.perf_counter() - started
        result.peak_rss_mb = peak_rss_mb()
        return result


class TrainingProgress:
    """A rich progress bar (on stderr) with live train metrics and the last validation ones.

    ``keys``: the train metrics shown, each smoothed exponentially with ``smoothing`` (0 shows
    the latest value); ``eval_keys``: the validation metrics worth a place on the bar.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        total: int,
        done: int,
        description: str,
        keys: Sequence[str] = ("loss",),
        eval_keys: Sequence[str] = ("loss", "accuracy"),
        smoothing: float = 0.9,
    ) -> None:
        self.enabled = enabled
        self.keys = tuple(keys)
        self.eval_keys = tuple(eval_keys)
        self.smoothing = smoothing
        self.running: dict[str, float] = {}
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

    def advance(self, values: dict[str, float], evaluation: dict[str, float]) -> None:
        """One more step: fold ``values`` into the shown train metrics, show ``evaluation``."""
        for key in self.keys:
            if key in values:
                old = self.running.get(key)
                new = values[key]
                self.running[key] = (
                    new if old is None else self.smoothing * old + (1 - self.smoothing) * new
                )
        if self._bar is None:
            return
        text = " ".join(f"{k} {v:.4f}" for k, v in self.running.items())
        if evaluation:
            text += " | val " + " ".join(
                f"{k} {v:.4f}" for k, v in evaluation.items() if k in self.eval_keys
            )
        self._bar.update(self._task, advance=1, metrics=text)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
