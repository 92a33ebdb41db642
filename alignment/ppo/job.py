"""The PPO job: ``ragkit align ppo --config ppo.yaml`` and ``examples/rlhf_train.py``.

:func:`train_ppo` wires the :class:`~alignment.ppo.PPOTrainer` to a prompt data set, a reward
(a trained reward-model folder, or a named rule for tests and smoke runs), held-out
evaluation, sample logs and the final model, and runs it on the shared job loop
(:class:`~alignment.job_loop.JobLoop`, as the SFT and reward jobs do) for resume, the job
fingerprint, metrics, progress, the evaluation schedule and checkpoints. The config is
:mod:`.job_config`, the data :mod:`.job_data`, the models it builds :mod:`.job_models`.

* The prompts of update ``u`` are a pure function of ``u`` (:func:`.job_data.prompts_for_update`),
  so the data position *is* the update count and ``resume=True`` reproduces an uninterrupted
  run; a resume with no checkpoint in the folder starts afresh.
* Every update appends its metrics to ``metrics.jsonl`` (and TensorBoard when installed);
  ``curves.png`` is drawn at the end. Every ``sample_every`` updates a few rollouts go to
  ``samples.jsonl``.
* The mean score on held-out prompts is measured at the start, every ``eval_every`` updates
  and at the end (split ``eval`` in the metrics). Evaluation samples under a forked RNG with a
  fixed seed, so it neither disturbs the training trajectory nor differs between a fresh and a
  resumed run.
* ``checkpoints/update-NNNNNN`` every ``checkpoint_every`` updates and at the end (atomic,
  newest ``keep_checkpoints`` kept, the job fingerprint recorded in each); the final policy
  goes to ``model/`` (safetensors, tokenizer with its pad token, ``README.md`` model card,
  ``alignment_ppo.json``) and, for a LoRA policy, its adapter alone to ``adapter/`` (peft
  format, no embeddings: it applies to the unmodified base, as ``ragkit --adapter`` loads it).
* ``policy_adapter``: PPO of an existing LoRA adapter (see :mod:`.job_models`).
* PPO-ptx (``ppo.ptx_coef > 0``): the ``ptx`` section's demonstrations are read, tokenised and
  collated the way the SFT job does, and the trainer draws one batch per PPO minibatch.
* Under ``accelerate launch`` every process runs this function: each takes its own slice of
  each update's prompts (``ppo.batch_size`` per process), and only the main process evaluates,
  logs and writes files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignment.checkpoint import CheckpointLayout
from alignment.config import dump_config
from alignment.errors import DataFormatError
from alignment.job_loop import JobLoop, Schedule
from alignment.job_setup import count_parameters, start_run, write_json, write_run_files
from alignment.metrics import METRICS_FILE, PLOT_FILE, plot_curves, read_metrics
from alignment.modelcard import model_card
from alignment.ppo.constrained import ConstraintFn, grounded_constraints
from alignment.ppo.job_config import PPOJobConfig, ppo_job_fingerprint
from alignment.ppo.job_data import PromptSplit, load_prompts, load_ptx_data, prompts_for_process
from alignment.ppo.job_models import load_policy, load_reward, make_rollout_engine, value_model_for
from alignment.ppo.rollout import eos_ids
from alignment.ppo.trainer import PPOTrainer, make_accelerator
from alignment.report import DataReport
from ragkit.atomic import atomic_write_text

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"  # LoRA policies: the adapter alone, besides the merged model
SAMPLES_FILE = "samples.jsonl"
PPO_INFO_FILE = "alignment_ppo.json"
PPO_JOB_FORMAT = 1
PPO_CHECKPOINTS = CheckpointLayout(prefix="update", digits=6)
PLOT_KEYS = ("score", "kl", "entropy", "approx_kl", "clip_fraction", "value_loss")
# what the progress bar shows after each update (all in metrics.jsonl)
PROGRESS_KEYS = ("score", "kl", "entropy", "clip_fraction", "response_length")


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
    std = float(all_scores.std()) if all_scores.numel() > 1 else 0.0
    return {
        "score": float(all_scores.mean()),
        "score_std": std,
        # the standard error of the held-out mean: the band a rise must clear to be more than noise
        "score_se": std / math.sqrt(all_scores.numel()),
        "response_length": float(torch.cat(lengths).mean()),
        "eos_rate": float(torch.cat(eos).mean()),
        "stop_rate": float(torch.cat(stops).mean()),
        "prompts": float(len(prompts)),
    }


class SampleLog:
    """``samples.jsonl``: a few rollouts with their scores every ``every`` updates (the main
    process writes it)."""

    def __init__(self, path: Path, trainer: PPOTrainer, every: int | None, per_log: int) -> None:
        self.path = path
        self.trainer = trainer
        self.every = every
        self.per_log = per_log
        self._fh: Any = None

    def start(self, done: int) -> None:
        """Drop the records written after update ``done`` (by an interrupted run), then append."""
        kept = [r for r in read_metrics(self.path) if int(r.get("update", 0)) <= done]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh = self.path.open("a", encoding="utf-8")

    @torch.no_grad()
    def after_update(self, update: int) -> None:
        """Write the last rollout's first ``per_log`` samples when ``update`` is due."""
        rollout = self.trainer.last_rollout
        if self._fh is None or not self.every or update % self.every or rollout is None:
            return
        prompts, texts = rollout.prompts[: self.per_log], rollout.texts[: self.per_log]
        scores = torch.as_tensor(self.trainer.score_fn(prompts, texts), dtype=torch.float32)
        scores = scores.reshape(-1)
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
            self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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


