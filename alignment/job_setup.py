"""What the training jobs (SFT, reward model, PPO) do before their loop: read the configured
data and split it, choose the trainable weights, limit torch's threads, and write the run
folder's ``config.yaml``, ``data_report.json`` and ``result.json``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from alignment.backbone import apply_lora, disable_dropout
from alignment.config import (
    DemonstrationDataSettings,
    ModelSettings,
    PreferenceDataSettings,
    dump_config,
)
from alignment.data import (
    Demonstration,
    Loaded,
    PreferencePair,
    R,
    Split,
    demonstrations_from_pairs,
    read_demonstrations_jsonl,
    read_preference_jsonl,
    train_validation_split,
)
from alignment.errors import AlignmentError, ConfigError, DataFormatError
from alignment.report import DataReport
from ragkit.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def _read_pairs(
    settings: PreferenceDataSettings, path: Path, limit: int | None
) -> Loaded[PreferencePair]:
    return read_preference_jsonl(
        path,
        format=settings.format,
        prompt_field=settings.prompt_field,
        chosen_field=settings.chosen_field,
        rejected_field=settings.rejected_field,
        limit=limit,
    )


def _load_split(
    read: Callable[[Path, int | None], Loaded[R]],
    settings: PreferenceDataSettings | DemonstrationDataSettings,
) -> tuple[Split[R], list[DataReport]]:
    """Read ``settings.path`` (and ``validation_path``, or split off ``validation_fraction``)."""
    loaded = read(settings.path, settings.limit)
    reports = [loaded.report]
    if settings.validation_path is not None:
        val = read(settings.validation_path, None)
        reports.append(val.report)
        return Split(loaded.records, val.records), reports
    split = train_validation_split(
        loaded.records, validation_fraction=settings.validation_fraction, seed=settings.split_seed
    )
    return split, reports


def load_pairs(settings: PreferenceDataSettings) -> tuple[Split[PreferencePair], list[DataReport]]:
    """Read and split the configured preference pairs; the reports say what was dropped."""
    return _load_split(lambda path, limit: _read_pairs(settings, path, limit), settings)


def _read_demos(
    settings: DemonstrationDataSettings, path: Path, limit: int | None
) -> Loaded[Demonstration]:
    if settings.format == "jsonl":
        return read_demonstrations_jsonl(
            path,
            prompt_field=settings.prompt_field,
            response_field=settings.response_field,
            messages_field=settings.messages_field,
            limit=limit,
        )
    pairs = read_preference_jsonl(
        path,
        format="hh" if settings.format == "hh_chosen" else "fields",
        prompt_field=settings.prompt_field,
        chosen_field=settings.chosen_field,
        rejected_field=settings.rejected_field,
        limit=limit,
    )
    return Loaded(demonstrations_from_pairs(pairs.records), pairs.report)


def load_demonstrations(
    settings: DemonstrationDataSettings,
) -> tuple[Split[Demonstration], list[DataReport]]:
    """Read and split the configured demonstrations."""
    return _load_split(lambda path, limit: _read_demos(settings, path, limit), settings)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (the longest ``nn.ModuleList`` in the model)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise AlignmentError("cannot find the transformer blocks to freeze")
    return max(lists, key=len)


def freeze_bottom(model: nn.Module, n_layers: int) -> None:
    """Freeze the input embeddings and the first ``n_layers`` blocks (cheaper backward pass)."""
    if n_layers <= 0:
        return
    blocks = transformer_blocks(model)
    if n_layers > len(blocks):
        raise AlignmentError(f"freeze_layers={n_layers} but the model has {len(blocks)} blocks")
    embeddings = getattr(model, "get_input_embeddings", None)
    if callable(embeddings):
        for p in embeddings().parameters():
            p.requires_grad_(False)
    for block in list(blocks)[:n_layers]:
        for p in block.parameters():
            p.requires_grad_(False)


def prepare_trainable(model: nn.Module, settings: ModelSettings) -> nn.Module:
    """Apply the configured fine-tuning mode; returns the (possibly LoRA-wrapped) model."""
    if settings.finetune == "lora":
        lora = settings.lora
        return apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    freeze_bottom(model, settings.freeze_layers)
    return model


def load_trainable_adapter(model: nn.Module, adapter: str | Path, setting: str) -> nn.Module:
    """``model`` wrapped with an existing LoRA adapter whose weights train on.

    ``adapter``: a packaged name (``grounded-qa-gemma``) or a peft folder. Continuing an adapter
    keeps one LoRA of its own rank, which the generator loads like any other; merging it and
    adding a fresh LoRA would give a model that no single adapter of the base describes.
    ``setting`` names the config key in errors (``policy_adapter``, ``init_adapter``).
    """
    from peft import PeftModel

    from ragkit.errors import RagkitError
    from ragkit.generation.adapters import resolve_adapter

    try:
        folder = resolve_adapter(adapter)
    except RagkitError as exc:
        raise AlignmentError(f"{setting}: {exc}") from None
    try:
        wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AlignmentError(f"{setting} {adapter} does not fit the model: {first}") from None
    disable_dropout(wrapped)  # the adapter's own LoRA dropout modules
    return wrapped


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def check_output_dir(output_dir: Path) -> None:
    """A run folder that is an existing file (or under one) is a one-line error, not a
    FileExistsError from ``mkdir``."""
    for path in (output_dir, *output_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"output_dir {output_dir}: {path} is a file, not a folder")
            return


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (other jobs may share the machine)."""
    if threads is not None:
        torch.set_num_threads(threads)


def start_run(output_dir: Path, threads: int | None, seed: int | None = None) -> Path:
    """A job's first lines: limit the threads, seed torch (when ``seed`` is given), create the
    run folder; returns the folder."""
    check_output_dir(output_dir)
    set_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def check_training_data(train: Sized, reports: list[DataReport], what: str) -> None:
    """Log the data reports; refuse a job whose training split kept no ``what``.

    Called on the data as read (before the model is loaded, so an empty or all-malformed file
    fails at once) and again on the tokenised split; the message carries the report that says
    where the records went.
    """
    for report in reports:
        logger.info("%s", report.summary())
    if not len(train):
        where = "; ".join(r.summary() for r in reports if r.total) or "no records read"
        raise DataFormatError(f"no usable training {what}: {where}")


def write_json(path: Path, data: Any) -> None:
    """Atomic, indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_run_files(output_dir: Path, config: BaseModel, reports: list[DataReport]) -> None:
    """``config.yaml`` and ``data_report.json`` at the top of a run folder."""
    atomic_write_text(output_dir / "config.yaml", dump_config(config))
    write_json(output_dir / "data_report.json", [r.model_dump() for r in reports])
