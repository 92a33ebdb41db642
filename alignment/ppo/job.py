"""The PPO job: ``ragkit align ppo --config ppo.yaml`` and ``examples/rlhf_train.py``.

:func:`train_ppo` wires the :class:`~alignment.ppo.PPOTrainer` to a prompt data set, a reward
(a trained reward-model folder, or a named rule for tests and smoke runs), metric sinks,
sample logs, held-out evaluation, checkpoints and the final model:

* Prompts are the HH dialogues up to their last ``"\\n\\nAssistant:"`` (one per distinct
  prompt), split by prompt into training and held-out prompts. The prompts of update ``u``
  are a pure function of ``u`` (an epoch-wise shuffle seeded from ``ppo.seed``), so the data
  position *is* the update count and ``resume=True`` reproduces an uninterrupted run.
* Every update appends its metrics to ``metrics.jsonl`` (and TensorBoard when installed);
  ``curves.png`` is drawn at the end. Every ``sample_every`` updates a few rollouts go to
  ``samples.jsonl``.
* The mean score on held-out prompts is measured at the start, every ``eval_every`` updates
  and at the end (split ``eval`` in the metrics). Evaluation samples under a forked RNG with a
  fixed seed, so it neither disturbs the training trajectory nor differs between a fresh and a
  resumed run.
* ``checkpoints/update-NNNNNN`` every ``checkpoint_every`` updates and at the end (atomic,
  newest ``keep_checkpoints`` kept); the final policy goes to ``model/`` (safetensors,
  tokenizer with its pad token, ``README.md`` model card, ``alignment_ppo.json``) and, for a
  LoRA policy, its adapter alone to ``adapter/`` (peft format, no embeddings: it applies to the
  unmodified base, as ``ragkit --adapter`` loads it).
* ``policy_adapter``: PPO of an existing LoRA adapter (e.g. the one ``ragkit serve`` uses).
  The policy is the base model with that adapter, trainable; the reference is a frozen copy of
  the base with the adapter merged (the policy as it was before PPO), not the bare base.
* PPO-ptx (``ppo.ptx_coef > 0``): the ``ptx`` section's demonstrations are read, tokenised and
  collated the way the SFT job does, and the trainer draws one batch per PPO minibatch.
* Under ``accelerate launch`` every process runs this function: each takes its own slice of
  each update's prompts (``ppo.batch_size`` per process), and only the main process evaluates,
  logs and writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from alignment.backbone import (
    disable_dropout,
    load_pretrained,
    load_tokenizer,
    merged_copy,
    resolve_backbone,
)
from alignment.checkpoint import config_fingerprint
from alignment.config import (
    DEFAULT_HH_DATA,
    DemonstrationDataSettings,
    ModelSettings,
    _Strict,
    dump_config,
)
from alignment.data import iter_jsonl, read_preference_jsonl
from alignment.errors import AlignmentError, CheckpointError, DataFormatError
from alignment.jobs import (
    count_parameters,
    load_demonstrations,
    prepare_trainable,
    set_threads,
    write_json,
)
from alignment.loop import TrainingProgress
from alignment.metrics import METRICS_FILE, PLOT_FILE, MetricsSink, plot_curves, read_metrics
from alignment.modelcard import model_card
from alignment.ppo.config import PPOConfig
from alignment.ppo.ptx import PtxData
from alignment.ppo.rollout import RewardFn
from alignment.ppo.trainer import PPOTrainer, make_accelerator
from alignment.ppo.value import ValueModel, zero_value_head
from alignment.report import DataReport
from alignment.reward_model import RewardModel
from alignment.tokenization import PromptResponseEncoder, ensure_pad_token, tokenize_demonstrations
from ragkit.atomic import atomic_directory, atomic_write_text

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"  # LoRA policies: the adapter alone, besides the merged model
CHECKPOINT_DIR = "checkpoints"
SAMPLES_FILE = "samples.jsonl"
JOB_FILE = "job.json"
PPO_INFO_FILE = "alignment_ppo.json"
PPO_JOB_FORMAT = 1
PLOT_KEYS = ("score", "kl", "entropy", "approx_kl", "clip_fraction", "value_loss")
_CHECKPOINT_NAME = re.compile(r"^update-(\d+)$")
_RULE = re.compile(r"^(count:\S+|length)$")

# Job settings that change how a run is watched, not what it computes: a resume may change them.
BOOKKEEPING = {
    "output_dir",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "samples_per_log",
    "threads",
    "device",
    "eval_every",
    "progress",
}
# what the progress bar shows after each update (all in metrics.jsonl)
PROGRESS_KEYS = ("score", "kl", "entropy", "clip_fraction", "response_length")


# --------------------------------------------------------------------------- configuration


class RewardSettings(_Strict):
    """Where scores come from: exactly one of ``model_dir`` and ``rule``.

    ``model_dir``: a folder written by ``ragkit align reward`` (its ``model/`` subfolder); the
    normalised score is used. ``rule`` (tests, smoke runs, plumbing checks): ``count:WORD``
    scores +1 per whitespace-separated occurrence of WORD in the response, ``length`` the number
    of words.
    """

    model_dir: Path | None = None
    rule: str | None = None

    @model_validator(mode="after")
    def _one(self) -> RewardSettings:
        if (self.model_dir is None) == (self.rule is None):
            raise ValueError("set exactly one of reward.model_dir and reward.rule")
        if self.rule is not None and not _RULE.match(self.rule):
            raise ValueError(f"unknown rule {self.rule!r} (expected 'count:WORD' or 'length')")
        return self


class PromptDataSettings(_Strict):
    """Prompts for rollouts.

    ``format``: ``hh`` (Anthropic HH lines: the prompt is the dialogue up to the last
    ``"\\n\\nAssistant:"``), ``pairs`` (the ``prompt_field`` of prompt/chosen/rejected lines) or
    ``prompts`` (any JSONL with a ``prompt_field`` string). ``limit`` caps the lines read;
    ``heldout_fraction`` of the distinct prompts (at most ``heldout_max``) are kept out of
    training and scored at the start and the end.
    """

    path: Path = DEFAULT_HH_DATA
    format: Literal["hh", "pairs", "prompts"] = "hh"
    prompt_field: str = "prompt"
    limit: int | None = Field(None, ge=2)
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    heldout_max: int = Field(64, ge=1)
    split_seed: int = 0


class PtxSettings(_Strict):
    """Demonstrations for PPO-ptx, read only when ``ppo.ptx_coef > 0``.

    ``data``: as the SFT job's ``data`` (default: the chosen answers of the HH file; no
    validation split is held out unless asked, since nothing is validated here). Each is
    tokenised like SFT (prompt cut from the left to ``max_length``, EOS appended, loss on the
    response tokens only). ``batch_size`` demonstrations per PPO minibatch (per process), split
    over the ``ppo.grad_accumulation`` micro-batches.
    """

    data: DemonstrationDataSettings = Field(
        default_factory=lambda: DemonstrationDataSettings(validation_fraction=0.0)
    )
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(256, ge=8)
    min_prompt_tokens: int = Field(8, ge=0)

    @model_validator(mode="after")
    def _lengths(self) -> PtxSettings:
        if self.min_prompt_tokens >= self.max_length:
            raise ValueError("ptx.min_prompt_tokens must be smaller than ptx.max_length")
        return self


class RolloutSettings(_Strict):
    """Who samples the responses: ``engine: policy`` (default; ``transformers.generate`` on the
    policy) or ``engine: vllm`` (vLLM's in-process engine on the policy's base model, weights
    pushed after every update; needs ``pip install 'ragkit[vllm]'`` and a CUDA GPU, see
    :mod:`alignment.ppo.engines`). The other keys configure the vLLM engine: ``dtype`` (None:
    the model's), ``gpu_memory_utilization`` (share of the GPU for vLLM's weights and KV cache;
    the trainer needs the rest), ``max_model_len``, ``enforce_eager``, ``engine_options`` (more
    ``vllm.LLM`` keywords).
    """

    engine: Literal["policy", "vllm"] = "policy"
    dtype: str | None = None
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, ge=1)
    enforce_eager: bool = False
    engine_options: dict[str, Any] = Field(default_factory=dict)


class PPOJobConfig(_Strict):
    """``ragkit align ppo``: PPO fine-tuning of a causal LM against a reward.

    ``policy``: the model to fine-tune (``name_or_path`` None = packaged SmolLM2-135M-Instruct;
    ``finetune: lora`` makes the reference the policy with its adapter disabled).
    ``policy_adapter``: a peft LoRA adapter folder to start from (needs ``finetune: lora``; its
    own rank and target modules replace ``policy.lora``); the reference is then the base with
    this adapter merged, a second frozen copy of the model in memory. The value
    function is chosen by ``ppo.value``: ``model`` (default) copies the reward model (or, with a
    rule reward, the policy's backbone under a zero head); ``head`` is a head on the policy.
    ``eval_every``: also score the held-out prompts every N updates (besides the start and the
    end). ``progress``: a progress bar with the latest metrics (main process only).
    ``rollout``: who samples (:class:`RolloutSettings`). ``device``: ``None`` = the
    accelerator's device (CUDA when available, else the CPU; one GPU per process under
    ``accelerate launch``). ``ptx``: demonstrations for PPO-ptx (needed when
    ``ppo.ptx_coef > 0``, ignored otherwise).
    """

    policy: ModelSettings = Field(default_factory=ModelSettings)
    policy_adapter: Path | None = None
    reward: RewardSettings
    data: PromptDataSettings = Field(default_factory=PromptDataSettings)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    ptx: PtxSettings | None = None
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    updates: int = Field(100, ge=1)
    checkpoint_every: int | None = Field(25, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    sample_every: int | None = Field(10, ge=1)
    samples_per_log: int = Field(4, ge=1)
    eval: bool = True
    eval_every: int | None = Field(None, ge=1)
    progress: bool = True
    threads: int | None = Field(None, ge=1)
    device: str | None = None
    output_dir: Path = Path("runs/ppo")

    @model_validator(mode="after")
    def _consistent(self) -> PPOJobConfig:
        if self.policy_adapter is not None and self.policy.finetune != "lora":
            raise ValueError("policy_adapter needs policy.finetune: lora (the adapter is trained)")
        if self.ppo.ptx_coef > 0 and self.ptx is None:
            raise ValueError("ppo.ptx_coef > 0 needs a 'ptx' section (the demonstrations)")
        if self.ptx is not None and self.ptx.batch_size % self.ppo.grad_accumulation:
            raise ValueError(
                f"ptx.batch_size {self.ptx.batch_size} must be divisible by "
                f"ppo.grad_accumulation {self.ppo.grad_accumulation}"
            )
        self.ppo.check_schedule(self.updates)
        return self


def ppo_job_fingerprint(config: PPOJobConfig) -> str:
    """Digest of the settings that decide the trajectory (bookkeeping excluded)."""
    data = config.model_dump(mode="json")
    rollout = data.pop("rollout")
    if rollout["engine"] != "policy":  # engine tuning (memory share...) is not in the digest
        data["rollout"] = {"engine": rollout["engine"], "dtype": rollout["dtype"]}
    return config_fingerprint(data, ignore=BOOKKEEPING)


def make_rollout_engine(settings: RolloutSettings, policy_name: str | None) -> Any:
    """The configured rollout engine (``None`` for ``engine: policy``).

    vLLM loads the policy's base model (``policy.name_or_path``); the trainer then pushes the
    policy's current weights into it before the first rollout, so an SFT'd or resumed policy is
    what samples.
    """
    if settings.engine == "policy":
        return None
    from alignment.ppo.engines import VLLMRolloutEngine

    return VLLMRolloutEngine.from_model(
        policy_name,
        dtype=settings.dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=settings.max_model_len,
        enforce_eager=settings.enforce_eager,
        engine_options=settings.engine_options,
    )


# --------------------------------------------------------------------------- data


@dataclass
class PromptSplit:
    """Distinct training and held-out prompts, in file order."""

    train: list[str]
    heldout: list[str]
    report: DataReport


def _unique(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def load_prompts(settings: PromptDataSettings) -> PromptSplit:
    """Read the configured prompts and split them by prompt (no prompt in both parts)."""
    if settings.format == "prompts":
        report = DataReport(source=str(settings.path))
        prompts: list[str] = []
        for where, row in iter_jsonl(settings.path, report, settings.limit):
            value = row.get(settings.prompt_field)
            if not isinstance(value, str) or not value.strip():
                report.drop("missing_field", f"{where} ({settings.prompt_field})")
                continue
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
    return PromptSplit(train, heldout, report)


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


# --------------------------------------------------------------------------- rewards


def rule_reward(rule: str) -> RewardFn:
    """The named rule as ``reward(prompts, responses) -> tensor`` (see :class:`RewardSettings`)."""
    if rule == "length":
        return lambda prompts, responses: torch.tensor([float(len(r.split())) for r in responses])
    word = rule.split(":", 1)[1]
    return lambda prompts, responses: torch.tensor(
        [float(r.split().count(word)) for r in responses]
    )


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def heldout_score(
    trainer: PPOTrainer, prompts: Sequence[str], seed: int, batch_size: int
) -> dict[str, float]:
    """Mean score of one sampled response per held-out prompt, under a forked, fixed-seed RNG.

    The score is the reward's (normalised reward-model score or rule), without the no-EOS
    penalty and the KL term; ``eos_rate`` and ``stop_rate`` say how many responses ended by
    themselves (EOS, stop string).
    """
    if not prompts:
        return {}
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    scores, lengths, eos, stops = [], [], [], []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            rollout = trainer.sample(chunk, seed=seed + start)  # the seed: rollout engines
            got = torch.as_tensor(trainer.score_fn(chunk, rollout.texts), dtype=torch.float32)
            scores.append(got.reshape(-1).cpu())
            lengths.append(rollout.lengths.float().cpu())
            eos.append(rollout.has_eos.float().cpu())
            stopped = (
                rollout.has_stop
                if rollout.has_stop is not None
                else torch.zeros_like(rollout.has_eos)
            )
            stops.append(stopped.float().cpu())
    all_scores = torch.cat(scores)
    return {
        "score": float(all_scores.mean()),
        "score_std": float(all_scores.std()) if all_scores.numel() > 1 else 0.0,
        "response_length": float(torch.cat(lengths).mean()),
        "eos_rate": float(torch.cat(eos).mean()),
        "stop_rate": float(torch.cat(stops).mean()),
        "prompts": float(len(prompts)),
    }


# --------------------------------------------------------------------------- checkpoints


def ppo_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete PPO checkpoints under ``output_dir``, oldest first."""
    root = output_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT_NAME.match(child.name)
        if match and child.is_dir() and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _save_checkpoint(trainer: PPOTrainer, output_dir: Path, keep: int) -> Path:
    """Every process calls this (RNG states are gathered); the main one writes and prunes."""
    path = trainer.save_checkpoint(output_dir / CHECKPOINT_DIR / f"update-{trainer.updates:06d}")
    if trainer.accelerator.is_main_process:
        for _, old in ppo_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _keep_records_up_to(path: Path, update: int) -> None:
    """Drop sample records written after ``update`` (by an interrupted run)."""
    kept = [r for r in read_metrics(path) if int(r.get("update", 0)) <= update]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# --------------------------------------------------------------------------- the job


