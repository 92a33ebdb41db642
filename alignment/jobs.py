"""Pieces both jobs share: reading the configured data, choosing trainable weights, bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel
from torch import nn

from alignment.backbone import apply_lora
from alignment.checkpoint import config_fingerprint
from alignment.config import (
    DemonstrationDataSettings,
    ModelSettings,
    PreferenceDataSettings,
    RewardJobConfig,
    dump_config,
    validate_config,
)
from alignment.data import (
    Demonstration,
    Loaded,
    PreferencePair,
    Split,
    demonstrations_from_pairs,
    read_demonstrations_jsonl,
    read_preference_jsonl,
    train_validation_split,
)
from alignment.errors import AlignmentError
from alignment.report import DataReport
from ragkit.atomic import atomic_write_text

# Settings that change how a run is watched, not what it computes: a resumed run may change them.
BOOKKEEPING = {
    "progress",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "threads",
}


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


def load_pairs(settings: PreferenceDataSettings) -> tuple[Split[PreferencePair], list[DataReport]]:
    """Read and split the configured preference pairs; the reports say what was dropped."""
    loaded = _read_pairs(settings, settings.path, settings.limit)
    reports = [loaded.report]
    if settings.validation_path is not None:
        val = _read_pairs(settings, settings.validation_path, None)
        reports.append(val.report)
        return Split(loaded.records, val.records), reports
    split = train_validation_split(
        loaded.records, validation_fraction=settings.validation_fraction, seed=settings.split_seed
    )
    return split, reports


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
    loaded = _read_demos(settings, settings.path, settings.limit)
    reports = [loaded.report]
    if settings.validation_path is not None:
        val = _read_demos(settings, settings.validation_path, None)
        reports.append(val.report)
        return Split(loaded.records, val.records), reports
    split = train_validation_split(
        loaded.records, validation_fraction=settings.validation_fraction, seed=settings.split_seed
    )
    return split, reports


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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def job_fingerprint(config: BaseModel) -> str:
    """Digest of the settings that decide the trajectory (output folder and bookkeeping excluded)."""
    data = config.model_dump(mode="json")
    data.pop("output_dir", None)
    training = {k: v for k, v in data.get("training", {}).items() if k not in BOOKKEEPING}
    data["training"] = training
    return config_fingerprint(data)


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (other jobs may share the machine)."""
    if threads is not None:
        torch.set_num_threads(threads)


def write_json(path: Path, data: Any) -> None:
    """Atomic, indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_run_files(output_dir: Path, config: BaseModel, reports: list[DataReport]) -> None:
    """``config.yaml`` and ``data_report.json`` at the top of a run folder."""
    atomic_write_text(output_dir / "config.yaml", dump_config(config))
    write_json(output_dir / "data_report.json", [r.model_dump() for r in reports])


FEEDBACK_EXPORT_FILE = "feedback_pairs.jsonl"


def reward_config_from_feedback(
    config: RewardJobConfig,
    db: str | Path,
    *,
    prompt_style: str = "passages",
    resume: bool = False,
) -> tuple[RewardJobConfig, int]:
    """Point a reward job at the preference pairs of a ``ragkit serve`` feedback store.

    Why an export file rather than reading SQLite in the job: the store's votes and choices
    become pairs through one piece of code (:func:`ragkit.feedback.export_preferences`, the one
    behind ``ragkit feedback export``), and the job keeps a single data path, with its reader,
    data report, split by prompt and checkpoint fingerprint unchanged. The export goes to
    ``<output_dir>/feedback_pairs.jsonl`` (kept next to ``config.yaml``, so the run folder says
    exactly what it trained on); with ``resume`` an existing export is reused, because the
    store may have grown since the run started and a resume must replay the same data.

    ``prompt_style`` is the export's: ``passages`` (the passages the answer was grounded on,
    then the question) or ``question``. Returns the updated config (data path, ``fields``
    format and field names replaced; limit, validation fraction and split seed kept;
    ``validation_path`` cleared) and the pair count. Raises :class:`AlignmentError` when the
    store holds no usable pair (or the store is missing: ``FeedbackError``).
    """
    from ragkit.feedback import FeedbackStore, export_preferences

    if prompt_style not in ("passages", "question"):
        raise AlignmentError(
            f"unknown feedback prompt style {prompt_style!r} (use passages or question)"
        )
    style: Literal["passages", "question"] = (
        "question" if prompt_style == "question" else "passages"
    )
    out = config.output_dir / FEEDBACK_EXPORT_FILE
    if resume and out.is_file():
        with out.open(encoding="utf-8") as fh:
            count = sum(1 for line in fh if line.strip())
    else:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        count = export_preferences(db, out, style)
    if count == 0:
        with FeedbackStore(db) as store:
            counts = store.counts()
        raise AlignmentError(
            f"feedback store {db} has no usable preference pairs ({counts['answers']} answers, "
            f"{counts['votes']} votes, {counts['choices']} choices): a pair needs a choice "
            "between two answers, or one answer voted up and another voted down on the same "
            "question"
        )
    data = config.model_dump()
    data["data"].update(
        path=out,
        format="fields",
        prompt_field="prompt",
        chosen_field="chosen",
        rejected_field="rejected",
        validation_path=None,
    )
    return validate_config(RewardJobConfig, data, f"--from-feedback {db}"), count
