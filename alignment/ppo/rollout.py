"""Rollouts: batched sampling with the KV cache, EOS truncation and scoring.

* Prompts are left-padded with the tokenizer's dedicated pad token, so every response starts in
  the same column and the KV cache serves the whole batch.
* Sampling is plain ancestral sampling at temperature T (``top_k = 0``, ``top_p = 1``, no
  repetition penalty, ``min_new_tokens = 0``): anything else makes the sampling distribution
  differ from the one whose log-probs PPO recomputes, and the KL goes wrong.
* Each response is cut after its first EOS (the EOS is kept and is the last real token); the
  mask, not the pad token, says what is real, so a sampled pad id inside a response is harmless.
* Scores come from any callable ``reward(prompts, responses) -> tensor`` on the decoded text;
  a response without EOS may get a fixed penalty subtracted (it was cut by the length limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

RewardFn = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


@dataclass
class Rollout:
    """One batch of sampled responses; response tensors are ``[batch, response_length]``."""

    prompts: list[str]
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor
    texts: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt + response ids."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """Prompt + response mask (0 on left padding and after each response's end)."""
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        """Real response tokens per row (EOS included)."""
        return self.response_mask.sum(-1)


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], max_prompt_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask; over-long prompts keep their last ``max_prompt_length`` tokens."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("PPO needs a pad token distinct from EOS (alignment.ensure_pad_token)")
    encoded = [list(ids)[-max_prompt_length:] for ids in tokenizer(list(prompts))["input_ids"]]
    if any(not ids for ids in encoded):
        raise ValueError("a prompt encodes to no tokens")
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), int(tokenizer.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def truncate_after_eos(
    response_ids: torch.Tensor, eos_token_ids: Sequence[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each row after its first EOS; return ``(ids, mask, has_eos)``, pad after the end."""
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= response_ids == eos
    has_eos = is_eos.any(-1)
    width = response_ids.shape[1]
    first = torch.where(
        has_eos, is_eos.long().argmax(-1), torch.full_like(has_eos, width - 1, dtype=torch.long)
    )
    columns = torch.arange(width, device=response_ids.device)
    mask = (columns.unsqueeze(0) <= first.unsqueeze(1)).long()
    ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, pad_token_id))
    return ids, mask, has_eos


def eos_ids(tokenizer: Any, model: nn.Module | None = None) -> list[int]:
    """EOS ids to stop at: the tokenizer's EOS plus any in the model's generation config."""
    ids = {int(tokenizer.eos_token_id)}
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, list):
        ids.update(int(i) for i in extra)
    ids.discard(int(tokenizer.pad_token_id))
    return sorted(ids)


@torch.no_grad()
def sample_responses(
    policy: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    response_length: int,
    temperature: float,
    max_prompt_length: int = 512,
    device: torch.device | str = "cpu",
) -> Rollout:
    """Sample one response per prompt in one batched ``generate`` call (KV cache on)."""
    from transformers import GenerationConfig

    query_ids, query_mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)
    stops = eos_ids(tokenizer, policy)
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=response_length,
        min_new_tokens=0,
        repetition_penalty=1.0,
        eos_token_id=stops,
        pad_token_id=int(tokenizer.pad_token_id),
        use_cache=True,
    )
    generate: Any = getattr(policy, "generate")  # noqa: B009 - nn.Module typing hides it
    out = generate(input_ids=query_ids, attention_mask=query_mask, generation_config=config)
    raw = out[:, query_ids.shape[1] :]
    if raw.shape[1] < response_length:  # generation stopped early: every row ended
        fill = torch.full(
            (raw.shape[0], response_length - raw.shape[1]),
            int(tokenizer.pad_token_id),
            dtype=raw.dtype,
            device=raw.device,
        )
        raw = torch.cat([raw, fill], dim=1)
    ids, mask, has_eos = truncate_after_eos(raw, stops, int(tokenizer.pad_token_id))
    texts = [
        tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
        for row, n in zip(ids, mask.sum(-1), strict=True)
    ]
    return Rollout(list(prompts), query_ids, query_mask, ids, mask, has_eos, texts)


@torch.no_grad()
def score_rollout(
    reward_fn: RewardFn, rollout: Rollout, no_eos_penalty: float | None = None
) -> torch.Tensor:
    """Scores (float32, on the rollout's device) of each truncated response; penalise no EOS."""
    scores = torch.as_tensor(reward_fn(rollout.prompts, rollout.texts), dtype=torch.float32)
    scores = scores.reshape(-1).to(rollout.response_ids.device)
    if scores.shape[0] != len(rollout.prompts):
        raise ValueError(f"reward returned {scores.shape[0]} scores for {len(rollout.prompts)}")
    if no_eos_penalty is not None:
        scores = scores - no_eos_penalty * (~rollout.has_eos).float()
    return scores
