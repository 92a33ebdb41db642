"""Supervised fine-tuning on demonstrations, with the loss on response tokens only.

Why not TRL's ``SFTTrainer``: on TRL 1.16 its truncation cuts the end of a sequence (the
response) rather than the start of the prompt, and its Trainer checkpoints are neither atomic
nor pickle-free; our shared loop (:mod:`alignment.training_loop` on :mod:`alignment.job_loop`)
gives both, and the same resume guarantee as the reward job. What TRL calls
``completion_only_loss`` is done here by labelling prompt and pad positions -100; as a bonus
the vocabulary-sized LM head is applied only at the response positions, which on CPU is most
of the saving for long prompts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignment.backbone import (
    disable_dropout,
    load_pretrained,
    load_tokenizer,
    merged_copy,
    resolve_backbone,
)
from alignment.checkpoint import job_fingerprint
from alignment.collate import IGNORE_INDEX, Batch, collate_demonstrations
from alignment.config import SFTJobConfig, dump_config
from alignment.job_loop import LoopResult
from alignment.job_setup import (
    check_training_data,
    count_parameters,
    load_demonstrations,
    load_trainable_adapter,
    prepare_trainable,
    start_run,
    write_json,
    write_run_files,
)
from alignment.losses import response_token_loss
from alignment.metrics import PLOT_FILE, plot_curves
from alignment.modelcard import model_card
from alignment.report import DataReport
from alignment.tokenization import (
    PromptResponseEncoder,
    TokenizedDemonstration,
    ensure_pad_token,
    tokenize_demonstrations,
)
from alignment.training_loop import TrainingLoop, grouped_plan
from ragkit.atomic import atomic_directory

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"  # LoRA runs: the adapter alone, besides the merged model
SFT_INFO_FILE = "alignment_sft.json"
SFT_FORMAT = 1


class ResponseOnlyLM(nn.Module):
    """Wraps a causal LM so that ``forward`` returns (summed response loss, response tokens).

    Labels are the input ids at response positions and -100 elsewhere; the LM head runs only on
    the hidden states that predict a response token.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def _base(self) -> Any:
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of cross-entropies over response tokens, and how many there are."""
        base = self._base()
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
        if decoder is not None and decoder is not base:
            hidden = decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            ).last_hidden_state
            logits = base.get_output_embeddings()(hidden[:, :-1][keep])
        else:  # pragma: no cover - models without a separable decoder
            out = base(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            )
            logits = out.logits[:, :-1][keep]
        loss = response_token_loss(logits, targets[keep], reduction="sum")
        return loss, keep.sum()


def sft_step(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean response-token loss of one batch."""
    assert batch.labels is not None
    total, count = model(batch.input_ids, batch.attention_mask, batch.position_ids, batch.labels)
    loss = total / count.clamp(min=1)
    return loss, {"loss": float(loss.detach()), "tokens": float(count)}


