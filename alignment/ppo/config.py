"""PPO settings: one pydantic model, loadable from YAML, unknown keys rejected.

Defaults follow the published recipes (InstructGPT, Stiennon et al., "The N+ implementation
details of RLHF with PPO"): γ = 1, λ = 0.95, ε = 0.2, value clip 0.2, value coefficient 0.1,
4 PPO epochs, AdamW eps 1e-5, sampling at T = 0.7 with top-k/top-p off. The KL coefficient β is
fixed unless ``adaptive_kl``; the InstructGPT adaptive controller starts at 0.15 (set
``kl_coef: 0.15`` with ``adaptive_kl: true`` to reproduce it).

Every option that is off by default (PPO-ptx, stop strings, gradient checkpointing, bf16, a
decaying learning rate) leaves the computation exactly as it was without it, so enabling one
changes one thing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class PPOConfig(BaseModel):
    """Everything that decides a PPO update (see the module docstring for where defaults come from).

    ``batch_size`` rollouts per update (per process under ``accelerate launch``) are split into
    ``mini_batches`` optimiser steps per PPO epoch, each accumulated over ``grad_accumulation``
    micro-batches.

    * ``ptx_coef`` (γ of InstructGPT's PPO-ptx): ``loss = ppo_loss + γ · lm_loss`` where
      ``lm_loss`` is the mean negative log-likelihood of the response tokens of one minibatch
      of demonstrations per PPO minibatch (the demonstrations are given to the trainer). 0 = off,
      and then no demonstration batch is ever drawn.
    * ``stop_strings``: a response also ends at the first token whose decoded text completes
      one of these strings; its tokens stay in the response (the score sits on the last one),
      the text given to the reward stops before the string.
    * ``tokens_per_pass``: each micro-batch runs as forward/backward passes of rows of similar
      length, at most this many padded tokens each (``rows × longest``), with the prompt
      padding trimmed (:mod:`alignment.ppo.passes`). The gradient is the micro-batch's, up to
      float rounding; less padding is computed and fewer activations are alive at once.
      ``null`` = one pass per micro-batch. Larger values suit GPUs; under DeepSpeed (fixed
      accumulation boundaries) a micro-batch is always one pass.
    * ``trim_cpu_memory``: on the CPU, return freed memory to the OS after every pass
      (glibc ``malloc_trim``, :mod:`alignment.ppo.memory`); passes of varying sizes otherwise
      leave gigabytes of free but unreturned heap. No effect on results.
    * ``gradient_checkpointing``: recompute activations of the policy (and value model) in the
      backward pass during the PPO epochs; rollouts still use the KV cache.
    * ``bf16``: forward passes and generation under ``torch.autocast(bfloat16)``; log-probs,
      losses and optimiser state stay float32. Meant for CUDA; allowed on the CPU with a warning.
    * ``lr_schedule``: ``constant`` or ``linear`` decay to 0 over all optimiser steps of the run,
      after ``warmup_steps`` optimiser steps of linear warm-up (both per optimiser step).
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1)
    mini_batches: int = Field(1, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    ppo_epochs: int = Field(4, ge=1)
    response_length: int = Field(32, ge=1)
    max_prompt_length: int = Field(512, ge=1)
    temperature: float = Field(0.7, gt=0.0)
    stop_strings: list[str] = Field(default_factory=list)

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
    ptx_coef: float = Field(0.0, ge=0.0)

    value: Literal["model", "head"] = "model"
    learning_rate: float = Field(3e-6, gt=0.0)
    adam_eps: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    tokens_per_pass: int | None = Field(512, ge=1)
    trim_cpu_memory: bool = True
    gradient_checkpointing: bool = False
    bf16: bool = False
    seed: int = 0

    @field_validator("stop_strings")
    @classmethod
    def _non_empty_stops(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("a stop string must not be empty (it would end every response)")
        return value

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

    @property
    def steps_per_update(self) -> int:
        """Optimiser steps in one update (what the learning-rate schedule counts)."""
        return self.ppo_epochs * self.mini_batches

    def check_schedule(self, total_updates: int | None) -> int | None:
        """Total optimiser steps of the run, checked against the schedule; raises ``ValueError``.

        A linear decay needs to know where it ends (``total_updates``) and must leave at least
        one step after the warm-up.
        """
        if total_updates is None:
            if self.lr_schedule == "linear":
                raise ValueError(
                    "lr_schedule 'linear' decays over the whole run: the trainer needs "
                    "total_updates (the job passes its 'updates')"
                )
            return None
        if total_updates < 1:
            raise ValueError(f"total_updates must be at least 1, got {total_updates}")
        total = total_updates * self.steps_per_update
        if self.lr_schedule == "linear" and self.warmup_steps >= total:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} leaves nothing to decay: the run has {total} "
                f"optimiser steps (updates × ppo_epochs × mini_batches)"
            )
        return total
