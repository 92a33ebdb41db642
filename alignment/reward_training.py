"""Training a pairwise reward model with the Bradley–Terry loss.

Recipe (InstructGPT / Stiennon et al.): loss ``-log σ(r(x, y_chosen) - r(x, y_rejected))``, one
epoch by default (reward models overfit quickly), all pairs of one prompt in one batch, and
validation log loss, pairwise accuracy and mean margin logged as training goes. After training
a bias is added so that reference responses average 0, and the model is saved with its
tokenizer, config and a model card.

:func:`reward_config_from_feedback` points the job at the preference pairs of a ``ragkit
serve`` feedback store (``ragkit align reward --from-feedback``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from alignment.checkpoint import job_fingerprint
from alignment.collate import Batch, collate_pairs
from alignment.config import RewardJobConfig, dump_config, validate_config
from alignment.data import PreferencePair
from alignment.errors import AlignmentError
from alignment.job_loop import LoopResult
from alignment.job_setup import (
    check_output_dir,
    check_training_data,
    count_parameters,
    load_pairs,
    prepare_trainable,
    start_run,
    write_json,
    write_run_files,
)
from alignment.losses import bradley_terry_loss, pairwise_metrics
from alignment.metrics import PLOT_FILE, plot_curves
from alignment.modelcard import model_card
from alignment.report import DataReport
from alignment.reward_model import RewardModel
from alignment.tokenization import TokenizedPair, tokenize_pairs
from alignment.training_loop import TrainingLoop, grouped_plan

logger = logging.getLogger(__name__)

MODEL_DIR = "model"


@dataclass
class RewardTrainingResult:
    """Where the model went and how it did."""

    output_dir: Path
    model_dir: Path
    loop: LoopResult
    validation: dict[str, float]
    normalisation_bias: float
    train_pairs: int
    validation_pairs: int
    reports: list[DataReport] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What ``ragkit align reward`` and the example script print at the end."""
        return {
            "model": str(self.model_dir),
            **self.loop.summary("pairs_per_second"),
            "train_pairs": self.train_pairs,
            "validation_pairs": self.validation_pairs,
            "validation": self.validation,
            "normalisation_bias": self.normalisation_bias,
        }


def split_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected halves of a pair batch's scores (see :func:`collate_pairs`)."""
    n = scores.shape[0] // 2
    return scores[:n], scores[n:]


