"""An answerability probe: a linear read-out of the generator's own hidden state.

Why a probe and not the model's words: the grounded-QA generator writes "not in the passages"
about as often for answerable questions as for unanswerable ones on text it was not trained on
(its likelihoods separate the two at chance, benchmarks/abstention_signal.py), yet a model's
hidden state at the end of the prompt can encode more than its next-token distribution shows.
A logistic regression on that one vector costs nothing at answer time: the state is computed
by the prompt's forward pass anyway.

A probe belongs to one adapter (it reads that adapter's hidden states), so it is stored in the
adapter's folder as ``answerability_probe.safetensors``: ``mean``, ``scale``, ``weight`` (one
value per hidden unit) and ``bias``; the metadata names the hidden-state index it reads
(``layer`` = n: the output of decoder layer n, counting from 1; the last one normalised, as
transformers' ``hidden_states[n]``). safetensors, not
pickle: loading a probe runs no code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.errors import RagkitError

PROBE_FILE = "answerability_probe.safetensors"
PROBE_FORMAT = "ragkit-answerability-probe/1"


class ProbeError(RagkitError):
    """An answerability probe file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class AnswerabilityProbe:
    """P(the passages hold the answer) = sigmoid(weight · (state − mean) / scale + bias)."""

    layer: int
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weight: tuple[float, ...]
    bias: float

    def __post_init__(self) -> None:
        sizes = {len(self.mean), len(self.scale), len(self.weight)}
        if len(sizes) != 1 or not self.weight:
            raise ProbeError(
                f"answerability probe vectors must have one equal, non-zero length, not {sizes}"
            )
        if self.layer < 1:
            raise ProbeError(f"answerability probe layer must be >= 1, not {self.layer}")

    @property
    def hidden_size(self) -> int:
        return len(self.weight)

    def logit(self, state: Sequence[float]) -> float:
        if len(state) != self.hidden_size:
            raise ProbeError(
                f"the answerability probe reads {self.hidden_size} hidden units, "
                f"the model gave {len(state)}"
            )
        return self.bias + sum(
            w * (x - m) / s
            for w, x, m, s in zip(self.weight, state, self.mean, self.scale, strict=True)
        )

    def probability(self, state: Sequence[float]) -> float:
        """P(answerable) of one hidden-state vector."""
        z = self.logit(state)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the probe into ``folder`` (atomically: a reader sees the old or the new one)."""
        import numpy as np
        from safetensors.numpy import save

        from ragkit.atomic import atomic_write_bytes

        tensors = {
            "mean": np.asarray(self.mean, dtype=np.float32),
            "scale": np.asarray(self.scale, dtype=np.float32),
            "weight": np.asarray(self.weight, dtype=np.float32),
            "bias": np.asarray([self.bias], dtype=np.float32),
        }
        target = Path(folder) / PROBE_FILE
        atomic_write_bytes(
            target, save(tensors, metadata={"format": PROBE_FORMAT, "layer": str(self.layer)})
        )
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AnswerabilityProbe | None:
        """The probe stored in ``folder``, or None when the folder has none."""
        path = Path(folder) / PROBE_FILE
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types
            raise ProbeError(f"cannot read the answerability probe {path}: {exc}") from None
        if meta.get("format") != PROBE_FORMAT:
            raise ProbeError(f"{path} is not a {PROBE_FORMAT} file (format {meta.get('format')!r})")
        missing = {"mean", "scale", "weight", "bias"} - set(tensors)
        if missing:
            raise ProbeError(f"{path} lacks {', '.join(sorted(missing))}")
        try:
            layer = int(meta.get("layer", ""))
        except ValueError:
            raise ProbeError(f"{path}: layer {meta.get('layer')!r} is not an integer") from None
        return cls(
            layer=layer,
            mean=tuple(float(v) for v in tensors["mean"].ravel()),
            scale=tuple(float(v) for v in tensors["scale"].ravel()),
            weight=tuple(float(v) for v in tensors["weight"].ravel()),
            bias=float(tensors["bias"].ravel()[0]),
        )


def hidden_state_module(model: Any, layer: int) -> Any:
    """The module whose output is hidden state ``layer`` (transformers' ``hidden_states`` index).

    Index ``n`` is the output of decoder layer ``n`` (counting from 1); the last index is the
    decoder's final normalisation, as transformers reports it.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ProbeError(f"{type(model).__name__} has no decoder layers to read a probe from")
    if not 0 < layer <= len(layers):
        raise ProbeError(
            f"the answerability probe reads hidden state {layer}; this model has "
            f"{len(layers)} decoder layers (usable: 1 to {len(layers)})"
        )
    if layer == len(layers):
        return decoder.norm
    return layers[layer - 1]
