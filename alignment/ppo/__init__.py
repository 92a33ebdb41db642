"""InstructGPT-style PPO for the generator (issue 6): rollouts, rewards, GAE, clipped losses.

See ``docs/ppo.md`` for the design and what is not built yet.
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
from alignment.ppo.job import PPOJobConfig, PPOResult, train_ppo
from alignment.ppo.kl import AdaptiveKLController, FixedKLController, make_kl_controller
from alignment.ppo.logprobs import entropy_from_logits, response_forward, selected_logprobs
from alignment.ppo.losses import PolicyLossOutput, clipped_policy_loss, clipped_value_loss
from alignment.ppo.rollout import (
    RewardFn,
    Rollout,
    encode_prompts,
    sample_responses,
    score_rollout,
    truncate_after_eos,
)
from alignment.ppo.trainer import PPOTrainer
from alignment.ppo.value import ValueModel, zero_value_head

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "PPOConfig",
    "PPOJobConfig",
    "PPOResult",
    "PPOTrainer",
    "PolicyLossOutput",
    "RewardFn",
    "Rollout",
    "ValueModel",
    "clipped_policy_loss",
    "clipped_value_loss",
    "encode_prompts",
    "entropy_from_logits",
    "gae",
    "make_kl_controller",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "per_token_rewards",
    "response_forward",
    "sample_responses",
    "score_rollout",
    "selected_logprobs",
    "train_ppo",
    "truncate_after_eos",
    "zero_value_head",
]
