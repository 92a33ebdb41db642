"""Training checkpoints: trainable weights, optimizer, schedule, RNG and data position.

Everything is safetensors + JSON (no pickle: loading a checkpoint must not run code), written
into a temporary folder and renamed into place, so a run killed at any instant leaves only
complete checkpoints. What is saved is exactly what an uninterrupted run would still have in
memory, so ``--resume`` reproduces its final weights.

The pieces are public because two checkpoint formats use them: the SFT/reward loop's
(:func:`save_checkpoint`, ``checkpoints/step-N``) and the PPO trainer's
(:meth:`alignment.ppo.PPOTrainer.save_checkpoint`, ``checkpoints/update-N``). Both record the
job's fingerprint (:func:`job_fingerprint`) and refuse to resume another job's checkpoint
(:func:`check_fingerprint`); :class:`CheckpointLayout` names and lists them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.errors import CheckpointError
from ragkit.atomic import atomic_directory

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"

# Job settings that change how a run is watched, not what it computes: a resumed run may change
# them. Top-level keys of a job config, and keys of its ``training`` section (SFT, reward).
BOOKKEEPING = frozenset(
    {
        "output_dir",
        "progress",
        "log_every",
        "eval_every",
        "sample_every",
        "samples_per_log",
        "checkpoint_every",
        "keep_checkpoints",
        "threads",
        "device",
    }
)


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a job's checkpoints go: ``<output_dir>/checkpoints/<prefix>-<step>``, the step
    zero-padded to ``digits`` (``step-00000012`` for SFT and reward, ``update-000012`` for PPO).
    """

    prefix: str = "step"
    digits: int = 8

    def path(self, output_dir: Path, step: int) -> Path:
        """The folder of the checkpoint after ``step`` steps."""
        return output_dir / CHECKPOINT_DIR / f"{self.prefix}-{step:0{self.digits}d}"

    def existing(self, output_dir: Path) -> list[tuple[int, Path]]:
        """Complete checkpoints under ``output_dir`` as (step, folder), oldest first."""
        root = output_dir / CHECKPOINT_DIR
        if not root.is_dir():
            return []
        name = re.compile(rf"^{re.escape(self.prefix)}-(\d+)$")
        found = []
        for child in root.iterdir():
            match = name.match(child.name)
            if match and child.is_dir() and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest(self, output_dir: Path) -> tuple[int, Path] | None:
        """The newest complete checkpoint, or None."""
        found = self.existing(output_dir)
        return found[-1] if found else None

    def prune(self, output_dir: Path, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints."""
        for _, old in self.existing(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


STEP_CHECKPOINTS = CheckpointLayout()


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


def split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict`` as (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``state_dict`` :func:`split_optimizer_state` took apart."""
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


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU, and every CUDA device)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{i}"] = s
    return states


def restore_rng(states: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned (CUDA only on as many devices as were saved)."""
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete SFT/reward checkpoints under ``output_dir``, oldest first."""
    return STEP_CHECKPOINTS.existing(output_dir)


def read_checkpoint_state(path: Path, what: str = "checkpoint") -> dict[str, Any]:
    """The ``state.json`` of the checkpoint folder ``path`` (CheckpointError if unreadable)."""
    try:
        meta = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"unreadable {what} {path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"unreadable {what} {path}: {STATE_FILE} is not an object")
    return meta


def check_fingerprint(meta: dict[str, Any], fingerprint: str, path: Path) -> None:
    """Refuse a checkpoint whose recorded job fingerprint is not ``fingerprint``."""
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was written by a job with other model/data/training settings"
        )


def save_checkpoint(
    directory: Path,
    position: LoopPosition,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> Path:
    """Write the checkpoint folder ``directory`` atomically (the caller prunes old ones)."""
    weights = trainable_state(model)
    opt_tensors, opt_meta = split_optimizer_state(optimizer.state_dict())
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
        save_file(rng_state(), str(tmp / "rng.safetensors"))
        (tmp / STATE_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    return atomic_directory(directory, fill)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> LoopPosition:
    """Restore everything :func:`save_checkpoint` wrote; refuse a checkpoint of another job."""
    meta = read_checkpoint_state(path)
    if meta.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format_version')}, expected {CHECKPOINT_FORMAT}"
        )
    check_fingerprint(meta, fingerprint, path)
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    optimizer.load_state_dict(
        join_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
    )
    scheduler.load_state_dict(meta["scheduler"])
    restore_rng(load_file(str(path / "rng.safetensors")))
    return LoopPosition(**meta["position"])


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete SFT/reward checkpoint, or None."""
    found = STEP_CHECKPOINTS.latest(output_dir)
    return found[1] if found else None


def config_fingerprint(settings: dict[str, Any], ignore: Iterable[str] = ()) -> str:
    """A stable digest of the settings that decide the training trajectory."""
    kept = {k: v for k, v in settings.items() if k not in set(ignore)}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def job_fingerprint(config: BaseModel | dict[str, Any]) -> str:
    """Digest of a job config's trajectory-deciding settings: the :data:`BOOKKEEPING` keys are
    left out at the top level and in the ``training`` section (a config or its JSON dump)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    training = data.get("training")
    if isinstance(training, dict):
        data["training"] = {k: v for k, v in training.items() if k not in BOOKKEEPING}
    return config_fingerprint(data, ignore=BOOKKEEPING)
