"""Where and in which precision the model runs.

Policy: a CUDA GPU when one is visible, in bf16 (half the memory of fp32 and the same exponent
range, so no overflow in attention logits), falling back to fp16 on GPUs without bf16 support
(pre-Ampere); fp32 on CPU, where half precision is slower and less accurate. Both are
overridable. torch is imported inside the functions so importing ragkit stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragkit.errors import RagkitError

if TYPE_CHECKING:
    import torch

_DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


class DeviceError(RagkitError):
    """A requested device or dtype is unknown or unavailable on this machine."""


def select_device(requested: str | None = None) -> str:
    """The torch device string to use: ``requested`` checked, or CUDA when available, else CPU.

    Apple's MPS is used only when asked for explicitly: its half-precision generation still
    differs too often from CPU results to make it a silent default.
    """
    import torch

    name = (requested or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(
            f"unknown device {requested!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {requested!r} requested but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {requested!r} requested but MPS is not available")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {requested!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    return str(device)


def select_dtype(device: str, requested: str | None = None) -> torch.dtype:
    """The parameter dtype for ``device``: ``requested`` if given, else the policy above."""
    import torch

    name = (requested or "auto").strip().lower()
    if name != "auto":
        canonical = _DTYPE_NAMES.get(name)
        if canonical is None:
            raise DeviceError(
                f"unknown dtype {requested!r}: use 'auto', 'float32', 'bfloat16' or 'float16'"
            )
        dtype: torch.dtype = getattr(torch, canonical)
        return dtype
    kind = torch.device(device).type
    if kind == "cuda":
        index = torch.device(device).index
        bf16 = torch.cuda.is_bf16_supported() if index is None else _bf16_on(index)
        return torch.bfloat16 if bf16 else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def _bf16_on(index: int) -> bool:
    """bf16 support of a specific GPU (``is_bf16_supported`` only looks at the current one)."""
    import torch

    major, _minor = torch.cuda.get_device_capability(index)
    return bool(major >= 8)
