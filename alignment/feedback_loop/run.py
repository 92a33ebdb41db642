"""``run_feedback_loop``: feedback store → reward model → PPO → evaluation → promote or keep.

Steps, each reusing the job that does it on its own:

1. repair an interrupted promotion, find the current adapter (the serving folder's live
   version, else ``serving.initial_adapter``, else none);
2. export the store's preference pairs (:func:`ragkit.feedback.export_preferences`) with the
   prompts in the served format, refuse too few pairs or pairs from another model or prompt
   format (:mod:`alignment.feedback_loop.data`);
3. train a reward model on them (:func:`alignment.reward_training.train_reward_model`);
4. PPO of the current adapter against it, on the pairs' prompts
   (:func:`alignment.ppo.train_ppo` with ``policy_adapter``);
5. score the current adapter and the candidate on the same held-out questions and compare
   them with a paired bootstrap (:mod:`alignment.feedback_loop.stats`);
6. promote the candidate into the serving folder only if the interval's lower end exceeds
   ``promotion.min_gain`` (:func:`alignment.feedback_loop.promotion.promote_adapter`), else keep
   the current one; either way ``decision.json`` in the run folder says what happened and why.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alignment.checkpoint import latest_checkpoint
from alignment.config import RewardJobConfig, dump_config, load_config, override, validate_config
from alignment.feedback_loop.config import FeedbackLoopConfig
from alignment.feedback_loop.data import (
    FeedbackLoopError,
    ServedPromptRenderer,
    default_prompt_format,
    export_loop_pairs,
    reload_loop_pairs,
    write_prompts,
)
from alignment.feedback_loop.evaluation import AnswerScoreEvaluator, EvaluateFn
from alignment.feedback_loop.promotion import (
    Promotion,
    live_version,
    promote_adapter,
    read_card,
    recover_serving_adapter,
)
from alignment.feedback_loop.stages import CurrentAdapter, PPOStage, RewardStage, StageLog
from alignment.feedback_loop.stats import PairedComparison, paired_bootstrap
from alignment.job_setup import check_output_dir, write_json
from alignment.modelcard import model_card
from alignment.ppo.job_config import PPOJobConfig
from ragkit.feedback import FeedbackError, check_existing_store

logger = logging.getLogger(__name__)

PAIRS_FILE = "feedback_pairs.jsonl"
PROMPTS_FILE = "ppo_prompts.jsonl"
EVALUATION_FILE = "evaluation.json"
DECISION_FILE = "decision.json"
CARD_FORMAT = 1

Stage = Callable[[str, dict[str, Any]], None]
"""``on_stage(name, info)``: called as each step finishes (``export``, ``reward``, ``ppo``,
``evaluate``, ``decision``), for a command line's progress lines."""


@dataclass
class FeedbackLoopResult:
    """What one run of the loop did, and why."""

    promoted: bool
    reason: str
    comparison: PairedComparison
    pairs: int
    output_dir: Path
    serving_adapter: Path
    current_adapter: str
    candidate_adapter: Path
    version: Path | None
    card: dict[str, Any] = field(repr=False)
    repaired: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what a command line prints at the end."""
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "scores": self.comparison.as_dict(),
            "pairs": self.pairs,
            "current_adapter": self.current_adapter,
            "candidate_adapter": str(self.candidate_adapter),
            "serving_adapter": str(self.serving_adapter),
            "version": str(self.version) if self.version else None,
            "run": str(self.output_dir),
            "repaired": self.repaired,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def as_loop_config(
    config: FeedbackLoopConfig | Mapping[str, Any] | str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
) -> FeedbackLoopConfig:
    """A validated config from a config object, a mapping or a YAML file path."""
    if isinstance(config, FeedbackLoopConfig):
        loaded = config
    elif isinstance(config, Mapping):
        loaded = validate_config(FeedbackLoopConfig, dict(config), "feedback loop config")
    else:
        loaded = load_config(FeedbackLoopConfig, config)
    if output_dir is not None:
        loaded = override(loaded, {"output_dir": Path(output_dir)})
    return loaded


def current_adapter(config: FeedbackLoopConfig) -> CurrentAdapter:
    """The adapter the serving folder holds, else ``serving.initial_adapter``, else none."""
    serving = config.serving.adapter_dir
    live = live_version(serving)
    if live is not None:
        return CurrentAdapter(str(live), str(serving), read_card(live))
    if serving.is_symlink():
        raise FeedbackLoopError(
            f"{serving} links to {serving.readlink()}, which does not exist: restore that "
            f"version in {serving.name}.versions/ or remove the link"
        )
    initial = config.serving.initial_adapter
    if initial is None or initial.strip().lower() in ("", "none"):
        return CurrentAdapter(None, "none (the base model)")
    from ragkit.generation.adapters import packaged_adapter_name, resolve_adapter

    name = packaged_adapter_name(initial, None if config.model == "default" else config.model)
    return CurrentAdapter(str(resolve_adapter(name)), name)


def reward_job_config(config: FeedbackLoopConfig, pairs: Path, out: Path) -> RewardJobConfig:
    """The reward section with the loop's data, backbone default and output folder."""
    from alignment.reward_training import exported_pairs_data

    data = config.reward.model_dump()
    data["model"]["name_or_path"] = data["model"]["name_or_path"] or config.model
    data["data"].update(exported_pairs_data(pairs))
    data["output_dir"] = out
    return validate_config(RewardJobConfig, data, "feedback loop: reward")


