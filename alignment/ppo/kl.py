"""KL coefficient controllers: a fixed β, or the adaptive controller of Ziegler et al.

The adaptive rule (used by InstructGPT) moves β proportionally towards a target KL:
``β ← β · (1 + clip(KL / target − 1, −0.2, 0.2) · n / horizon)`` where ``n`` is the number of
rollouts behind the measured KL. The clip keeps one noisy batch from swinging β.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKLController:
    """β never moves."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        """Return β (unchanged)."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        """JSON-able state (for checkpoints)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """β that grows when the measured KL is above ``target`` and shrinks when below."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> float:
        """Apply one update after ``n_steps`` rollouts with mean per-sequence KL ``current_kl``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        """JSON-able state (for checkpoints)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self.value = float(state["value"])


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(
    kl_coef: float, adaptive: bool, target: float = 6.0, horizon: int = 10_000
) -> KLController:
    """The controller a config asks for."""
    if adaptive:
        return AdaptiveKLController(kl_coef, target, horizon)
    return FixedKLController(kl_coef)
