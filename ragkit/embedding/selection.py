"""Choosing the embedding backend: the fastest one whose vectors stay close to fp32.

The quality guard is the same everywhere: mean cosine similarity to the fp32 torch vectors of
at least :data:`MIN_MEAN_COSINE` on probe texts. Candidates that pass are timed on the same
texts (best of two runs, after a warm-up) and the fastest wins, but only if it beats fp32 by
:data:`MIN_SPEEDUP`; a marginal gain is not worth vectors that differ from the reference.

Measuring takes ~10-30 s the first time (export, quantisation, timing), so the choice is cached
per model, device, CPU and library versions. Once an index is built, its manifest records the
backend and queries use that one: the choice is never re-made for an existing index.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragkit.atomic import atomic_write_text
from ragkit.embedding.backends.base import EmbeddingBackend, Vectors
from ragkit.embedding.backends.torch_backend import cpu_has_bf16

SELECTION_FORMAT = 1
MIN_MEAN_COSINE = 0.99
MIN_SPEEDUP = 1.10


class BackendMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    texts_per_second: float | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None
    passed: bool = False
    error: str | None = None


class BackendChoice(BaseModel):
    """Why a backend was chosen, kept next to the cache so ``ragkit info`` can show it."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = SELECTION_FORMAT
    chosen: str
    device: str
    probe_texts: int
    measurements: list[BackendMeasurement] = Field(default_factory=list)


def candidate_backends(device: str) -> list[str]:
    """What may be faster than fp32 torch on this device (fp16 is already torch's CUDA path)."""
    if device.startswith("cuda"):
        return ["torch"]
    names = ["torch", "onnx-int8"]
    if cpu_has_bf16():
        names.insert(1, "torch-bf16")
    return names


def cosine_to(reference: Vectors, vectors: Vectors) -> tuple[float, float]:
    """(mean, min) row-wise cosine of two sets of unit vectors."""
    cosines = np.sum(reference * vectors, axis=1)
    return float(cosines.mean()), float(cosines.min())


def _machine_key() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:12]


def _versions() -> str:
    import onnxruntime
    import torch

    return f"torch={torch.__version__}|ort={onnxruntime.__version__}"


def choice_path(model_key: str, device: str) -> Path:
    from ragkit.generation.checkpoints import cache_dir

    key = hashlib.sha256(
        f"{model_key}|{device}|{_machine_key()}|{_versions()}|{SELECTION_FORMAT}".encode()
    ).hexdigest()[:16]
    return cache_dir() / "embedders" / f"backend-choice-{key}.json"


def cached_choice(model_key: str, device: str) -> BackendChoice | None:
    try:
        raw = json.loads(choice_path(model_key, device).read_text(encoding="utf-8"))
        return BackendChoice.model_validate(raw)
    except (OSError, ValueError):
        return None


def _throughput(backend: EmbeddingBackend, texts: Sequence[str], batch_size: int) -> float:
    backend.encode(texts[: max(2, batch_size // 4)], batch_size)  # warm-up: allocations, caches
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        backend.encode(texts, batch_size)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def measure_backends(
    reference: EmbeddingBackend,
    build: Callable[[str], EmbeddingBackend],
    names: Sequence[str],
    texts: Sequence[str],
    batch_size: int,
    device: str,
) -> tuple[BackendChoice, dict[str, EmbeddingBackend]]:
    """Guard and time each candidate against ``reference`` (fp32 torch) on ``texts``."""
    expected = reference.encode(texts, batch_size)
    built: dict[str, EmbeddingBackend] = {"torch": reference}
    measurements: list[BackendMeasurement] = []
    for name in names:
        try:
            backend = reference if name == "torch" else build(name)
            vectors = expected if name == "torch" else backend.encode(texts, batch_size)
            mean, low = cosine_to(expected, vectors)
            passed = mean >= MIN_MEAN_COSINE
            speed = _throughput(backend, texts, batch_size) if passed else None
        except Exception as exc:
            first = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            measurements.append(BackendMeasurement(name=name, error=first))
            continue
        built[name] = backend
        measurements.append(
            BackendMeasurement(
                name=name, texts_per_second=speed, mean_cosine=mean, min_cosine=low, passed=passed
            )
        )
    base = next((m.texts_per_second for m in measurements if m.name == "torch"), None) or 0.0
    chosen = "torch"
    best = base * MIN_SPEEDUP
    for m in measurements:
        if m.passed and m.texts_per_second is not None and m.texts_per_second > best:
            chosen, best = m.name, m.texts_per_second
    choice = BackendChoice(
        chosen=chosen, device=device, probe_texts=len(texts), measurements=measurements
    )
    return choice, built


def save_choice(model_key: str, device: str, choice: BackendChoice) -> None:
    atomic_write_text(choice_path(model_key, device), choice.model_dump_json(indent=2) + "\n")
