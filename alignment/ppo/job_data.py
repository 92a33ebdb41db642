"""The PPO job's data: rollout prompts and PPO-ptx demonstrations.

* Prompts (:func:`load_prompts`) are the HH dialogues up to their last ``"\\n\\nAssistant:"``
  (or a field of prompt/chosen/rejected or plain prompt lines), one per distinct prompt, split
  by prompt into training and held-out prompts.
* The prompts of update ``u`` are a pure function of ``u`` (:func:`prompts_for_update`: an
  epoch-wise shuffle seeded from ``ppo.seed``), so the data position *is* the update count and
  a resume needs nothing but the trainer's checkpoint; under ``accelerate launch`` each process
  takes its own slice (:func:`prompts_for_process`).
* PPO-ptx demonstrations (:func:`load_ptx_data`) are read, tokenised and collated the way the
  SFT job does.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alignment.data import iter_jsonl, read_preference_jsonl
from alignment.errors import DataFormatError
from alignment.job_setup import load_demonstrations
from alignment.ppo.job_config import PPOJobConfig, PromptDataSettings
from alignment.ppo.ptx import PtxData
from alignment.report import DataReport
from alignment.tokenization import PromptResponseEncoder, tokenize_demonstrations

logger = logging.getLogger(__name__)


@dataclass
class PromptSplit:
    """Distinct training and held-out prompts, in file order."""

    train: list[str]
    heldout: list[str]
    report: DataReport
    passages: dict[str, list[str]] = field(default_factory=dict)
    """Each prompt's passage texts (format ``prompts`` rows that carry them)."""


def _unique(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def load_prompts(settings: PromptDataSettings) -> PromptSplit:
    """Read the configured prompts and split them by prompt (no prompt in both parts)."""
    if settings.format == "prompts":
        report = DataReport(source=str(settings.path))
        prompts: list[str] = []
        passages: dict[str, list[str]] = {}
        for where, row in iter_jsonl(settings.path, report, settings.limit):
            value = row.get(settings.prompt_field)
            if not isinstance(value, str) or not value.strip():
                report.drop("missing_field", f"{where} ({settings.prompt_field})")
                continue
            shown = row.get(settings.passages_field)
            if shown is not None:
                if not isinstance(shown, list) or not all(isinstance(p, str) for p in shown):
                    report.drop("wrong_type", f"{where} ({settings.passages_field})")
                    continue
                passages.setdefault(value, shown)
            prompts.append(value)
            report.keep()
    else:
        loaded = read_preference_jsonl(
            settings.path,
            format="hh" if settings.format == "hh" else "fields",
            prompt_field=settings.prompt_field,
            limit=settings.limit,
        )
        report = loaded.report
        prompts = [p.prompt for p in loaded.records]
        passages = {}
    distinct = _unique(prompts)
    order = list(range(len(distinct)))
    random.Random(settings.split_seed).shuffle(order)
    n_held = 0
    if settings.heldout_fraction > 0 and len(distinct) >= 2:
        n_held = min(max(round(settings.heldout_fraction * len(distinct)), 1), len(distinct) - 1)
        n_held = min(n_held, settings.heldout_max)
    held = set(order[:n_held])
    train = [p for i, p in enumerate(distinct) if i not in held]
    heldout = [p for i, p in enumerate(distinct) if i in held]
    if not train:
        raise DataFormatError(f"no usable prompts in {settings.path} (see the data report)")
    return PromptSplit(train, heldout, report, passages)


def prompts_for_process(
    prompts: Sequence[str], update: int, batch_size: int, seed: int, rank: int, processes: int
) -> list[str]:
    """Process ``rank``'s ``batch_size`` prompts of update ``update``: disjoint slices of one
    ``batch_size × processes`` batch (on one process, :func:`prompts_for_update` itself)."""
    batch = prompts_for_update(prompts, update, batch_size * processes, seed)
    return batch[rank * batch_size : (rank + 1) * batch_size]


def prompts_for_update(
    prompts: Sequence[str], update: int, batch_size: int, seed: int
) -> list[str]:
    """The ``batch_size`` prompts of update ``update`` (0-based): a pure function of its inputs.

    Walks an epoch-wise shuffle of ``prompts`` (epoch ``e`` shuffled with seed ``(seed, e)``),
    wrapping around into the next epoch; the data position is the update count.
    """
    n = len(prompts)
    out = []
    for k in range(update * batch_size, (update + 1) * batch_size):
        epoch, index = divmod(k, n)
        order = list(range(n))
        random.Random(f"{seed}-{epoch}").shuffle(order)
        out.append(prompts[order[index]])
    return out


def load_ptx_data(config: PPOJobConfig, tokenizer: Any) -> tuple[PtxData | None, list[DataReport]]:
    """The PPO-ptx demonstrations, tokenised like SFT's (``None`` when ``ptx_coef`` is 0)."""
    if config.ppo.ptx_coef <= 0 or config.ptx is None:
        if config.ptx is not None:
            logger.info("ppo: ptx section ignored (ppo.ptx_coef is 0)")
        return None, []
    settings = config.ptx
    split, reports = load_demonstrations(settings.data)
    encoder = PromptResponseEncoder(
        tokenizer, max_length=settings.max_length, min_prompt_tokens=settings.min_prompt_tokens
    )
    demos, report = tokenize_demonstrations(split.train, encoder, source="ptx demonstrations")
    reports.append(report)
    if not demos:
        raise DataFormatError(f"no usable ptx demonstrations in {settings.data.path}")
    data = PtxData(demos, int(tokenizer.pad_token_id), settings.batch_size, config.ppo.seed)
    return data, reports