@torch.no_grad()
def evaluate_demonstrations(
    model: nn.Module,
    demos: Sequence[TokenizedDemonstration],
    pad_token_id: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Token-weighted mean response loss (and perplexity) over ``demos``."""
    if not demos:
        return {}
    device = next(model.parameters()).device
    order = sorted(range(len(demos)), key=lambda i: demos[i].length)
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate_demonstrations(
            [demos[i] for i in order[start : start + batch_size]], pad_token_id
        )
        batch = batch.to(device)
        assert batch.labels is not None
        loss_sum, n = model(batch.input_ids, batch.attention_mask, batch.position_ids, batch.labels)
        total += float(loss_sum)
        count += int(n)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": float(count)}


@dataclass
class SFTResult:
    """Where the fine-tuned model went and how it did."""

    output_dir: Path
    model_dir: Path
    loop: LoopResult
    validation: dict[str, float]
    train_examples: int
    validation_examples: int
    reports: list[DataReport] = field(default_factory=list)
    adapter_dir: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What ``ragkit align sft`` and the example script print at the end."""
        return {
            "model": str(self.model_dir),
            **({"adapter": str(self.adapter_dir)} if self.adapter_dir else {}),
            **self.loop.summary("examples_per_second"),
            "train_examples": self.train_examples,
            "validation_examples": self.validation_examples,
            "validation": self.validation,
        }


def save_causal_lm(
    model: nn.Module,
    tokenizer: Any,
    directory: Path,
    info: dict[str, Any],
    card: str,
    info_file: str = SFT_INFO_FILE,
) -> Path:
    """Save a plain Hugging Face model folder (LoRA merged, safetensors) atomically, with
    ``info`` as JSON in ``info_file`` and ``card`` as its ``README.md``."""
    plain = merged_copy(model)

    def fill(tmp: Path) -> None:
        plain.save_pretrained(str(tmp))  # type: ignore[operator]
        tokenizer.save_pretrained(str(tmp))
        (tmp / info_file).write_text(json.dumps(info, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")

    return atomic_directory(directory, fill)


def save_lora_adapter(model: nn.Module, directory: Path, base_name: str, card: str) -> Path | None:
    """Save the LoRA adapter alone (peft format, safetensors), atomically; None if not LoRA.

    The embeddings are left out on purpose: training resized them for a dedicated pad token
    that inference never needs, so the adapter applies to the unmodified base model (which is
    how :class:`ragkit.generation.Generator` loads it, ``adapter=``). The base model recorded
    is the job's ``model.name_or_path`` (or the packaged model's name), not a cache path.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None

    def fill(tmp: Path) -> None:
        model.save_pretrained(str(tmp), save_embedding_layers=False, safe_serialization=True)
        config_path = tmp / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_name
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")

    return atomic_directory(directory, fill)


def train_sft(
    config: SFTJobConfig,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
    accelerator: object = None,
) -> SFTResult:
    """Run the SFT job described by ``config``."""
    from transformers import AutoModelForCausalLM

    out = start_run(config.output_dir, config.training.threads, config.training.seed)
    split, reports = load_demonstrations(config.data)
    check_training_data(split.train, reports, "demonstrations")  # before the model loads
    path = resolve_backbone(config.model.name_or_path)
    tokenizer = load_tokenizer(path)
    lm = load_pretrained(AutoModelForCausalLM, path, config.model.dtype)
    ensure_pad_token(tokenizer, lm)
    disable_dropout(lm)
    if config.init_adapter is not None:
        lm = load_trainable_adapter(lm, config.init_adapter, "init_adapter")
    else:
        lm = prepare_trainable(lm, config.model)
    module = ResponseOnlyLM(lm)
    trainable, total = count_parameters(module)
    logger.info("sft: %d of %d parameters trainable", trainable, total)

    encoder = PromptResponseEncoder(
        tokenizer, max_length=config.max_length, min_prompt_tokens=config.min_prompt_tokens
    )
    train, train_report = tokenize_demonstrations(split.train, encoder, source="train split")
    val, val_report = tokenize_demonstrations(split.validation, encoder, source="validation split")
    reports += [train_report, val_report]
    check_training_data(train, reports, "demonstrations")
    settings = config.training
    pad_id = int(tokenizer.pad_token_id)

    def collate(indices: list[int]) -> Batch:
        device = next(module.parameters()).device
        return collate_demonstrations([train[i] for i in indices], pad_id).to(device)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return evaluate_demonstrations(m, val, pad_id, settings.eval_batch_size)

    loop = TrainingLoop(
        module=module,
        settings=settings,
        output_dir=out,
        plan=grouped_plan(train, settings),
        collate=collate,
        step_loss=sft_step,
        evaluate=evaluate if val else None,
        fingerprint=job_fingerprint(config),
        accelerator=accelerator,
        on_step=on_step,
        on_start=lambda _done: write_run_files(out, config, reports),
        progress_keys=("loss",),
        description="sft",
    )
    result = loop.run(resume=resume)
    validation = dict(result.eval)
    model_dir = out / MODEL_DIR
    adapter_dir: Path | None = None
    if loop.accelerator.is_main_process:
        base_name = config.model.name_or_path or "packaged SmolLM2-135M-Instruct"
        card = model_card(
            title="ragkit SFT model",
            summary="Causal LM fine-tuned on demonstrations with the loss on response tokens "
            "only; a dedicated pad token was added. Load with transformers' "
            "`AutoModelForCausalLM.from_pretrained(folder)`.",
            base_model=base_name,
            data=[r.summary() for r in reports],
            training={
                "finetune": config.model.finetune,
                "trainable parameters": trainable,
                "steps": result.steps,
                "train examples": len(train),
                "seconds": round(result.seconds, 1),
            },
            validation=validation or {"note": "no validation split"},
            config_yaml=dump_config(config),
        )
        info = {
            "format_version": SFT_FORMAT,
            "base_model": base_name,
            "pad_token": tokenizer.pad_token,
            "steps": result.steps,
            "validation": validation,
        }
        save_causal_lm(lm, tokenizer, model_dir, info, card)
        adapter_dir = save_lora_adapter(lm, out / ADAPTER_DIR, base_name, card)
        plot_curves(out / "metrics.jsonl", out / PLOT_FILE, ("loss",))
        write_json(
            out / "result.json",
            {
                **result.record("examples_per_second"),
                "train_examples": len(train),
                "validation_examples": len(val),
                "validation": validation,
            },
        )
    return SFTResult(
        output_dir=out,
        model_dir=model_dir,
        loop=result,
        validation=validation,
        train_examples=len(train),
        validation_examples=len(val),
        reports=reports,
        adapter_dir=adapter_dir,
    )
