"""PPO settings: one pydantic model, loadable from YAML, unknown keys rejected.

Defaults follow the published recipes (InstructGPT, Stiennon et al., "The N+ implementation
details of RLHF with PPO"): γ = 1, λ = 0.95, ε = 0.2, value clip 0.2, value coefficient 0.1,
4 PPO epochs, AdamW eps 1e-5, sampling at T = 0.7 with top-k/top-p off. The KL coefficient β is
fixed unless ``adaptive_kl``; the InstructGPT adaptive controller starts at 0.15 (set
``kl_coef: 0.15`` with ``adaptive_kl: true`` to reproduce it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PPOConfig(BaseModel):
    """Everything that decides a PPO update (see the module docstring for where defaults come from).

    ``batch_size`` rollouts per update are split into ``mini_batches`` optimiser steps per PPO
    epoch, each accumulated over ``grad_accumulation`` micro-batches.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1)
    mini_batches: int = Field(1, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    ppo_epochs: int = Field(4, ge=1)
    response_length: int = Field(32, ge=1)
    max_prompt_length: int = Field(512, ge=1)
    temperature: float = Field(0.7, gt=0.0)

    kl_coef: float = Field(0.05, ge=0.0)
    adaptive_kl: bool = False
    kl_target: float = Field(6.0, gt=0.0)
    kl_horizon: int = Field(10_000, ge=1)

    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(0.95, ge=0.0, le=1.0)
    clip_range: float = Field(0.2, gt=0.0)
    clip_range_value: float = Field(0.2, gt=0.0)
    vf_coef: float = Field(0.1, ge=0.0)
    whiten_rewards: bool = False
    no_eos_penalty: float | None = Field(None, ge=0.0)

    value: Literal["model", "head"] = "model"
    learning_rate: float = Field(3e-6, gt=0.0)
    adam_eps: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    warmup_updates: int = Field(0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _divisible(self) -> PPOConfig:
        per_step = self.mini_batches * self.grad_accumulation
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by mini_batches × "
                f"grad_accumulation = {per_step}"
            )
        return self

    @property
    def mini_batch_size(self) -> int:
        """Rollouts per optimiser step."""
        return self.batch_size // self.mini_batches

    @property
    def micro_batch_size(self) -> int:
        """Rollouts per forward/backward pass."""
        return self.mini_batch_size // self.grad_accumulation
