"""InstructGPT-style PPO for the generator (issue 6): rollouts, rewards, GAE, clipped losses.

Also PPO-ptx, stop strings, gradient checkpointing, bf16 autocast, learning-rate schedules and
``accelerate`` integration. See ``docs/ppo.md`` for the design and what is not built yet.
"""

from __future__ import annotations

from alignment.ppo.advantages import (
    gae,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
)
from alignment.ppo.config import PPOConfig
from alignment.ppo.constrained import ConstraintFn, ConstraintTrace, grounded_constraints
from alignment.ppo.engines import (
    RolloutEngine,
    TransformersRolloutEngine,
    VLLMRolloutEngine,
    policy_weights,
)
from alignment.ppo.job import PPOResult, train_ppo
from alignment.ppo.job_config import PPOJobConfig, PtxSettings, RolloutSettings
from alignment.ppo.kl import AdaptiveKLController, FixedKLController, make_kl_controller
from alignment.ppo.logprobs import entropy_from_logits, response_forward, selected_logprobs
from alignment.ppo.losses import PolicyLossOutput, clipped_policy_loss, clipped_value_loss
from alignment.ppo.model import PolicyAndValue, PolicyValueOutput
from alignment.ppo.ptx import PtxData
from alignment.ppo.rollout import (
    RewardFn,
    Rollout,
    StopStringCriterion,
    cut_at_stop,
    encode_prompts,
    engine_rollout,
    finish_rollout,
    first_stop_index,
    sample_responses,
    score_rollout,
    truncate_after_eos,
    truncate_responses,
)
from alignment.ppo.schedule import lr_factor, make_lr_scheduler
from alignment.ppo.trainer import PPOTrainer, make_accelerator
from alignment.ppo.value import ValueModel, zero_value_head
from alignment.ppo.vllm_worker import RolloutWorkerExtension

__all__ = [
    "AdaptiveKLController",
    "ConstraintFn",
    "ConstraintTrace",
    "FixedKLController",
    "PPOConfig",
    "PPOJobConfig",
    "PPOResult",
    "PPOTrainer",
    "PolicyAndValue",
    "PolicyLossOutput",
    "PolicyValueOutput",
    "PtxData",
    "PtxSettings",
    "RewardFn",
    "Rollout",
    "RolloutEngine",
    "RolloutSettings",
    "RolloutWorkerExtension",
    "StopStringCriterion",
    "TransformersRolloutEngine",
    "VLLMRolloutEngine",
    "ValueModel",
    "clipped_policy_loss",
    "clipped_value_loss",
    "cut_at_stop",
    "encode_prompts",
    "engine_rollout",
    "entropy_from_logits",
    "finish_rollout",
    "first_stop_index",
    "gae",
    "grounded_constraints",
    "lr_factor",
    "make_accelerator",
    "make_kl_controller",
    "make_lr_scheduler",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "per_token_rewards",
    "policy_weights",
    "response_forward",
    "sample_responses",
    "score_rollout",
    "selected_logprobs",
    "train_ppo",
    "truncate_after_eos",
    "truncate_responses",
    "zero_value_head",
]
