"""The PPO trainer: rollout → rewards/advantages → PPO epochs × minibatches × accumulation.

``PPOTrainer.step(prompts)`` performs one update on one batch of prompts and returns its metrics.
Models:

* ``policy``: any causal LM (a peft model too). Dropout is switched off everywhere, so the
  probability ratio is exactly 1 on the first minibatch.
* ``ref_policy``: a frozen reference. ``None`` means a frozen deep copy of the policy, or — for
  a peft policy — the policy itself with its adapters disabled (no second copy in memory).
* value: ``config.value == "model"`` (default) uses ``value_model`` or, when ``None``, a copy of
  the reward model's backbone and head (``reward_fn`` must then be a :class:`RewardModel`);
  ``"head"`` puts a zero-initialised scalar head on the policy's last hidden state.
* ``reward_fn``: any ``reward(prompts, responses) -> tensor`` (a rule, a RAG-grounding check) or
  a :class:`RewardModel`, whose normalised ``score`` is then used.
* ``ptx_data``: demonstrations for PPO-ptx (needed when ``config.ptx_coef > 0``).
* ``constraint_for``: ``prompt -> TokenConstraint | None``, the token constraint each prompt is
  answered under when served (grounded span decoding); sampling, every log-prob, the KL to the
  reference and the entropy are then those of the constrained policy (:mod:`.constrained`).

One AdamW optimiser covers the policy's trainable weights and the value function; the loss is
``policy_loss + vf_coef · value_loss (+ ptx_coef · ptx_loss)``. All randomness (sampling,
minibatch shuffles) comes from torch's global RNG, seeded from ``config.seed`` (plus the process
index) when the trainer is built, so a checkpoint that stores the RNG state resumes exactly.

Distribution goes through ``accelerate``: the policy and value function are one module
(:class:`~alignment.ppo.model.PolicyAndValue`) prepared together with the optimiser, gradients
flow through ``accelerator.backward`` with synchronisation only on the last micro-batch of a
minibatch, metrics are averaged over processes, and only the main process writes checkpoint
files. On one process without a launcher every one of these is a no-op. Generation and the
no-grad passes use the unwrapped modules (ZeRO-2 keeps whole weights on every process, so
nothing needs gathering; ZeRO-3, which shards them, is refused).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.backbone import disable_dropout
from alignment.checkpoint import (
    STATE_FILE,
    check_fingerprint,
    join_optimizer_state,
    load_trainable_state,
    read_checkpoint_state,
    restore_rng,
    rng_state,
    split_optimizer_state,
    trainable_state,
)
from alignment.collate import Batch
from alignment.errors import CheckpointError
from alignment.metrics import average_over_processes
from alignment.ppo.advantages import gae, masked_mean, masked_whiten, per_token_rewards
from alignment.ppo.config import PPOConfig
from alignment.ppo.constrained import ConstraintFn, constrained
from alignment.ppo.engines import RolloutEngine, engine_seed, policy_weights
from alignment.ppo.kl import make_kl_controller
from alignment.ppo.logprobs import entropy_from_logits, response_forward, selected_logprobs
from alignment.ppo.losses import PolicyLossOutput, clipped_policy_loss, clipped_value_loss
from alignment.ppo.memory import release_free_memory
from alignment.ppo.model import PolicyAndValue, PolicyValueOutput
from alignment.ppo.passes import padded_widths, plan_passes, trim_left_padding
from alignment.ppo.ptx import PtxData, split_rows
from alignment.ppo.rollout import (
    RewardFn,
    Rollout,
    engine_rollout,
    eos_ids,
    sample_responses,
    score_rollout,
)
from alignment.ppo.schedule import make_lr_scheduler
from alignment.ppo.value import ValueModel, zero_value_head
from alignment.reward_model import RewardModel
from alignment.tokenization import ensure_pad_token
from ragkit.atomic import atomic_directory

PPO_CHECKPOINT_FORMAT = 2


@dataclass
class _PassResult:
    """What one forward/backward pass reports (losses detached)."""

    policy: PolicyLossOutput
    value_loss: float
    value_clip_fraction: float
    logprobs: torch.Tensor
    logits: torch.Tensor
    ptx_loss: float | None


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _vocab_size(model: nn.Module) -> int:
    """Width of the model's logits (the LM head's rows; the config's count as a fallback)."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    return int(getattr(model, "config").vocab_size)  # noqa: B009