def ppo_job_config(
    config: FeedbackLoopConfig, prompts: Path, reward_model: Path, adapter: str | None, out: Path
) -> PPOJobConfig:
    """The PPO section with the loop's model, adapter, reward model, prompts and folder.

    Unless the section says otherwise, rollouts decode as the served model answers: grounded
    (span-constrained, with its abstention bias) when the answering profile is grounded and
    the prompt format is the profile's own.
    """
    data = config.ppo.model_dump()
    chosen = config.ppo.model_fields_set
    if "decoding" not in chosen:
        from ragkit.rag.profiles import answering_profile

        profile = answering_profile(config.model)  # "default" included
        served_format = config.prompt_format in (None, profile.template)
        if profile.decoding == "grounded" and served_format:
            data["decoding"] = "grounded"
            if "abstain_bias" not in chosen:
                data["abstain_bias"] = profile.abstain_bias
    data["reward"] = {"model_dir": reward_model}
    data["data"].update(path=prompts, format="prompts", prompt_field="prompt")
    data["policy"]["name_or_path"] = config.model
    data["policy_adapter"] = adapter
    data["output_dir"] = out
    return validate_config(PPOJobConfig, data, "feedback loop: ppo")


def run_feedback_loop(
    feedback_db: str | os.PathLike[str],
    config: FeedbackLoopConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    evaluate: EvaluateFn | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    on_stage: Stage | None = None,
    resume: bool = False,
) -> FeedbackLoopResult:
    """Run the loop once on ``feedback_db``; see the module docstring for the steps.

    ``config``: a :class:`FeedbackLoopConfig`, its mapping, or a YAML file path.
    ``evaluate(adapter) -> per-question scores`` replaces the default evaluation
    (:class:`AnswerScoreEvaluator` over ``config.evaluation``). ``output_dir`` overrides
    ``config.output_dir``. ``resume``: go on with the run in ``output_dir`` — its finished
    stages are taken from ``stages.json`` (:mod:`alignment.feedback_loop.stages`), the first
    unfinished one resumes from its job's last checkpoint. Raises a one-line
    :class:`FeedbackLoopError` for bad input (missing store, too few pairs, feedback of another
    model or prompt format, a resume with another config); a candidate that does not win is
    not an error: the result says ``promoted=False`` and why.
    """
    config = as_loop_config(config, output_dir)
    started = _now()
    db = Path(feedback_db)
    try:
        check_existing_store(db)  # before any stage runs
    except FeedbackError as exc:
        raise FeedbackLoopError(str(exc)) from None
    out = config.output_dir
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)

    def stage(name: str, info: dict[str, Any], reused: bool = False) -> None:
        info = {**info, "resumed": True} if reused else info
        logger.info("feedback loop: %s %s", name, json.dumps(info, default=str))
        if on_stage is not None:
            on_stage(name, info)

    serving = config.serving.adapter_dir
    repaired = recover_serving_adapter(serving)
    if repaired:
        logger.warning("feedback loop: %s", repaired)
    serving_now = current_adapter(config)
    log = StageLog.begin(
        out,
        config=config,
        run_id=uuid.uuid4().hex,
        started=started,
        parent=serving_now,
        resume=resume,
    )
    current = log.parent  # a resumed run keeps the baseline it started with
    already_promoted = _promoted_by(log, serving)
    if already_promoted is None and serving_now.ref != current.ref:
        raise FeedbackLoopError(
            f"--resume: the serving adapter changed since this run started ({current.ref} "
            f"then, {serving_now.ref} now); start a new run without --resume"
        )
    prompt_format = config.prompt_format or default_prompt_format(config.model)
    render = ServedPromptRenderer(config.model, prompt_format)
    evaluator: EvaluateFn = evaluate or AnswerScoreEvaluator(config.evaluation, config.model)

    exported = log.done("export")
    if exported is not None:
        if Path(exported["db"]) != db.resolve():
            raise FeedbackLoopError(
                f"--resume: this run exported its pairs from {exported['db']}, not "
                f"{db.resolve()}; resume it with that store, or run without --resume to start over"
            )
        pairs = reload_loop_pairs(
            out / PAIRS_FILE, exported["counts"], exported["sha256"], db=Path(exported["db"])
        )
    else:
        pairs = export_loop_pairs(
            db,
            out / PAIRS_FILE,
            model=config.model,
            prompt_format=prompt_format,
            render=render,
            min_pairs=config.feedback.min_pairs,
            allow_unrecorded_format=config.feedback.allow_unrecorded_format,
        )
        log.finish("export", {"counts": pairs.counts, "sha256": pairs.sha256, "db": db.resolve()})
    stage(
        "export", {"pairs": len(pairs.pairs), "prompts": len(pairs.prompts)}, exported is not None
    )

    reward_config = reward_job_config(config, pairs.path, out / "reward")
    trained = log.done("reward")
    if trained is not None:
        reward = RewardStage.of(trained)
    else:
        from alignment.reward_training import train_reward_model

        # a reward job killed before its first checkpoint starts afresh (it refuses a resume
        # with nothing to resume from)
        checkpointed = latest_checkpoint(reward_config.output_dir) is not None
        job = train_reward_model(reward_config, resume=resume and checkpointed)
        reward = RewardStage.of(job)
        log.finish("reward", reward)
    stage(
        "reward",
        {"validation": reward.validation, "model": str(reward.model_dir)},
        trained is not None,
    )

    prompts = write_prompts(pairs.prompts, out / PROMPTS_FILE, pairs.passages)
    ppo_config = ppo_job_config(config, prompts, reward.model_dir, current.ref, out / "ppo")
    tuned = log.done("ppo")
    if tuned is not None:
        ppo = PPOStage.of(tuned)
    else:
        from alignment.ppo.job import train_ppo

        run = train_ppo(ppo_config, resume=resume)
        if run.adapter_dir is None:  # pragma: no cover - the loop's PPO policy is always LoRA
            raise FeedbackLoopError("the PPO job saved no adapter")
        ppo = PPOStage.of(run)
        log.finish("ppo", ppo)
    stage("ppo", {"updates": ppo.updates, "heldout_end": ppo.heldout_end}, tuned is not None)
    probe = inherit_probe(current.ref, ppo.adapter_dir)

    scored = log.done("evaluate")
    if scored is not None:
        current_scores = [float(s) for s in scored["current"]]
        candidate_scores = [float(s) for s in scored["candidate"]]
    else:
        current_scores = [float(s) for s in evaluator(current.ref)]
        candidate_scores = [float(s) for s in evaluator(str(ppo.adapter_dir))]
        log.finish("evaluate", {"current": current_scores, "candidate": candidate_scores})
    rule = config.promotion
    comparison = paired_bootstrap(
        candidate_scores,
        current_scores,
        samples=rule.bootstrap_samples,
        confidence=rule.confidence,
        seed=rule.seed,
    )
    write_json(
        out / EVALUATION_FILE,
        {
            "comparison": comparison.as_dict(),
            "current": current_scores,
            "candidate": candidate_scores,
        },
    )
    stage("evaluate", comparison.as_dict(), scored is not None)

    won = comparison.wins(rule.min_gain)
    bound = f"{100 * rule.confidence:g}% interval's lower end {comparison.low:+.4f}"
    if won:
        reason = f"promoted: {comparison.describe()}; the {bound} exceeds {rule.min_gain:+g}"
    else:
        reason = (
            f"kept the current model ({current.label}): {comparison.describe()}; the {bound} "
            f"does not exceed {rule.min_gain:+g}"
        )
    version_name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    card: dict[str, Any] = {
        "format_version": CARD_FORMAT,
        "kind": "ragkit feedback-loop LoRA adapter",
        "version": version_name if won else None,
        "decision": "promoted" if won else "kept",
        "reason": reason,
        "run": {"id": log.run_id, "folder": str(out)},
        "base_model": config.model,
        "prompt_format": prompt_format,
        "parent": {
            "adapter": current.label,
            "folder": current.ref,
            "version": (current.card or {}).get("version"),
        },
        "data": pairs.provenance(db),
        "reward_model": {
            "folder": str(reward.model_dir),
            "train_pairs": reward.train_pairs,
            "validation_pairs": reward.validation_pairs,
            "validation": reward.validation,
            "normalisation_bias": reward.normalisation_bias,
        },
        "ppo": {
            "folder": str(ppo.output_dir),
            "answerability_probe": probe,
            "updates": ppo.updates,
            "train_prompts": ppo.train_prompts,
            "heldout_prompts": ppo.heldout_prompts,
            "heldout_start": ppo.heldout_start,
            "heldout_end": ppo.heldout_end,
            "last_metrics": ppo.last_metrics,
        },
        "evaluation": {
            "function": getattr(evaluator, "__name__", type(evaluator).__name__),
            "scores": comparison.as_dict(),
            "min_gain": rule.min_gain,
            "rule": "promote when the lower end of the paired-bootstrap interval of the mean "
            "per-question gain exceeds min_gain",
        },
        "configs": {
            "loop": config.model_dump(mode="json"),
            "reward": reward_config.model_dump(mode="json"),
            "ppo": ppo_config.model_dump(mode="json"),
        },
        "timestamps": {"started": log.started, "decided": _now()},
    }
    if repaired:
        card["repaired"] = repaired

    promotion = None
    if already_promoted is not None:  # killed after promoting, before decision.json
        card = read_card(already_promoted) or card
        promotion = Promotion(serving, already_promoted, None)
    elif won:
        readme = _readme(card, config)
        promotion = promote_adapter(
            ppo.adapter_dir,
            serving,
            card,
            readme=readme,
            keep_versions=config.serving.keep_versions,
            version_name=version_name,
        )
    write_json(
        out / DECISION_FILE,
        {**card, "serving_version": str(promotion.version) if promotion else None},
    )
    stage("decision", {"promoted": won, "reason": reason})
    return FeedbackLoopResult(
        promoted=won,
        reason=reason,
        comparison=comparison,
        pairs=len(pairs.pairs),
        output_dir=out,
        serving_adapter=serving,
        current_adapter=current.label,
        candidate_adapter=ppo.adapter_dir,
        version=promotion.version if promotion else None,
        card=card,
        repaired=repaired,
    )


