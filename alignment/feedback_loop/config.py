"""The feedback loop's configuration: one strict pydantic model, loadable from YAML.

The reward and PPO sections are the reward and PPO jobs' own configurations, so every setting
documented for ``ragkit align reward`` and ``ragkit align ppo`` applies; the loop fills in what
it owns (which data, which model, where the runs go) and refuses a section that tries to set
those itself, rather than silently overriding it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from alignment.config import (
    ModelSettings,
    PreferenceDataSettings,
    RewardJobConfig,
    StrictSettings,
    TrainingSettings,
)
from alignment.ppo.job_config import PPOJobConfig, PromptDataSettings, RewardSettings


class ServingSettings(StrictSettings):
    """Where the served adapter lives.

    ``adapter_dir``: the folder ``ragkit serve --adapter`` loads. A promotion turns it into a
    symbolic link to ``<adapter_dir>.versions/<version>/`` and swaps the link atomically; the
    versions before stay there (``keep_versions`` of them, the live one never removed).
    ``initial_adapter``: the current adapter while ``adapter_dir`` does not exist yet (a
    packaged name such as ``grounded-qa``, or a peft folder); None with no ``adapter_dir``
    means the bare base model, and PPO then trains a fresh LoRA (``ppo.policy.lora``).
    """

    adapter_dir: Path
    initial_adapter: str | None = None
    keep_versions: int = Field(5, ge=1)


class FeedbackSettings(StrictSettings):
    """Which feedback the loop accepts.

    ``min_pairs``: fewer preference pairs than this is an error (a reward model on a handful of
    pairs learns noise). ``allow_unrecorded_format``: accept answers recorded without their
    prompt format (feedback stores written before schema version 2); their model is still
    checked.
    """

    min_pairs: int = Field(64, ge=2)
    allow_unrecorded_format: bool = False


class EvaluationSettings(StrictSettings):
    """Held-out questions on which the candidate and the current adapter are compared.

    Used by the default evaluation (:class:`alignment.feedback_loop.AnswerScoreEvaluator`):
    ``questions`` (SQuAD JSON or JSONL, as ``ragkit eval`` reads), answered through the
    pipeline ``ragkit ask`` builds over ``index`` with ``k`` passages from ``retriever``. The
    score of a question is the token F1 of the answer (0 when it abstains) for an answerable
    question, 1 for an abstention on an unanswerable one (else 0). ``limit``: the first N
    questions only. Ignored when the caller passes its own evaluation function.
    """

    questions: Path | None = None
    index: str | None = None
    k: int = Field(4, ge=1)
    retriever: Literal["dense", "bm25", "hybrid"] = "hybrid"
    limit: int | None = Field(None, ge=2)
    batch_size: int = Field(8, ge=1)


class PromotionSettings(StrictSettings):
    """The promotion rule: promote when the lower end of the paired-bootstrap interval of the
    mean per-question gain (candidate − current) exceeds ``min_gain``."""

    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(10_000, ge=100)
    seed: int = 0
    min_gain: float = 0.0


class LoopPPOSettings(PPOJobConfig):
    """``ragkit align ppo``'s configuration, less what the loop sets.

    The loop sets ``reward`` (the reward model it just trained), ``data.path``/``format``/
    ``prompt_field`` (the prompts of the exported pairs), ``policy.name_or_path`` (the loop's
    ``model``), ``policy_adapter`` (the current adapter) and ``output_dir``. ``policy.finetune``
    must be ``lora``: what is promoted is an adapter.
    """

    reward: RewardSettings | None = None  # type: ignore[assignment]
    data: PromptDataSettings = Field(default_factory=lambda: PromptDataSettings(format="prompts"))
    policy: ModelSettings = Field(default_factory=lambda: ModelSettings(finetune="lora"))

    @model_validator(mode="after")
    def _loop_owned(self) -> LoopPPOSettings:
        owned = {
            "reward": self.reward is not None,
            "policy_adapter": self.policy_adapter is not None,
            "policy.name_or_path": self.policy.name_or_path is not None,
        }
        set_here = [name for name, given in owned.items() if given]
        if set_here:
            raise ValueError(f"{', '.join(set_here)} is set by the feedback loop; remove it")
        if self.policy.finetune != "lora":
            raise ValueError("policy.finetune must be lora: the loop promotes a LoRA adapter")
        return self


def _reward_defaults() -> RewardJobConfig:
    return RewardJobConfig(
        data=PreferenceDataSettings(format="fields", validation_fraction=0.2),
        training=TrainingSettings(learning_rate=1e-5, batch_size=8),
    )


class FeedbackLoopConfig(StrictSettings):
    """``ragkit align loop``: feedback → reward model → PPO → evaluation → promotion.

    ``model``: the served generator (``default``, ``gemma3-270m``, ``smollm2``, a hub id or a
    folder, as ``ragkit serve -g`` takes it): the PPO policy's base, the reward model's
    backbone unless ``reward.model.name_or_path`` is set, and the model the feedback must come
    from. ``prompt_format``: the prompt template answers were generated with; None = the
    model's answering profile (what ``ragkit serve`` uses by default). The rollouts and the
    reward model see prompts in this format, rebuilt from the stored passages.

    ``reward``: ``ragkit align reward``'s configuration; the loop sets ``data.path`` and the
    field names (the export), and ``output_dir``; ``data.validation_fraction`` /
    ``split_seed`` / ``limit`` are kept. ``output_dir``: the run folder (``feedback_pairs.jsonl``,
    ``reward/``, ``ppo/``, ``evaluation.json``, ``decision.json``).
    """

    model: str = "default"
    prompt_format: str | None = None
    serving: ServingSettings
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    reward: RewardJobConfig = Field(default_factory=_reward_defaults)
    ppo: LoopPPOSettings = Field(default_factory=LoopPPOSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    output_dir: Path = Path("runs/feedback-loop")

    @model_validator(mode="after")
    def _check(self) -> FeedbackLoopConfig:
        if not self.model.strip():
            raise ValueError("model must name the served generator")
        if self.reward.data.validation_path is not None:
            raise ValueError(
                "reward.data.validation_path: the loop validates on a split of the feedback "
                "pairs (reward.data.validation_fraction)"
            )
        return self