def make_accelerator() -> Any:
    """The ``accelerate.Accelerator`` a trainer uses when none is given.

    Built with accelerate's defaults (the launcher decides the processes and the precision):
    passing a mixed precision here would clash with another ``Accelerator`` in the same
    process (e.g. the SFT step of ``rlhf_train.py``), and an accumulation count would linger in
    accelerate's process-wide state. The trainer sets the accumulation count for its PPO phase
    only, fills DeepSpeed's settings from its config (:func:`configure_deepspeed`) and checks the
    precision against ``bf16`` (:func:`check_accelerator`).
    """
    from accelerate import Accelerator

    return Accelerator()


def check_accelerator(accelerator: Any, config: PPOConfig) -> None:
    """Refuse launch settings the trainer cannot honour, with the reason."""
    from accelerate.utils import DistributedType

    precision = str(getattr(accelerator, "mixed_precision", "no"))
    if precision == "fp16":
        raise ValueError(
            "fp16 mixed precision needs loss scaling, which the PPO trainer does not do: "
            "launch with mixed_precision bf16 (and ppo.bf16: true) or no"
        )
    if precision == "bf16" and not config.bf16:
        raise ValueError(
            "accelerate runs with mixed_precision bf16 but ppo.bf16 is false: set ppo.bf16: true "
            "so that rollouts and training run at the same precision (else the ratio is not 1)"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = getattr(accelerator.state.deepspeed_plugin, "zero_stage", None)
        if stage == 3:
            raise ValueError(
                "DeepSpeed ZeRO-3 shards the weights, and every rollout would have to gather "
                "them for generation: not supported, use ZeRO-2 (examples/configs/"
                "accelerate_zero2.yaml)"
            )


def configure_deepspeed(accelerator: Any, config: PPOConfig) -> None:
    """Fill the DeepSpeed settings accelerate cannot infer without a dataloader; check the rest.

    accelerate sizes DeepSpeed's batch from a prepared dataloader, and PPO has none: the micro
    batch, the accumulation count and gradient clipping (which DeepSpeed applies inside its own
    step) come from ``config`` unless the accelerate/DeepSpeed config sets them, in which case
    they must agree (the loss scaling and the accumulation boundaries depend on them).
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    wanted: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.grad_accumulation,
        "gradient_clipping": config.max_grad_norm or 0.0,  # 0 = no clipping in DeepSpeed
    }
    for key, value in wanted.items():
        found = ds.get(key, "auto")
        if found == "auto":
            ds[key] = value
        elif float(found) != float(value):
            raise ValueError(
                f"the DeepSpeed config sets {key} = {found} but the PPO settings give {value}: "
                "leave it 'auto' (or unset) in the accelerate config"
            )


def check_bf16(device: torch.device) -> None:
    """bf16 autocast: fine on CUDA with bf16 support, allowed on the CPU with a warning."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ValueError("ppo.bf16: this CUDA device does not support bfloat16")
    elif device.type == "cpu":
        warnings.warn(
            "ppo.bf16 on the CPU: autocast to bfloat16 works but is slow on CPUs without native "
            "bf16 and coarser than float32; it is meant for CUDA",
            UserWarning,
            stacklevel=3,
        )
    else:
        raise ValueError(f"ppo.bf16 is supported on cuda and cpu, not {device.type}")


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on (non-reentrant) activation checkpointing of a transformers model.

    transformers checkpoints a layer only while the module is in training mode, which the
    trainer uses: training mode during the PPO epochs, eval mode (KV cache on) in rollouts.
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if callable(enable):
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return
    legacy = getattr(model, "gradient_checkpointing_enable", None)
    if not callable(legacy):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    legacy(gradient_checkpointing_kwargs={"use_reentrant": False})


class PPOTrainer:
    """InstructGPT-style PPO on a causal LM (see the module docstring for the model options).

    ``total_updates``: how many updates the run will make; needed by ``lr_schedule: linear``
    (the decay ends there) and stored in checkpoints. ``accelerator``: an
    ``accelerate.Accelerator`` (default: :func:`make_accelerator`). ``device``:
    where the models live (default: the accelerator's device).
    """

    def __init__(
        self,
        policy: nn.Module,
        ref_policy: nn.Module | None,
        value_model: ValueModel | nn.Linear | None,
        reward_fn: RewardFn | RewardModel,
        tokenizer: Any,
        config: PPOConfig,
        *,
        device: torch.device | str | None = None,
        ptx_data: PtxData | None = None,
        total_updates: int | None = None,
        accelerator: Any = None,
        rollout_engine: RolloutEngine | None = None,
        constraint_for: ConstraintFn | None = None,
    ) -> None:
        self.config = config
        if constraint_for is not None and rollout_engine is not None:
            raise ValueError(
                "constrained (grounded) rollouts sample in process: a rollout engine cannot "
                "apply a per-prompt token constraint; drop rollout_engine or the constraint"
            )
        self.constraint_for = constraint_for
        # a separate sampler (vLLM, a bf16 copy) fed with the policy's weights: .engines
        self.rollout_engine = rollout_engine
        self._engine_weights_at: int | None = None  # the update whose weights it holds
        self.total_steps = config.check_schedule(total_updates)
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        # a RewardModel's __call__ is its tensor forward; text scoring is .score (normalised)
        self.score_fn: RewardFn = (
            reward_fn.score if isinstance(reward_fn, RewardModel) else reward_fn
        )
        self.accelerator = accelerator if accelerator is not None else make_accelerator()
        acc = self.accelerator
        check_accelerator(acc, config)
        from accelerate.utils import DistributedType

        # DeepSpeed fixes the backward calls per step: one pass per micro-batch, models joint
        self._deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        self.device = torch.device(device) if device is not None else acc.device
        if acc.num_processes > 1 and self.device != acc.device:
            raise ValueError(
                f"under accelerate launch each process uses its own device ({acc.device}); "
                f"leave device unset (got {self.device})"
            )
        if config.bf16:
            check_bf16(self.device)
        if config.ptx_coef > 0 and ptx_data is None:
            raise ValueError("ptx_coef > 0 needs ptx_data (demonstrations for PPO-ptx)")
        if ptx_data is not None and ptx_data.batch_size % config.grad_accumulation:
            raise ValueError(
                f"the ptx batch size {ptx_data.batch_size} must be divisible by "
                f"grad_accumulation {config.grad_accumulation} (one slice per micro-batch)"
            )
        self.ptx_data = ptx_data
        self.ptx_batches = 0  # demonstration batches drawn so far (the ptx data position)
        # each process samples its own responses: seed the streams apart
        torch.manual_seed(config.seed + acc.process_index)

        ensure_pad_token(tokenizer, policy)
        disable_dropout(policy)
        self.policy = policy.to(self.device).eval()
        self.vocab_size = _vocab_size(self.policy)

        self.ref_policy: nn.Module | None = ref_policy
        if ref_policy is None and not _is_peft(policy):
            self.ref_policy = copy.deepcopy(policy)
        if self.ref_policy is not None:
            ensure_pad_token(tokenizer, self.ref_policy)
            disable_dropout(self.ref_policy)
            self.ref_policy.to(self.device).eval().requires_grad_(False)

        self.value_model: ValueModel | None = None
        self.value_head: nn.Linear | None = None
        if config.value == "head":
            if isinstance(value_model, ValueModel):
                raise ValueError("config.value is 'head' but a ValueModel was given")
            hidden = int(getattr(policy, "config").hidden_size)  # noqa: B009
            self.value_head = (value_model or zero_value_head(hidden)).to(self.device)
        else:
            if isinstance(value_model, nn.Linear):
                raise ValueError("config.value is 'model' but a value head was given")
            if value_model is None:
                if not isinstance(reward_fn, RewardModel):
                    raise ValueError(
                        "the default value function is initialised from the reward model: pass "
                        "a RewardModel as reward_fn, a ValueModel, or set value: head"
                    )
                value_model = ValueModel.from_reward_model(reward_fn)
            embeddings = value_model.backbone.get_input_embeddings()  # type: ignore[operator]
            if embeddings.num_embeddings < len(tokenizer):
                raise ValueError(
                    f"the value model knows {embeddings.num_embeddings} tokens, the policy's "
                    f"tokenizer {len(tokenizer)}: they must share a tokenizer"
                )
            self.value_model = value_model.to(self.device).eval()

        if config.gradient_checkpointing:
            enable_gradient_checkpointing(self.policy)
            if self.value_model is not None:
                enable_gradient_checkpointing(self.value_model.backbone)

        # the unwrapped module (weights, checkpoints, no-grad passes) and the prepared one
        self.trainable = PolicyAndValue(self.policy, self.value_model, self.value_head).eval()
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        # the schedule is stepped by hand after each real optimiser step: accelerate's prepared
        # scheduler would advance num_processes steps at a time
        self.scheduler = make_lr_scheduler(
            optimizer, config.lr_schedule, config.warmup_steps, self.total_steps
        )
        configure_deepspeed(acc, config)
        self.model, self.optimizer = acc.prepare(
            self.trainable, optimizer, device_placement=[False, False]
        )
        self.kl_controller = make_kl_controller(
            config.kl_coef, config.adaptive_kl, config.kl_target, config.kl_horizon
        )
        self.updates = 0
        self.optimizer_steps = 0
        self.last_rollout: Rollout | None = None

    # ------------------------------------------------------------------ forward passes

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when ``config.bf16``, else nothing (used by every forward pass)."""
        if self.config.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        if self.ref_policy is not None:
            yield self.ref_policy
        else:
            with self.policy.disable_adapter():  # type: ignore[operator]
                yield self.policy

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seed: int | None = None) -> Rollout:
        """One response per prompt from the current policy (stop strings, bf16 applied).

        ``seed`` matters only with a rollout engine (default: derived from the update); the
        in-process path draws from torch's global RNG, which the caller may fork and seed.
        """
        cfg = self.config
        if self.rollout_engine is not None:
            return self._engine_sample(prompts, seed)
        constraints = None
        if self.constraint_for is not None:
            constraints = [self.constraint_for(prompt) for prompt in prompts]
        self.policy.eval()  # training mode would switch the KV cache off under checkpointing
        with self.autocast():
            return sample_responses(
                self.policy,
                self.tokenizer,
                prompts,
                response_length=cfg.response_length,
                temperature=cfg.temperature,
                max_prompt_length=cfg.max_prompt_length,
                device=self.device,
                stop_strings=cfg.stop_strings,
                constraints=constraints,
            )

    def _engine_sample(self, prompts: Sequence[str], seed: int | None = None) -> Rollout:
        """Sample with the rollout engine, first pushing the policy's weights if they changed."""
        engine = self.rollout_engine
        assert engine is not None
        cfg = self.config
        if self._engine_weights_at != self.updates:
            engine.load_weights(policy_weights(self.policy, engine.vocab_size))
            self._engine_weights_at = self.updates
        return engine_rollout(
            engine,
            self.tokenizer,
            prompts,
            response_length=cfg.response_length,
            temperature=cfg.temperature,
            seed=(
                seed
                if seed is not None
                else engine_seed(cfg.seed, int(self.accelerator.process_index), self.updates)
            ),
            max_prompt_length=cfg.max_prompt_length,
            device=self.device,
            stop_strings=cfg.stop_strings,
            stops=eos_ids(self.tokenizer, self.policy),
        )

    @torch.no_grad()
    def _rollout_statistics(
        self, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Old log-probs, reference log-probs and values, pass by pass (see :meth:`_passes`)."""
        ids, mask, tokens = rollout.input_ids, rollout.attention_mask, rollout.response_ids
        rows, width = tokens.shape
        old = torch.zeros(rows, width, dtype=torch.float32, device=tokens.device)
        ref, values = torch.zeros_like(old), torch.zeros_like(old)
        widths = padded_widths(rollout.query_mask, width)
        everything = torch.arange(rows, device=tokens.device)
        if self.config.tokens_per_pass is None:  # micro-batch by micro-batch, as in training
            groups = list(everything.split(self.config.micro_batch_size))
        else:
            groups = self._passes(everything, widths)
        self.trainable.eval()
        for sl in groups:
            pass_ids, pass_mask = trim_left_padding(ids[sl], mask[sl])
            offsets = rollout.logit_offsets(sl, self.vocab_size)
            with self.autocast():
                out = self.trainable(
                    pass_ids,
                    pass_mask,
                    tokens[sl],
                    self.config.temperature,
                    logit_offsets=offsets,
                )
                old[sl] = out.logprobs.float()
                values[sl] = out.values.float()
                with self._reference() as reference:
                    ref_out = response_forward(
                        reference, pass_ids, pass_mask, width, self.config.temperature
                    )
                    ref_logits = constrained(ref_out.logits, offsets)
                    ref[sl] = selected_logprobs(ref_logits, tokens[sl])
            self._trim()
        return old, ref, values

    def _trim(self) -> None:
        """Hand freed CPU memory back to the OS (``trim_cpu_memory``, :mod:`.memory`)."""
        if self.config.trim_cpu_memory and self.device.type == "cpu":
            release_free_memory()

    def _passes(self, rows: torch.Tensor, widths: torch.Tensor) -> list[torch.Tensor]:
        """``rows`` as forward passes of at most ``tokens_per_pass`` padded tokens.

        Under DeepSpeed a micro-batch stays one pass: its engine counts backward calls to find
        the accumulation boundary, so their number must not depend on the prompts' lengths.
        """
        if self._deepspeed:
            return [rows]
        return plan_passes(rows, widths[rows], self.config.tokens_per_pass)

    # ------------------------------------------------------------------ one update

    def step(self, prompts: Sequence[str]) -> dict[str, float]:
        """Sample, score and train on ``prompts`` (``config.batch_size`` of them); return metrics.

        Under ``accelerate launch`` every process calls this with its own prompts; the metrics
        returned are averaged over processes (and the adaptive KL controller sees that mean).
        """
        cfg = self.config
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step needs {cfg.batch_size} prompts, got {len(prompts)}")
        start = time.perf_counter()
        rollout = self.sample(prompts)
        generated = time.perf_counter()
        scores = score_rollout(self.score_fn, rollout, cfg.no_eos_penalty)
        old_logprobs, ref_logprobs, old_values = self._rollout_statistics(rollout)
        mask = rollout.response_mask.float()
        beta = self.kl_controller.value
        rewards, kl = per_token_rewards(old_logprobs, ref_logprobs, scores, mask, beta)
        # statistics of the global batch: a data-parallel run whitens as one process would
        if cfg.whiten_rewards:
            rewards = masked_whiten(
                rewards, mask, shift_mean=False, reduce=self._sum_over_processes
            )
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask, reduce=self._sum_over_processes)
        scored = time.perf_counter()

        stats = self._train(rollout, old_logprobs, old_values, advantages, returns)
        trained = time.perf_counter()

        kl_per_sequence = kl.sum(-1)
        stop_rate = 0.0 if rollout.has_stop is None else float(rollout.has_stop.float().mean())
        metrics = {
            "update": float(self.updates + 1),
            "score": float(scores.mean()),
            "reward": float((scores - beta * kl_per_sequence).mean()),
            "kl": float(kl_per_sequence.mean()),
            "kl_coef": beta,
            "response_length": float(rollout.lengths.float().mean()),
            "eos_rate": float(rollout.has_eos.float().mean()),
            "stop_rate": stop_rate,
            "value_mean": float(masked_mean(old_values, mask)),
            "return_mean": float(masked_mean(returns, mask)),
            "time_generation": generated - start,
            "time_scoring": scored - generated,
            "time_training": trained - scored,
            "time_total": trained - start,
        }
        metrics.update(stats)
        metrics = average_over_processes(self.accelerator, metrics)
        self.kl_controller.update(metrics["kl"], cfg.batch_size * self.accelerator.num_processes)
        self.updates += 1
        self.last_rollout = rollout
        return metrics

    def _sum_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over data-parallel processes (identity on one process)."""
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.reduce(values, reduction="sum")

    def _ptx_slices(self) -> list[Batch | None]:
        """The next demonstration batch, one slice per micro-batch (``None`` when ptx is off)."""
        cfg = self.config
        if cfg.ptx_coef <= 0 or self.ptx_data is None:
            return [None] * cfg.grad_accumulation
        acc = self.accelerator
        index = self.ptx_batches * acc.num_processes + acc.process_index  # disjoint per process
        self.ptx_batches += 1
        batch = self.ptx_data.batch(index).to(self.device)
        return list(split_rows(batch, cfg.grad_accumulation))

    def _train(
        self,
        rollout: Rollout,
        old_logprobs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> dict[str, float]:
        cfg = self.config
        acc = self.accelerator
        ids, attn = rollout.input_ids, rollout.attention_mask
        tokens, mask = rollout.response_ids, rollout.response_mask.float()
        widths = padded_widths(rollout.query_mask, tokens.shape[1])
        sums: dict[str, list[float]] = defaultdict(list)
        first: dict[str, float] = {}
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        # dropout is off anyway; eval mode keeps norms/caches fixed. Training mode is needed
        # only for gradient checkpointing, which transformers applies to training-mode modules.
        self.trainable.train(cfg.gradient_checkpointing)
        # accelerate's backward divides by its accumulation count, kept in process-wide state
        # that another Accelerator (e.g. an SFT loop) may have changed: set it for this phase
        saved_accumulation = acc.gradient_accumulation_steps
        acc.gradient_accumulation_steps = cfg.grad_accumulation
        try:
            for epoch in range(cfg.ppo_epochs):
                order = torch.randperm(cfg.batch_size).to(self.device)
                for mb in range(cfg.mini_batches):
                    mb_idx = order[mb * cfg.mini_batch_size : (mb + 1) * cfg.mini_batch_size]
                    ptx_parts = self._ptx_slices()
                    # Every response token of the minibatch (all micro-batches, passes and
                    # processes) weighs the same: the losses are token sums over this
                    # normaliser, scaled back up by the two averagings that follow (accelerate
                    # divides each backward by the accumulation count, DDP averages over
                    # processes). So passes and micro-batches add up to one big batch.
                    tokens_in_minibatch = self._sum_over_processes(mask[mb_idx].sum()).clamp(
                        min=1.0
                    )
                    normalizer = tokens_in_minibatch / (cfg.grad_accumulation * acc.num_processes)
                    weighted: dict[str, float] = defaultdict(float)  # token-weighted diagnostics
                    weighted_tokens = 0.0
                    losses: dict[str, float] = defaultdict(float)  # summed over passes
                    for micro in range(cfg.grad_accumulation):
                        sl = mb_idx[
                            micro * cfg.micro_batch_size : (micro + 1) * cfg.micro_batch_size
                        ]
                        passes = self._passes(sl, widths)
                        for number, rows in enumerate(passes):
                            last = micro == cfg.grad_accumulation - 1 and number == len(passes) - 1
                            acc.sync_gradients = last  # DeepSpeed's accumulation boundary
                            sync = contextlib.nullcontext() if last else acc.no_sync(self.model)
                            pass_ids, pass_attn = trim_left_padding(ids[rows], attn[rows])
                            m = mask[rows]
                            with sync:
                                done = self._forward_backward(
                                    pass_ids,
                                    pass_attn,
                                    tokens[rows],
                                    rollout.logit_offsets(rows, self.vocab_size),
                                    # the first pass carries the micro-batch's demonstrations
                                    ptx_parts[micro] if number == 0 else None,
                                    old_logprobs[rows],
                                    advantages[rows],
                                    old_values[rows],
                                    returns[rows],
                                    m,
                                    normalizer,
                                    split=self._split_models(last),
                                )
                            pg = done.policy
                            if done.ptx_loss is not None:
                                sums["ptx_loss"].append(done.ptx_loss)
                            losses["policy_loss"] += float(pg.loss)
                            losses["value_loss"] += done.value_loss
                            weight = float(m.sum())
                            weighted_tokens += weight
                            weighted["value_clip_fraction"] += weight * done.value_clip_fraction
                            weighted["approx_kl"] += weight * float(pg.approx_kl)
                            weighted["clip_fraction"] += weight * float(pg.clip_fraction)
                            weighted["ratio_mean"] += weight * float(pg.ratio_mean)
                            weighted["ratio_var"] += weight * float(pg.ratio_var)
                            if epoch == 0:
                                entropy = entropy_from_logits(done.logits)
                                weighted["entropy"] += weight * float(masked_mean(entropy, m))
                            if epoch == 0 and mb == 0:
                                dev = ((done.logprobs - old_logprobs[rows]).abs() * m).max()
                                first["first_ratio_max_deviation"] = max(
                                    first.get("first_ratio_max_deviation", 0.0), float(dev)
                                )
                            del done, pg
                            self._trim()
                    # a loss summed over passes, averaged over micro-batches, is the minibatch's
                    # token average: the number one big batch would report
                    for name, total in losses.items():
                        sums[name].append(total / cfg.grad_accumulation)
                    count = max(weighted_tokens, 1.0)
                    for name, total in weighted.items():
                        sums[name].append(total / count)
                    if cfg.max_grad_norm is not None:
                        norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
                        if norm is not None:  # DeepSpeed clips inside its own step
                            sums["grad_norm"].append(float(norm))
                    sums["lr"].append(float(self.scheduler.get_last_lr()[0]))
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.optimizer_steps += 1
        finally:
            acc.gradient_accumulation_steps = saved_accumulation
            acc.sync_gradients = True
            self.trainable.eval()
        out_metrics = {name: sum(values) / len(values) for name, values in sums.items()}
        out_metrics["lr"] = sums["lr"][-1]  # the rate of the update's last optimiser step
        out_metrics.update(first)
        return out_metrics

    def _split_models(self, last: bool) -> bool:
        """Run policy and value model as two forward/backward passes in this pass?

        Only one backbone's activations are then alive at a time (half the activation memory,
        same gradients: the two models share no weight). Not with a value head (one backbone),
        not under DeepSpeed (its engine steps inside each backward), and not in the one
        backward per minibatch where DDP synchronises gradients: its reducer expects every
        parameter from one forward.
        """
        if not self.trainable.separable or self._deepspeed:
            return False
        return not (last and self.accelerator.num_processes > 1)

    def _forward_backward(
        self,
        ids: torch.Tensor,
        attn: torch.Tensor,
        tokens: torch.Tensor,
        offsets: torch.Tensor | None,
        ptx: Batch | None,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        mask: torch.Tensor,
        normalizer: torch.Tensor,
        *,
        split: bool,
    ) -> _PassResult:
        """One pass's losses and their backward (jointly, or model by model when ``split``)."""
        cfg = self.config
        acc = self.accelerator

        def policy_terms(out: PolicyValueOutput) -> tuple[PolicyLossOutput, torch.Tensor, Any]:
            assert out.logprobs is not None
            pg = clipped_policy_loss(
                out.logprobs, old_logprobs, advantages, mask, cfg.clip_range, normalizer
            )
            loss, ptx_loss = pg.loss, None
            if out.ptx_loss_sum is not None and out.ptx_tokens is not None:
                ptx_loss = out.ptx_loss_sum / out.ptx_tokens.clamp(min=1)
                loss = loss + cfg.ptx_coef * ptx_loss
            return pg, loss, ptx_loss

        def value_terms(out: PolicyValueOutput) -> tuple[torch.Tensor, torch.Tensor]:
            assert out.values is not None
            return clipped_value_loss(
                out.values, old_values, returns, mask, cfg.clip_range_value, normalizer
            )

        if split:
            with self.autocast():
                out = self.model(
                    ids, attn, tokens, cfg.temperature, ptx, part="policy", logit_offsets=offsets
                )
            pg, loss, ptx_loss = policy_terms(out)
            acc.backward(loss)  # divided by grad_accumulation
            assert out.logprobs is not None and out.logits is not None
            logprobs, logits = out.logprobs.detach(), out.logits.detach()
            del out, loss  # frees the policy's graph before the value model runs
            with self.autocast():
                out = self.model(ids, attn, tokens, cfg.temperature, None, part="value")
            vf, vf_clip = value_terms(out)
            acc.backward(cfg.vf_coef * vf)
        else:
            with self.autocast():
                out = self.model(ids, attn, tokens, cfg.temperature, ptx, logit_offsets=offsets)
            pg, loss, ptx_loss = policy_terms(out)
            vf, vf_clip = value_terms(out)
            acc.backward(loss + cfg.vf_coef * vf)
            assert out.logprobs is not None and out.logits is not None
            logprobs, logits = out.logprobs.detach(), out.logits.detach()
        pg.loss = pg.loss.detach()
        return _PassResult(
            policy=pg,
            value_loss=float(vf.detach()),
            value_clip_fraction=float(vf_clip),
            logprobs=logprobs,
            logits=logits,
            ptx_loss=None if ptx_loss is None else float(ptx_loss.detach()),
        )

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, directory: str | Path, *, fingerprint: str | None = None) -> Path:
        """Write trainable weights, optimiser, schedule, KL controller, RNG and data positions.

        Safetensors + JSON (no pickle), written to a temporary folder and renamed into place.
        The prompt position is the update count (feed prompts as a deterministic function of
        it); the PPO-ptx position is the number of demonstration batches drawn. Under
        ``accelerate launch`` every process must call this (their RNG states are gathered);
        only the main process writes. Under DeepSpeed the optimiser state is left out and the
        checkpoint is not resumable (it still holds the weights). ``fingerprint``: the job's
        (:func:`alignment.checkpoint.job_fingerprint`), recorded for :meth:`load_checkpoint`.
        """
        from accelerate.utils import DistributedType, gather_object

        acc = self.accelerator
        rng_states = gather_object([rng_state()])
        path = Path(directory)
        acc.wait_for_everyone()
        if acc.is_main_process:
            weights = trainable_state(self.trainable)
            opt_tensors: dict[str, torch.Tensor] = {}
            opt_meta: dict[str, Any] | None = None
            if acc.distributed_type != DistributedType.DEEPSPEED:
                # ZeRO's optimiser state is partitioned over processes and in its own format:
                # not saved (such a checkpoint is refused by load_checkpoint)
                opt_tensors, opt_meta = split_optimizer_state(self.optimizer.state_dict())
            meta = {
                "format_version": PPO_CHECKPOINT_FORMAT,
                "kind": "ragkit.alignment.ppo",
                "fingerprint": fingerprint,
                "updates": self.updates,
                "optimizer_steps": self.optimizer_steps,
                "ptx_batches": self.ptx_batches,
                "total_steps": self.total_steps,
                "processes": acc.num_processes,
                "distributed_type": _distributed_name(acc),
                "kl_controller": self.kl_controller.state_dict(),
                "optimizer": opt_meta,
                "scheduler": self.scheduler.state_dict(),
                "config": self.config.model_dump(mode="json"),
            }

            def fill(tmp: Path) -> None:
                save_file(weights, str(tmp / "trainable.safetensors"))
                save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
                for rank, state in enumerate(rng_states):
                    save_file(state, str(tmp / _rng_file(rank)))
                (tmp / STATE_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")

            atomic_directory(path, fill)
        acc.wait_for_everyone()
        return path

    def load_checkpoint(self, directory: str | Path, *, fingerprint: str | None = None) -> int:
        """Restore :meth:`save_checkpoint` and return the updates done; refuse one written with
        other settings (and, given a job ``fingerprint``, one of another job)."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        path = Path(directory)
        meta = read_checkpoint_state(path, "PPO checkpoint")
        if meta.get("format_version") != PPO_CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a PPO checkpoint of format {PPO_CHECKPOINT_FORMAT}"
            )
        if fingerprint is not None:
            check_fingerprint(meta, fingerprint, path)
        if meta.get("config") != self.config.model_dump(mode="json"):
            raise CheckpointError(f"{path} was written with other PPO settings")
        if meta.get("total_steps") != self.total_steps:
            raise CheckpointError(
                f"{path} was written for a run of {meta.get('total_steps')} optimiser steps, "
                f"this one has {self.total_steps} (the learning-rate schedule would differ)"
            )
        if meta.get("processes") != acc.num_processes:
            raise CheckpointError(
                f"{path} was written by {meta.get('processes')} processes, this run has "
                f"{acc.num_processes}: the per-process data and RNG streams would differ"
            )
        deepspeed = DistributedType.DEEPSPEED.value
        if deepspeed in (meta.get("distributed_type"), _distributed_name(acc)):
            raise CheckpointError(
                "resuming under DeepSpeed is not supported: ZeRO partitions the optimiser state "
                "across processes and the checkpoint holds the main process's part only"
            )
        load_trainable_state(self.trainable, load_file(str(path / "trainable.safetensors")))
        self.optimizer.load_state_dict(
            join_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
        )
        self.scheduler.load_state_dict(meta["scheduler"])
        self.kl_controller.load_state_dict(meta["kl_controller"])
        restore_rng(load_file(str(path / _rng_file(acc.process_index))))
        self.updates = int(meta["updates"])
        self._engine_weights_at = None  # the rollout engine gets the loaded weights
        self.optimizer_steps = int(meta["optimizer_steps"])
        self.ptx_batches = int(meta["ptx_batches"])
        return self.updates


def _distributed_name(accelerator: Any) -> str:
    """``"NO"``, ``"MULTI_GPU"``, ``"DEEPSPEED"``…: the launch mode as stored in checkpoints."""
    kind = accelerator.distributed_type
    return str(getattr(kind, "value", kind))


def _rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng-rank{rank}.safetensors"
