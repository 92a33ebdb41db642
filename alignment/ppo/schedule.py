"""The learning-rate schedule, counted in optimiser steps.

PPO takes ``ppo_epochs × mini_batches`` optimiser steps per update; the schedule advances once
per optimiser step (not per update), so a warm-up of N steps means N parameter updates whatever
the PPO shape. The multiplier of step ``s`` (0-based, the step about to be taken) is

* warm-up (``s < warmup``): ``(s + 1) / warmup`` — the last warm-up step runs at the full rate;
* ``constant``: 1 afterwards;
* ``linear``: ``(total − s) / (total − warmup)`` afterwards, so the last step of the run
  (``s = total − 1``) still moves the weights and the rate would reach 0 one step later.

The scheduler's state (steps taken) is saved in PPO checkpoints, so a resumed run continues the
same trajectory.
"""

from __future__ import annotations

from typing import Literal

import torch

Schedule = Literal["constant", "linear"]


def lr_factor(step: int, schedule: Schedule, warmup: int, total: int | None) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if total is None:
        raise ValueError("a linear schedule needs the total number of optimiser steps")
    return max(0.0, (total - step) / max(1, total - warmup))


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: Schedule, warmup: int, total: int | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor`; call ``step()`` after every optimiser step."""
    if schedule == "linear" and total is None:
        raise ValueError("a linear schedule needs the total number of optimiser steps")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, warmup, total)
    )
