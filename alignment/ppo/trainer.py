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

One AdamW optimiser covers the policy's trainable weights and the value function; the loss is
``policy_loss + vf_coef · value_loss``. All randomness (sampling, minibatch shuffles) comes from
torch's global RNG, seeded from ``config.seed`` when the trainer is built, so a checkpoint that
stores the RNG state resumes exactly.
"""

from __future__ import annotations

import copy
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.backbone import disable_dropout
from alignment.checkpoint import (
    _join_optimizer_state,
    _restore_rng,
    _rng_state,
    _split_optimizer_state,
    load_trainable_state,
    trainable_state,
)
from alignment.errors import CheckpointError
from alignment.ppo.advantages import gae, masked_mean, masked_whiten, per_token_rewards
from alignment.ppo.config import PPOConfig
from alignment.ppo.kl import make_kl_controller
from alignment.ppo.logprobs import entropy_from_logits, response_forward, selected_logprobs
from alignment.ppo.losses import clipped_policy_loss, clipped_value_loss
from alignment.ppo.rollout import RewardFn, Rollout, sample_responses, score_rollout
from alignment.ppo.value import ValueModel, zero_value_head
from alignment.reward_model import RewardModel
from alignment.tokenization import ensure_pad_token
from ragkit.atomic import atomic_directory

PPO_CHECKPOINT_FORMAT = 1


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


class PPOTrainer:
    """InstructGPT-style PPO on a causal LM (see the module docstring for the model options)."""

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
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        # a RewardModel's __call__ is its tensor forward; text scoring is .score (normalised)
        self.score_fn: RewardFn = (
            reward_fn.score if isinstance(reward_fn, RewardModel) else reward_fn
        )
        self.device = torch.device(device) if device is not None else _device_of(policy)
        torch.manual_seed(config.seed)

        ensure_pad_token(tokenizer, policy)
        disable_dropout(policy)
        self.policy = policy.to(self.device).eval()

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

        self.trainable = nn.ModuleDict({"policy": self.policy})
        if self.value_model is not None:
            self.trainable["value"] = self.value_model
        if self.value_head is not None:
            self.trainable["value_head"] = self.value_head
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        warmup = config.warmup_updates
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: min(1.0, (n + 1) / warmup) if warmup else 1.0
        )
        self.kl_controller = make_kl_controller(
            config.kl_coef, config.adaptive_kl, config.kl_target, config.kl_horizon
        )
        self.updates = 0
        self.last_rollout: Rollout | None = None

    # ------------------------------------------------------------------ forward passes

    @contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        if self.ref_policy is not None:
            yield self.ref_policy
        else:
            with self.policy.disable_adapter():  # type: ignore[operator]
                yield self.policy

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Policy log-probs, values and (T-scaled) logits for the response columns."""
        width = tokens.shape[1]
        out = response_forward(
            self.policy,
            ids,
            mask,
            width,
            self.config.temperature,
            want_hidden=self.value_head is not None,
        )
        logprobs = selected_logprobs(out.logits, tokens)
        if self.value_head is not None:
            assert out.hidden is not None
            values = self.value_head(out.hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        else:
            assert self.value_model is not None
            values = self.value_model(ids, mask, width)
        return logprobs, values.float(), out.logits

    @torch.no_grad()
    def _rollout_statistics(
        self, rollout: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Old log-probs, reference log-probs and values, micro-batch by micro-batch."""
        ids, mask, tokens = rollout.input_ids, rollout.attention_mask, rollout.response_ids
        old, ref, values = [], [], []
        step = self.config.micro_batch_size
        for start in range(0, ids.shape[0], step):
            sl = slice(start, start + step)
            lp, v, _ = self._forward(ids[sl], mask[sl], tokens[sl])
            old.append(lp)
            values.append(v)
            with self._reference() as reference:
                out = response_forward(
                    reference, ids[sl], mask[sl], tokens.shape[1], self.config.temperature
                )
                ref.append(selected_logprobs(out.logits, tokens[sl]))
        return torch.cat(old), torch.cat(ref), torch.cat(values)

    # ------------------------------------------------------------------ one update

    def step(self, prompts: Sequence[str]) -> dict[str, float]:
        """Sample, score and train on ``prompts`` (``config.batch_size`` of them); return metrics."""
        cfg = self.config
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step needs {cfg.batch_size} prompts, got {len(prompts)}")
        start = time.perf_counter()
        rollout = sample_responses(
            self.policy,
            self.tokenizer,
            prompts,
            response_length=cfg.response_length,
            temperature=cfg.temperature,
            max_prompt_length=cfg.max_prompt_length,
            device=self.device,
        )
        generated = time.perf_counter()
        scores = score_rollout(self.score_fn, rollout, cfg.no_eos_penalty)
        old_logprobs, ref_logprobs, old_values = self._rollout_statistics(rollout)
        mask = rollout.response_mask.float()
        beta = self.kl_controller.value
        rewards, kl = per_token_rewards(old_logprobs, ref_logprobs, scores, mask, beta)
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)
        scored = time.perf_counter()

        stats = self._train(rollout, old_logprobs, old_values, advantages, returns)
        trained = time.perf_counter()

        kl_per_sequence = kl.sum(-1)
        self.kl_controller.update(float(kl_per_sequence.mean()), cfg.batch_size)
        self.scheduler.step()
        self.updates += 1
        metrics = {
            "update": float(self.updates),
            "score": float(scores.mean()),
            "reward": float((scores - beta * kl_per_sequence).mean()),
            "kl": float(kl_per_sequence.mean()),
            "kl_coef": beta,
            "response_length": float(rollout.lengths.float().mean()),
            "eos_rate": float(rollout.has_eos.float().mean()),
            "value_mean": float(masked_mean(old_values, mask)),
            "return_mean": float(masked_mean(returns, mask)),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "time_generation": generated - start,
            "time_scoring": scored - generated,
            "time_training": trained - scored,
            "time_total": trained - start,
        }
        metrics.update(stats)
        self.last_rollout = rollout
        return metrics

    def _train(
        self,
        rollout: Rollout,
        old_logprobs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> dict[str, float]:
        cfg = self.config
        ids, attn = rollout.input_ids, rollout.attention_mask
        tokens, mask = rollout.response_ids, rollout.response_mask.float()
        sums: dict[str, list[float]] = defaultdict(list)
        first: dict[str, float] = {}
        self.trainable.train(False)  # dropout is off anyway; eval keeps norms/caches fixed
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size).to(self.device)
            for mb in range(cfg.mini_batches):
                mb_idx = order[mb * cfg.mini_batch_size : (mb + 1) * cfg.mini_batch_size]
                for micro in range(cfg.grad_accumulation):
                    sl = mb_idx[micro * cfg.micro_batch_size : (micro + 1) * cfg.micro_batch_size]
                    logprobs, values, logits = self._forward(ids[sl], attn[sl], tokens[sl])
                    m = mask[sl]
                    pg = clipped_policy_loss(
                        logprobs, old_logprobs[sl], advantages[sl], m, cfg.clip_range
                    )
                    vf, vf_clip = clipped_value_loss(
                        values, old_values[sl], returns[sl], m, cfg.clip_range_value
                    )
                    loss = pg.loss + cfg.vf_coef * vf
                    (loss / cfg.grad_accumulation).backward()
                    sums["policy_loss"].append(float(pg.loss.detach()))
                    sums["value_loss"].append(float(vf.detach()))
                    sums["value_clip_fraction"].append(float(vf_clip))
                    sums["approx_kl"].append(float(pg.approx_kl))
                    sums["clip_fraction"].append(float(pg.clip_fraction))
                    sums["ratio_mean"].append(float(pg.ratio_mean))
                    sums["ratio_var"].append(float(pg.ratio_var))
                    if epoch == 0:
                        entropy = entropy_from_logits(logits.detach())
                        sums["entropy"].append(float(masked_mean(entropy, m)))
                    if epoch == 0 and mb == 0:
                        dev = ((logprobs.detach() - old_logprobs[sl]).abs() * m).max()
                        first["first_ratio_max_deviation"] = max(
                            first.get("first_ratio_max_deviation", 0.0), float(dev)
                        )
                if cfg.max_grad_norm is not None:
                    params = [p for p in self.trainable.parameters() if p.grad is not None]
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    sums["grad_norm"].append(float(norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        out = {name: sum(values) / len(values) for name, values in sums.items()}
        out.update(first)
        return out

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write trainable weights, optimiser, schedule, KL controller, RNG and update count.

        Safetensors + JSON (no pickle), written to a temporary folder and renamed into place.
        The data position is the update count: feed prompts as a deterministic function of it.
        """
        weights = trainable_state(self.trainable)
        opt_tensors, opt_meta = _split_optimizer_state(self.optimizer.state_dict())
        meta = {
            "format_version": PPO_CHECKPOINT_FORMAT,
            "kind": "ragkit.alignment.ppo",
            "updates": self.updates,
            "kl_controller": self.kl_controller.state_dict(),
            "optimizer": opt_meta,
            "scheduler": self.scheduler.state_dict(),
            "config": self.config.model_dump(mode="json"),
        }

        def fill(tmp: Path) -> None:
            save_file(weights, str(tmp / "trainable.safetensors"))
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            save_file(_rng_state(), str(tmp / "rng.safetensors"))
            (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

        return atomic_directory(Path(directory), fill)

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore :meth:`save_checkpoint`; refuse one written with another PPO config."""
        path = Path(directory)
        try:
            meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"unreadable PPO checkpoint {path}: {exc}") from exc
        if meta.get("format_version") != PPO_CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a PPO checkpoint of format 1")
        if meta.get("config") != self.config.model_dump(mode="json"):
            raise CheckpointError(f"{path} was written with other PPO settings")
        load_trainable_state(self.trainable, load_file(str(path / "trainable.safetensors")))
        self.optimizer.load_state_dict(
            _join_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta["optimizer"])
        )
        self.scheduler.load_state_dict(meta["scheduler"])
        self.kl_controller.load_state_dict(meta["kl_controller"])
        _restore_rng(load_file(str(path / "rng.safetensors")))
        self.updates = int(meta["updates"])


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without weights
        return torch.device("cpu")