@dataclass
class PPOResult:
    """Where the run went and how it did."""

    output_dir: Path
    model_dir: Path
    updates: int
    seconds: float
    heldout_start: dict[str, float]
    heldout_end: dict[str, float]
    last_metrics: dict[str, float]
    metrics_path: Path
    samples_path: Path
    plot_path: Path | None
    resumed_from: int | None
    train_prompts: int
    heldout_prompts: int
    reports: list[DataReport] = field(default_factory=list)
    adapter_dir: Path | None = None
    """``adapter/``: the LoRA adapter alone (None when the policy was fully fine-tuned)."""


def _load_policy(
    settings: ModelSettings, adapter: Path | None = None
) -> tuple[nn.Module, nn.Module, Any, str, nn.Module | None]:
    """(trainable policy, plain backbone copy for a value model, tokenizer, base model name,
    reference policy or None for the trainer's default)."""
    from transformers import AutoModelForCausalLM

    path = resolve_backbone(settings.name_or_path)
    tokenizer = load_tokenizer(path)
    lm = load_pretrained(AutoModelForCausalLM, path, settings.dtype)
    ensure_pad_token(tokenizer, lm)
    disable_dropout(lm)
    backbone: nn.Module = lm.base_model  # the transformer without its LM head
    name = settings.name_or_path or "packaged SmolLM2-135M-Instruct"
    if adapter is None:
        return prepare_trainable(lm, settings), backbone, tokenizer, name, None
    policy = load_trainable_adapter(lm, adapter)
    reference = merged_copy(policy)  # the policy before PPO; the trainer freezes it
    return policy, backbone, tokenizer, name, reference


