"""Training checkpoints: trainable weights, optimizer, schedule, RNG and data position.

Everything is safetensors + JSON (no pickle: loading a checkpoint must not run code), written
into a temporary folder and renamed into place, so a run killed at any instant leaves only
complete checkpoints. What is saved is exactly what an uninterrupted run would still have in
memory, so ``--resume`` reproduces its final weights.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.errors import CheckpointError
from ragkit.atomic import atomic_directory

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class LoopPosition:
    """Where training stands: optimizer steps done, current epoch, batches consumed in it."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (contiguous CPU copies)."""
    return {
        name: p.detach().to("cpu").contiguous().clone()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable parameters into ``model``; every trainable name must be present."""
    params = dict(model.named_parameters())
    wanted = {name for name, p in params.items() if p.requires_grad}
    missing = sorted(wanted - tensors.keys())
    if missing or tensors.keys() - wanted:
        name = missing[0] if missing else sorted(tensors.keys() - wanted)[0]
        raise CheckpointError(f"checkpoint does not match the model (parameter {name!r})")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split("/", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _rng_state() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{i}"] = s
    return states


def _restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = output_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir() and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save_checkpoint(
    output_dir: Path,
    position: LoopPosition,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
    keep: int,
) -> Path:
    """Write ``checkpoints/step-N`` atomically, then delete all but the newest ``keep``."""
    weights = trainable_state(model)
    opt_tensors, opt_meta = _split_optimizer_state(optimizer.state_dict())
    meta = {
        "format_version": CHECKPOINT_FORMAT,
        "position": asdict(position),
        "fingerprint": fingerprint,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
    }

    def fill(tmp: Path) -> None:
        save_file(weights, str(tmp / "trainable.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(_rng_state(), str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    target = output_dir / CHECKPOINT_DIR / f"step-{position.step:08d}"
    atomic_directory(target, fill)
    for _, old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> LoopPosition:
    """Restore everything :func:`save_checkpoint` wrote; refuse a checkpoint of another job."""
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"unreadable checkpoint {path}: {exc}") from exc
    if meta.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format_version')}, expected {CHECKPOINT_FORMAT}"
        )
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was written by a job with other model/data/training settings"
        )
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    optimizer.load_state_dict(
        _join_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
    )
    scheduler.load_state_dict(meta["scheduler"])
    _restore_rng(load_file(str(path / "rng.safetensors")))
    return LoopPosition(**meta["position"])


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(output_dir)
    return found[-1][1] if found else None


def config_fingerprint(settings: dict[str, Any], ignore: Iterable[str] = ()) -> str:
    """A stable digest of the settings that decide the training trajectory."""
    import hashlib

    kept = {k: v for k, v in settings.items() if k not in set(ignore)}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