def grounded_rollouts(
    config: PPOJobConfig, split: PromptSplit, tokenizer: Any, policy: Any
) -> ConstraintFn:
    """The span constraint of every prompt (``decoding: grounded``); a newline ends an answer.

    Refuses, in one line, prompts that came without passages: a grounded answer has nothing
    to quote there, and a free one would train another policy than the one served.
    """
    prompts = [*split.train, *split.heldout]
    missing = sum(1 for p in prompts if not any(t.strip() for t in split.passages.get(p, [])))
    if missing:
        raise DataFormatError(
            f"decoding: grounded needs passages for every prompt: {missing} of {len(prompts)} "
            f"prompts in {config.data.path} have none (field {config.data.passages_field!r})"
        )
    return grounded_constraints(
        split.passages,
        tokenizer,
        eos_ids(tokenizer, policy),
        max_tokens=config.ppo.response_length,
        abstain_bias=config.abstain_bias,
    )


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
    out = start_run(config.output_dir, config.threads)
    accelerator = make_accelerator()
    main = bool(accelerator.is_main_process)
    rank, processes = int(accelerator.process_index), int(accelerator.num_processes)

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
    policy, backbone, tokenizer, base_name, reference = load_policy(
        config.policy, config.policy_adapter
    )
    device = torch.device(config.device) if config.device else accelerator.device
    ptx_data, ptx_reports = load_ptx_data(config, tokenizer)
    reward = load_reward(config.reward, device)
    value_model = value_model_for(config, reward, backbone)
    del backbone
    constraint_for, ppo_settings = None, config.ppo
    if config.decoding == "grounded":
        constraint_for = grounded_rollouts(config, split, tokenizer, policy)
        if "\n" not in ppo_settings.stop_strings:  # as grounded mode serves: one line answers
            stops = [*ppo_settings.stop_strings, "\n"]
            ppo_settings = ppo_settings.model_copy(update={"stop_strings": stops})
    trainer = PPOTrainer(
        policy,
        reference,
        value_model,
        reward,
        tokenizer,
        ppo_settings,
        device=device,
        ptx_data=ptx_data,
        total_updates=config.updates,
        accelerator=accelerator,
        rollout_engine=make_rollout_engine(config.rollout, config.policy.name_or_path),
        constraint_for=constraint_for,
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

    reports = [split.report, *ptx_reports]
    samples = SampleLog(out / SAMPLES_FILE, trainer, config.sample_every, config.samples_per_log)

    def start(done: int) -> None:  # the main process, once the folder is ready
        write_run_files(out, config, reports)
        samples.start(done)

    def step(done: int) -> dict[str, float]:
        batch = prompts_for_process(
            split.train, done, config.ppo.batch_size, config.ppo.seed, rank, processes
        )
        metrics = trainer.step(batch)
        if main:
            logger.info(
                "ppo update %d/%d: score %.4f kl %.4f entropy %.3f (%.1fs)",
                trainer.updates,
                config.updates,
                metrics["score"],
                metrics["kl"],
                metrics.get("entropy", float("nan")),
                metrics["time_total"],
            )
        samples.after_update(trainer.updates)
        return metrics

    eval_seed = config.ppo.seed + 1_000_003

    def evaluate() -> dict[str, float]:  # the main process only (no collective ops)
        if not (config.eval and split.heldout and main):
            return {}
        result = heldout_score(trainer, split.heldout, eval_seed, config.ppo.batch_size)
        logger.info("ppo: held-out score %.4f at update %d", result["score"], trainer.updates)
        return result

    loop = JobLoop(
        output_dir=out,
        schedule=Schedule(
            total_steps=config.updates,
            eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every,
            keep_checkpoints=config.keep_checkpoints,
            evaluate_at_start=True,
            final_checkpoint=True,
            resume_needs_checkpoint=False,
        ),
        step=step,
        state=trainer,
        fingerprint=ppo_job_fingerprint(config),
        accelerator=accelerator,
        evaluate=evaluate,
        layout=PPO_CHECKPOINTS,
        on_start=start,
        on_step=on_update,
        progress=config.progress,
        description="ppo",
        progress_keys=PROGRESS_KEYS,
        eval_keys=("score",),
        smoothing=0.0,
    )
    try:
        loop_result = loop.run(resume=resume)
    finally:
        samples.close()
    heldout_start, heldout_end = loop_result.eval_start, loop_result.eval

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
                "resumed_from": loop_result.resumed_from,
                "heldout_start": heldout_start,
                "heldout_end": heldout_end,
                "last_metrics": loop_result.train,
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
        last_metrics=loop_result.train,
        metrics_path=out / METRICS_FILE,
        samples_path=samples.path,
        plot_path=plot if plotted else None,
        resumed_from=loop_result.resumed_from,
        train_prompts=len(split.train),
        heldout_prompts=len(split.heldout),
        reports=reports,
        adapter_dir=adapter_dir,
    )


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
    from alignment.sft import save_causal_lm, save_lora_adapter

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
    save_causal_lm(trainer.policy, trainer.tokenizer, model_dir, info, card, PPO_INFO_FILE)
    return save_lora_adapter(trainer.policy, model_dir.parent / ADAPTER_DIR, base_name, card)