def inherit_probe(parent: str | None, candidate: Path) -> str | None:
    """Give the PPO candidate its parent's answerability probe (the file, not a refit).

    Why: a probe belongs to an adapter's folder, and PPO writes a fresh one, so a promoted
    candidate would silently serve without the abstention veto its parent had. PPO under a KL
    penalty keeps the policy's hidden states near the parent's, and the evaluation then scores
    the candidate with the probe, as it would be served. Returns what the card records.
    """
    if parent is None:
        return None
    from ragkit.atomic import atomic_write_bytes
    from ragkit.generation.answerability import PROBE_FILE, AnswerabilityProbe

    if AnswerabilityProbe.load(parent) is None:  # also refuses a probe file it cannot read
        return None
    # the file's bytes, not a re-serialisation (safetensors does not fix its header's order)
    atomic_write_bytes(candidate / PROBE_FILE, (Path(parent) / PROBE_FILE).read_bytes())
    return f"inherited from the parent ({parent}), not refitted"


def _promoted_by(log: StageLog, serving: Path) -> Path | None:
    """The serving version this run promoted already (a resume after a kill between the
    promotion and ``decision.json``), else None."""
    live = live_version(serving)
    card = read_card(live) or {}
    run = card.get("run")
    if live is not None and isinstance(run, dict) and run.get("id") == log.run_id:
        return live
    return None


def _readme(card: dict[str, Any], config: FeedbackLoopConfig) -> str:
    scores = card["evaluation"]["scores"]
    return model_card(
        title=f"ragkit feedback-loop adapter {card['version']}",
        summary="A LoRA adapter trained by `run_feedback_loop`: a reward model on the served "
        "feedback, then PPO of the parent adapter against it; promoted because it beat the parent "
        "on held-out questions by more than the paired-bootstrap noise. Full provenance: "
        "`model_card.json`.",
        base_model=config.model,
        data=[
            f"{card['data']['pairs']} preference pairs from {card['data']['feedback_db']}",
            f"prompt format {card['prompt_format']}",
            f"parent adapter: {card['parent']['adapter']}",
        ],
        training={
            "reward model validation accuracy": card["reward_model"]["validation"].get(
                "accuracy", float("nan")
            ),
            "PPO updates": card["ppo"]["updates"],
        },
        validation={
            "questions": scores["questions"],
            "parent score": scores["current"],
            "candidate score": scores["candidate"],
            "gain": scores["gain"],
            "interval low": scores["low"],
            "interval high": scores["high"],
        },
        config_yaml=dump_config(config),
    )
