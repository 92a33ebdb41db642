"""The PPO job's configuration: ``ragkit align ppo --config ppo.yaml`` (see :mod:`.job`).

:class:`PPOJobConfig` holds the job's sections: the policy (and an optional LoRA adapter to start
from), the reward, the prompt data, the trainer's :class:`~alignment.ppo.PPOConfig`, PPO-ptx
demonstrations, the rollout engine and the bookkeeping (checkpoints, samples, evaluation).
:func:`ppo_job_fingerprint` digests the settings that decide the trajectory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alignment.checkpoint import job_fingerprint
from alignment.config import (
    DEFAULT_HH_DATA,
    DemonstrationDataSettings,
    ModelSettings,
    StrictSettings,
)
from alignment.ppo.config import PPOConfig

_RULE = re.compile(r"^(count:\S+|length)$")


class RewardSettings(StrictSettings):
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


class PromptDataSettings(StrictSettings):
    """Prompts for rollouts.

    ``format``: ``hh`` (Anthropic HH lines: the prompt is the dialogue up to the last
    ``"\\n\\nAssistant:"``), ``pairs`` (the ``prompt_field`` of prompt/chosen/rejected lines) or
    ``prompts`` (any JSONL with a ``prompt_field`` string). ``limit`` caps the lines read;
    ``heldout_fraction`` of the distinct prompts (at most ``heldout_max``) are kept out of
    training and scored at the start and the end. ``passages_field`` (format ``prompts``): the
    list of passage texts each prompt shows, read when ``decoding: grounded`` needs them.
    """

    path: Path = DEFAULT_HH_DATA
    format: Literal["hh", "pairs", "prompts"] = "hh"
    prompt_field: str = "prompt"
    passages_field: str = "passages"
    limit: int | None = Field(None, ge=2)
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    heldout_max: int = Field(64, ge=1)
    split_seed: int = 0


class PtxSettings(StrictSettings):
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


class RolloutSettings(StrictSettings):
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


class PPOJobConfig(StrictSettings):
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
    ``ppo.ptx_coef > 0``, ignored otherwise). ``decoding``: ``free`` (plain sampling) or
    ``grounded`` — each rollout answers under the span constraint ``ragkit ask`` serves with
    (a verbatim span of that prompt's passages or the abstention phrase, the abstention's first
    token biased by ``abstain_bias``; at most ``ppo.response_length`` tokens; a newline ends
    it), and PPO trains that constrained policy (:mod:`alignment.ppo.constrained`). Needs
    ``data.format: prompts`` with passages, and in-process sampling.
    """

    policy: ModelSettings = Field(default_factory=ModelSettings)
    policy_adapter: Path | None = None
    reward: RewardSettings
    data: PromptDataSettings = Field(default_factory=PromptDataSettings)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    ptx: PtxSettings | None = None
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    decoding: Literal["free", "grounded"] = "free"
    abstain_bias: float = 0.0
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
        if self.decoding == "grounded":
            if self.data.format != "prompts":
                raise ValueError(
                    "decoding: grounded needs data.format: prompts (each prompt with its passages)"
                )
            if self.rollout.engine != "policy":
                raise ValueError(
                    f"decoding: grounded samples in process: rollout.engine {self.rollout.engine!r} "
                    "cannot apply the span constraint (use engine: policy)"
                )
        self.ppo.check_schedule(self.updates)
        return self


def ppo_job_fingerprint(config: PPOJobConfig) -> str:
    """Digest of the settings that decide the trajectory (bookkeeping excluded)."""
    data = config.model_dump(mode="json")
    # settings added later stay out of the digest at their defaults (older runs still resume)
    if data["decoding"] == "free":
        del data["decoding"], data["abstain_bias"]
    if data["data"]["passages_field"] == "passages":
        del data["data"]["passages_field"]
    rollout = data.pop("rollout")
    if rollout["engine"] != "policy":  # engine tuning (memory share...) is not in the digest
        data["rollout"] = {"engine": rollout["engine"], "dtype": rollout["dtype"]}
    return job_fingerprint(data)