def load_trainable_adapter(model: nn.Module, adapter: Path) -> nn.Module:
    """``model`` wrapped with the peft LoRA adapter in ``adapter``, its weights trainable."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise AlignmentError(f"policy_adapter {adapter} is not a peft adapter folder")
    try:
        policy = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AlignmentError(f"policy_adapter {adapter} does not fit the policy: {first}") from None
    disable_dropout(policy)  # the adapter's own LoRA dropout modules
    return policy


def _value_model(
    config: PPOJobConfig, reward: RewardFn | RewardModel, backbone: nn.Module
) -> ValueModel | None:
    """``None`` lets the trainer pick (copy of the reward model, or a head on the policy)."""
    if config.ppo.value == "head" or isinstance(reward, RewardModel):
        return None
    copied = copy.deepcopy(backbone)
    for p in copied.parameters():
        p.requires_grad_(True)
    hidden = int(getattr(copied, "config").hidden_size)  # noqa: B009
    return ValueModel(copied, zero_value_head(hidden))


def _check_job_file(output_dir: Path, fingerprint: str, resume: bool, write: bool) -> None:
    path = output_dir / JOB_FILE
    if resume and path.is_file():
        found = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
        if found != fingerprint:
            raise CheckpointError(
                f"{output_dir} holds a PPO run with other model/reward/data/ppo settings"
            )
    if write:
        write_json(path, {"format_version": PPO_JOB_FORMAT, "fingerprint": fingerprint})


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


def train_ppo(
    config: PPOJobConfig,
    *,
    resume: bool = False,
    on_update: Callable[[int, dict[str, float]], None] | None = None,
) -> PPOResult:
    """Run the PPO job described by ``config`` (see the module docstring for what it writes).

    ``resume``: continue from the newest checkpoint in ``output_dir`` (a fresh start when there
    is none). ``on_update(update, metrics)`` is called after each update's bookkeeping.
    """
    started = time.perf_counter()
    set_threads(config.threads)
    accelerator = make_accelerator()
    main = bool(accelerator.is_main_process)
    rank, processes = int(accelerator.process_index), int(accelerator.num_processes)
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = ppo_job_fingerprint(config)

    split = load_prompts(config.data)
    if main:
        logger.info(
            "ppo: %d training prompts, %d held out; %s",
            len(split.train),
            len(split.heldout),
            split.report.summary(),
        )
    # adding the pad token draws its embedding row from the global RNG: seed it, or a resumed
    # run's frozen reference (not in the checkpoint) would differ from the original one (and
    # every process must build the same reference)
    torch.manual_seed(config.ppo.seed)
    policy, backbone, tokenizer, base_name, reference = _load_policy(
        config.policy, config.policy_adapter
    )
    device = torch.device(config.device) if config.device else accelerator.device
    ptx_data, ptx_reports = load_ptx_data(config, tokenizer)
    reward: RewardFn | RewardModel
    if config.reward.model_dir is not None:
        reward = RewardModel.load(config.reward.model_dir, device=device)
    else:
        assert config.reward.rule is not None
        reward = rule_reward(config.reward.rule)
    value_model = _value_model(config, reward, backbone)
    del backbone
    trainer = PPOTrainer(
        policy,
        reference,
        value_model,
        reward,
        tokenizer,
        config.ppo,
        device=device,
        ptx_data=ptx_data,
        total_updates=config.updates,
        accelerator=accelerator,
        rollout_engine=make_rollout_engine(config.rollout, config.policy.name_or_path),
    )
    trainable, total = count_parameters(trainer.trainable)
    if main:
        logger.info(
            "ppo: %d of %d parameters trainable, %d process(es) on %s",
            trainable,
            total,
            processes,
            trainer.device,
        )

    resumed_from: int | None = None
    checkpoints = ppo_checkpoints(out) if resume else []
    _check_job_file(out, fingerprint, resume and bool(checkpoints), write=False)
    accelerator.wait_for_everyone()  # every process has read the folder before it changes
    if main:
        _check_job_file(out, fingerprint, False, write=True)
    if checkpoints:
        trainer.load_checkpoint(checkpoints[-1][1])
        resumed_from = trainer.updates
        if main:
            logger.info("ppo: resumed from update %d (%s)", trainer.updates, checkpoints[-1][1])
    elif main:  # a fresh run: forget what an earlier run in this folder wrote
        if resume:
            logger.info("ppo: no checkpoint under %s, starting from scratch", out)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        (out / METRICS_FILE).unlink(missing_ok=True)
    reports = [split.report, *ptx_reports]
    if main:
        atomic_write_text(out / "config.yaml", dump_config(config))
        write_json(out / "data_report.json", [r.model_dump() for r in reports])
    accelerator.wait_for_everyone()

    start_update = trainer.updates
    samples_path = out / SAMPLES_FILE
    sink: MetricsSink | None = None
    if main:
        _keep_records_up_to(samples_path, start_update)
        sink = MetricsSink(out, resume_step=start_update)
    eval_seed = config.ppo.seed + 1_000_003
    eval_batch = config.ppo.batch_size

    def evaluate(step: int) -> dict[str, float]:
        if not (config.eval and split.heldout and sink is not None):
            return {}
        result = heldout_score(trainer, split.heldout, eval_seed, eval_batch)
        sink.log(step, "eval", result)
        logger.info("ppo: held-out score %.4f at update %d", result["score"], step)
        return result

    heldout_start: dict[str, float] = {}
    if start_update == 0:
        heldout_start = evaluate(0)
    elif main:
        heldout_start = {
            k: v
            for r in read_metrics(out / METRICS_FILE)
            if r.get("split") == "eval" and r.get("step") == 0
            for k, v in r.items()
            if k not in {"step", "split"}
        }

    last: dict[str, float] = {}
    latest_eval: dict[str, float] = dict(heldout_start)
    try:
        with contextlib.ExitStack() as stack:
            samples = (
                stack.enter_context(samples_path.open("a", encoding="utf-8")) if main else None
            )
            bar = stack.enter_context(
                TrainingProgress(
                    enabled=config.progress and main,
                    total=config.updates,
                    done=start_update,
                    description="ppo",
                    eval_keys=("score",),
                )
            )
            while trainer.updates < config.updates:
                batch = prompts_for_process(
                    split.train,
                    trainer.updates,
                    config.ppo.batch_size,
                    config.ppo.seed,
                    rank,
                    processes,
                )
                last = trainer.step(batch)
                update = trainer.updates
                if sink is not None:
                    sink.log(update, "train", last)
                    logger.info(
                        "ppo update %d/%d: score %.4f kl %.4f entropy %.3f (%.1fs)",
                        update,
                        config.updates,
                        last["score"],
                        last["kl"],
                        last.get("entropy", float("nan")),
                        last["time_total"],
                    )
                if (
                    config.eval_every
                    and update % config.eval_every == 0
                    and update < config.updates
                ):
                    latest_eval = evaluate(update) or latest_eval
                bar.advance({k: last[k] for k in PROGRESS_KEYS if k in last}, latest_eval)
                if (
                    samples is not None
                    and config.sample_every
                    and update % config.sample_every == 0
                ):
                    _write_samples(samples, trainer, update, config.samples_per_log)
                if (
                    config.checkpoint_every
                    and update % config.checkpoint_every == 0
                    and update < config.updates
                ):
                    _save_checkpoint(trainer, out, config.keep_checkpoints)
                if on_update is not None:
                    on_update(update, last)
        if trainer.updates > start_update or not ppo_checkpoints(out):
            _save_checkpoint(trainer, out, config.keep_checkpoints)
        heldout_end = evaluate(trainer.updates)
    finally:
        if sink is not None:
            sink.close()

    plot = out / PLOT_FILE
    model_dir = out / MODEL_DIR
    seconds = time.perf_counter() - started
    plotted = False
    adapter_dir: Path | None = None
    if main:
        plotted = plot_curves(out / METRICS_FILE, plot, PLOT_KEYS)
        adapter_dir = _save_policy(
            config, trainer, model_dir, base_name, split, heldout_start, heldout_end, seconds
        )
        write_json(
            out / "result.json",
            {
                "updates": trainer.updates,
                "seconds": seconds,
                "resumed_from": resumed_from,
                "heldout_start": heldout_start,
                "heldout_end": heldout_end,
                "last_metrics": last,
                "train_prompts": len(split.train),
                "heldout_prompts": len(split.heldout),
                "processes": processes,
            },
        )
    accelerator.wait_for_everyone()
    return PPOResult(
        output_dir=out,
        model_dir=model_dir,
        updates=trainer.updates,
        seconds=seconds,
        heldout_start=heldout_start,
        heldout_end=heldout_end,
        last_metrics=last,
        metrics_path=out / METRICS_FILE,
        samples_path=samples_path,
        plot_path=plot if plotted else None,
        resumed_from=resumed_from,
        train_prompts=len(split.train),
        heldout_prompts=len(split.heldout),
        reports=reports,
        adapter_dir=adapter_dir,
    )


@torch.no_grad()
def _write_samples(fh: Any, trainer: PPOTrainer, update: int, n: int) -> None:
    rollout = trainer.last_rollout
    if rollout is None:
        return
    prompts, texts = rollout.prompts[:n], rollout.texts[:n]
    scores = torch.as_tensor(trainer.score_fn(prompts, texts), dtype=torch.float32).reshape(-1)
    for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        record = {
            "update": update,
            "prompt": prompt,
            "response": text,
            "score": float(scores[i]),
            "has_eos": bool(rollout.has_eos[i]),
            "stopped": bool(rollout.has_stop[i]) if rollout.has_stop is not None else False,
            "tokens": int(rollout.lengths[i]),
        }
        fh.write(json.dumps(record) + "\n")
    fh.flush()


def _save_policy(
    config: PPOJobConfig,
    trainer: PPOTrainer,
    model_dir: Path,
    base_name: str,
    split: PromptSplit,
    heldout_start: dict[str, float],
    heldout_end: dict[str, float],
    seconds: float,
) -> Path | None:
    """Write ``model/`` (merged) and, for a LoRA policy, ``adapter/``; return the latter."""
    from alignment.sft import save_lora_adapter

    reward = (
        f"reward model {config.reward.model_dir}"
        if config.reward.model_dir is not None
        else f"rule {config.reward.rule}"
    )
    validation: dict[str, object] = {}
    if heldout_start:
        validation["held-out score at start"] = heldout_start["score"]
    if heldout_end:
        validation["held-out score at end"] = heldout_end["score"]
    card = model_card(
        title="ragkit PPO policy",
        summary="Causal LM fine-tuned with InstructGPT-style PPO against "
        f"{reward}; a dedicated pad token was added. Load with transformers' "
        "`AutoModelForCausalLM.from_pretrained(folder)`.",
        base_model=base_name,
        data=[
            split.report.summary(),
            f"{len(split.train)} training prompts, {len(split.heldout)} held-out prompts",
        ],
        training={
            "updates": trainer.updates,
            "episodes": trainer.updates * config.ppo.batch_size,
            "finetune": config.policy.finetune,
            "value function": config.ppo.value,
            "PPO-ptx coefficient": config.ppo.ptx_coef,
            "final KL coefficient": trainer.kl_controller.value,
            "seconds": round(seconds, 1),
        },
        validation=validation or {"note": "no held-out evaluation"},
        config_yaml=dump_config(config),
    )
    info = {
        "format_version": PPO_JOB_FORMAT,
        "base_model": base_name,
        "reward": reward,
        "pad_token": trainer.tokenizer.pad_token,
        "updates": trainer.updates,
        "heldout_start": heldout_start,
        "heldout_end": heldout_end,
        "policy_adapter": str(config.policy_adapter) if config.policy_adapter else None,
    }
    plain = merged_copy(trainer.policy)

    def fill(tmp: Path) -> None:
        plain.save_pretrained(str(tmp))  # type: ignore[operator]
        trainer.tokenizer.save_pretrained(str(tmp))
        (tmp / PPO_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")

    atomic_directory(model_dir, fill)
    return save_lora_adapter(trainer.policy, model_dir.parent / ADAPTER_DIR, base_name, card)
