"""The models the PPO job builds from its config: policy, reference, value function, reward and
rollout engine (the trainer, :class:`~alignment.ppo.PPOTrainer`, takes them as they are).

* ``policy_adapter``: PPO of an existing LoRA adapter (e.g. the one ``ragkit serve`` uses).
  The policy is the base model with that adapter, trainable; the reference is a frozen copy of
  the base with the adapter merged (the policy as it was before PPO), not the bare base.
* A rule reward (``count:WORD``, ``length``) for tests and smoke runs, or a trained reward-model
  folder.
"""

from __future__ import annotations

import copy
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
from alignment.config import ModelSettings
from alignment.job_setup import load_trainable_adapter, prepare_trainable
from alignment.ppo.job_config import PPOJobConfig, RewardSettings, RolloutSettings
from alignment.ppo.rollout import RewardFn
from alignment.ppo.value import ValueModel, zero_value_head
from alignment.reward_model import RewardModel
from alignment.tokenization import ensure_pad_token


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


def load_reward(settings: RewardSettings, device: torch.device) -> RewardFn | RewardModel:
    """The trained reward model of ``settings.model_dir`` on ``device``, or the named rule."""
    if settings.model_dir is not None:
        return RewardModel.load(settings.model_dir, device=device)
    assert settings.rule is not None
    return rule_reward(settings.rule)


def rule_reward(rule: str) -> RewardFn:
    """The named rule as ``reward(prompts, responses) -> tensor`` (see :class:`RewardSettings`)."""
    if rule == "length":
        return lambda prompts, responses: torch.tensor([float(len(r.split())) for r in responses])
    word = rule.split(":", 1)[1]
    return lambda prompts, responses: torch.tensor(
        [float(r.split().count(word)) for r in responses]
    )


def load_policy(
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
    policy = load_trainable_adapter(lm, adapter, "policy_adapter")
    reference = merged_copy(policy)  # the policy before PPO; the trainer freezes it
    return policy, backbone, tokenizer, name, reference


def value_model_for(
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