def pair_step(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley–Terry loss of one pair batch, and its metrics."""
    scores = model(batch.input_ids, batch.attention_mask, batch.position_ids)
    chosen, rejected = split_scores(scores)
    return bradley_terry_loss(chosen, rejected), pairwise_metrics(chosen, rejected)


@torch.no_grad()
def evaluate_pairs(
    model: RewardModel, pairs: Sequence[TokenizedPair], batch_size: int = 16
) -> dict[str, float]:
    """Validation log loss, pairwise accuracy and mean margin over ``pairs`` (raw scores)."""
    if not pairs:
        return {}
    was_training = model.training
    model.eval()
    chosen_all, rejected_all = [], []
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    try:
        for start in range(0, len(order), batch_size):
            chunk = [pairs[i] for i in order[start : start + batch_size]]
            batch = collate_pairs(chunk, model.pad_token_id, model.padding_side).to(model.device)
            chosen, rejected = split_scores(
                model(batch.input_ids, batch.attention_mask, batch.position_ids)
            )
            chosen_all.append(chosen.cpu())
            rejected_all.append(rejected.cpu())
    finally:
        model.train(was_training)
    metrics = pairwise_metrics(torch.cat(chosen_all), torch.cat(rejected_all))
    metrics["pairs"] = float(len(pairs))
    return metrics


def reference_texts(
    pairs: Sequence[PreferencePair], which: str, limit: int
) -> tuple[list[str], list[str]]:
    """(prompts, responses) whose mean score the normalisation bias sets to 0."""
    prompts: list[str] = []
    responses: list[str] = []
    for pair in pairs:
        sides = [pair.chosen] if which == "chosen" else [pair.chosen, pair.rejected]
        for response in sides:
            if len(responses) < limit and response.strip():
                prompts.append(pair.prompt)
                responses.append(response)
    return prompts, responses


def build_reward_model(config: RewardJobConfig) -> RewardModel:
    """A fresh reward model for ``config`` (backbone loaded, pad token added, head drawn)."""
    return RewardModel.from_backbone(
        config.model.name_or_path,
        max_length=config.max_length,
        min_prompt_tokens=config.min_prompt_tokens,
        padding_side=config.padding_side,
        dtype=config.model.dtype,
        init_adapter=config.init_adapter,
    )


def train_reward_model(
    config: RewardJobConfig,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
    accelerator: object = None,
) -> RewardTrainingResult:
    """Run the reward-model job described by ``config``; see the module docstring."""
    out = start_run(config.output_dir, config.training.threads, config.training.seed)
    split, reports = load_pairs(config.data)
    check_training_data(split.train, reports, "pairs")  # before the model loads
    model = build_reward_model(config)
    model.backbone = prepare_trainable(model.backbone, config.model)
    trainable, total = count_parameters(model)
    logger.info("reward model: %d of %d parameters trainable", trainable, total)

    train, train_report = tokenize_pairs(split.train, model.encoder, source="train split")
    val, val_report = tokenize_pairs(split.validation, model.encoder, source="validation split")
    reports += [train_report, val_report]
    check_training_data(train, reports, "pairs")
    settings = config.training

    def collate(indices: list[int]) -> Batch:
        chunk = [train[i] for i in indices]
        return collate_pairs(chunk, model.pad_token_id, model.padding_side).to(model.device)

    def evaluate(module: nn.Module) -> dict[str, float]:
        assert isinstance(module, RewardModel)
        return evaluate_pairs(module, val, settings.eval_batch_size)

    loop = TrainingLoop(
        module=model,
        settings=settings,
        output_dir=out,
        plan=grouped_plan(train, settings),
        collate=collate,
        step_loss=pair_step,
        evaluate=evaluate if val else None,
        fingerprint=job_fingerprint(config),
        accelerator=accelerator,
        on_step=on_step,
        on_start=lambda _done: write_run_files(out, config, reports),
        progress_keys=("loss", "accuracy"),
        description="reward model",
    )
    result = loop.run(resume=resume)

    bias = 0.0
    if config.normalisation.reference != "none":
        reference_pairs = split.validation or split.train
        prompts, responses = reference_texts(
            reference_pairs, config.normalisation.reference, config.normalisation.max_samples
        )
        bias = model.fit_normalisation(prompts, responses, settings.eval_batch_size)
    validation = dict(result.eval)
    model_dir = out / MODEL_DIR
    if loop.accelerator.is_main_process:
        card = model_card(
            title="ragkit reward model",
            summary="Pairwise (Bradley–Terry) reward model: a transformer backbone with a scalar "
            "head read at the last real token. Load with `alignment.RewardModel.load(folder)`.",
            base_model=model.base_model,
            data=[r.summary() for r in reports],
            training={
                "finetune": config.model.finetune,
                "trainable parameters": trainable,
                "steps": result.steps,
                "train pairs": len(train),
                "seconds": round(result.seconds, 1),
                "normalisation bias": bias,
            },
            validation=validation or {"note": "no validation split"},
            config_yaml=dump_config(config),
        )
        model.save(model_dir, extra_files={"README.md": card})
        plot_curves(out / "metrics.jsonl", out / PLOT_FILE, ("loss", "accuracy", "margin"))
        write_json(
            out / "result.json",
            {
                **result.record("pairs_per_second"),
                "train_pairs": len(train),
                "validation_pairs": len(val),
                "validation": validation,
                "normalisation_bias": bias,
            },
        )
    return RewardTrainingResult(
        output_dir=out,
        model_dir=model_dir,
        loop=result,
        validation=validation,
        normalisation_bias=bias,
        train_pairs=len(train),
        validation_pairs=len(val),
        reports=reports,
    )


FEEDBACK_EXPORT_FILE = "feedback_pairs.jsonl"


def exported_pairs_data(path: Path) -> dict[str, Any]:
    """The ``data`` settings that read pairs exported from a feedback store at ``path``
    (prompt/chosen/rejected fields; no separate validation file). Limit, validation fraction
    and split seed are not set: a caller updating a reward job's ``data`` keeps its own."""
    return {
        "path": path,
        "format": "fields",
        "prompt_field": "prompt",
        "chosen_field": "chosen",
        "rejected_field": "rejected",
        "validation_path": None,
    }


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
        check_output_dir(config.output_dir)
        config.output_dir.mkdir(parents=True, exist_ok=True)
        count = export_preferences(db, out, style)
    if count == 0:
        with FeedbackStore(db, create=False) as store:
            counts = store.counts()
        raise AlignmentError(
            f"feedback store {db} has no usable preference pairs ({counts['answers']} answers, "
            f"{counts['votes']} votes, {counts['choices']} choices): a pair needs a choice "
            "between two answers, or one answer voted up and another voted down on the same "
            "question"
        )
    data = config.model_dump()
    data["data"].update(exported_pairs_data(out))
    return validate_config(RewardJobConfig, data, f"--from-feedback {db}"), count
