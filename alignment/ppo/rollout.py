"""Rollouts: batched sampling with the KV cache, EOS truncation and scoring.

* Prompts are left-padded with the tokenizer's dedicated pad token, so every response starts in
  the same column and the KV cache serves the whole batch.
* Sampling is plain ancestral sampling at temperature T (``top_k = 0``, ``top_p = 1``, no
  repetition penalty, ``min_new_tokens = 0``): anything else makes the sampling distribution
  differ from the one whose log-probs PPO recomputes, and the KL goes wrong.
* Each response is cut after its first EOS (the EOS is kept and is the last real token); the
  mask, not the pad token, says what is real, so a sampled pad id inside a response is harmless.
* Stop strings end a response too, at token level: the response ends with the first token whose
  decoded text (special tokens skipped) completes a stop string. Those tokens stay real (masked
  in, scored at the last one, like an EOS), and the decoded text handed to the reward stops
  *before* the stop string, just as it never contains the EOS. During generation the same test
  runs as a stopping criterion, so a stopped row is padded by ``generate`` from exactly the
  token where the truncation cuts it.
* A per-prompt token constraint (grounded span decoding) can restrict sampling; the rollout
  then carries its trace, and every log-prob PPO computes is under the same constraint
  (:mod:`.constrained`).
* Scores come from any callable ``reward(prompts, responses) -> tensor`` on the decoded text;
  a response that ended neither by EOS nor by a stop string may get a fixed penalty subtracted
  (it was cut by the length limit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from alignment.ppo.constrained import ConstraintTrace, replay, sampling_processors

if TYPE_CHECKING:
    from ragkit.generation.constraints import TokenConstraint

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
    has_stop: torch.Tensor | None = None  # ended by a stop string (None: no stop strings used)
    trace: ConstraintTrace | None = None  # what each row's constraint allowed (None: free)

    def logit_offsets(self, rows: torch.Tensor, vocab: int) -> torch.Tensor | None:
        """The constraint's additive logits for ``rows`` (None when sampling was free)."""
        if self.trace is None:
            return None
        width = self.response_ids.shape[1]
        return self.trace.offsets(rows, width, vocab).to(self.response_ids.device)

    @property
    def ended(self) -> torch.Tensor:
        """Rows that ended by themselves (EOS or stop string), not by the length limit."""
        if self.has_stop is None:
            return self.has_eos
        return self.has_eos | self.has_stop

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
        """Real response tokens per row (EOS or stop-string tokens included)."""
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
    return left_pad(encoded, int(tokenizer.pad_token_id))


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows right-aligned in one ``[rows, longest]`` tensor, and their mask."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def iter_prompt_ids(query_ids: torch.Tensor, query_mask: torch.Tensor) -> Iterable[list[int]]:
    """Each left-padded prompt row without its padding."""
    for ids, mask in zip(query_ids.tolist(), query_mask.tolist(), strict=True):
        yield [token for token, keep in zip(ids, mask, strict=True) if keep]


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


def first_stop_index(tokenizer: Any, ids: Sequence[int], stop_strings: Sequence[str]) -> int | None:
    """Index of the first token whose decoded prefix contains a stop string, or ``None``.

    The test is on ``decode(ids[: k + 1])`` (special tokens skipped), the same text the reward
    sees, so a stop string spread over several tokens, or sharing a token with other text, is
    found at the token that completes it.
    """
    if not stop_strings or not ids:
        return None

    def hit(n: int) -> bool:
        text = tokenizer.decode(list(ids[:n]), skip_special_tokens=True)
        return any(stop in text for stop in stop_strings)

    if not hit(len(ids)):
        return None
    # linear, not a bisection: decoding a prefix is not always a prefix of the decoded whole
    # (an incomplete UTF-8 sequence decodes to U+FFFD), and the first hit is what counts
    return next(k for k in range(len(ids)) if hit(k + 1))


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string in it."""
    found = [i for i in (text.find(stop) for stop in stop_strings) if i >= 0]
    return text[: min(found)] if found else text


def truncate_responses(
    response_ids: torch.Tensor,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    tokenizer: Any = None,
    stop_strings: Sequence[str] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each row at its first EOS or stop string; return ``(ids, mask, has_eos, has_stop)``.

    Whichever comes first ends the row; its tokens (the EOS, or every token of the stop string)
    are kept as the last real ones and everything after is masked and set to ``pad_token_id``.
    """
    ids, mask, has_eos = truncate_after_eos(response_ids, eos_token_ids, pad_token_id)
    has_stop = torch.zeros_like(has_eos)
    if not stop_strings:
        return ids, mask, has_eos, has_stop
    if tokenizer is None:
        raise ValueError("stop strings need the tokenizer to decode responses")
    for row in range(ids.shape[0]):
        n = int(mask[row].sum()) - int(has_eos[row])  # search before the EOS only
        k = first_stop_index(tokenizer, ids[row, :n].tolist(), stop_strings)
        if k is None:
            continue
        mask[row, k + 1 :] = 0
        ids[row, k + 1 :] = pad_token_id
        has_stop[row] = True
        has_eos[row] = False
    return ids, mask, has_eos, has_stop


class StopStringCriterion:
    """A ``generate`` stopping criterion: a row is done once its response holds a stop string.

    It applies :func:`first_stop_index`'s test to the response columns (after the left-padded
    prompt), one step at a time, so a row stops at the same token the truncation cuts at and
    ``generate`` pads it from the next one; generation ends early when every row is done.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        """One bool per row: the response so far contains a stop string."""
        rows = input_ids[:, self.prompt_width :].tolist()
        done = [
            any(
                stop in self.tokenizer.decode(row, skip_special_tokens=True)
                for stop in self.stop_strings
            )
            for row in rows
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


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


def plain_sampling(
    temperature: float, max_new_tokens: int, stop_ids: Sequence[int], pad_token_id: int
) -> Any:
    """The ``GenerationConfig`` of every PPO rollout: ancestral sampling at ``temperature``.

    Every option that would reshape the distribution is set to its neutral value explicitly,
    so neither transformers' defaults nor a model's ``generation_config.json`` can change it.
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        repetition_penalty=1.0,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
    )


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
    stop_strings: Sequence[str] = (),
    constraints: Sequence[TokenConstraint | None] | None = None,
) -> Rollout:
    """Sample one response per prompt in one batched ``generate`` call (KV cache on).

    The caller puts ``policy`` in eval mode: under gradient checkpointing, transformers turns
    the KV cache off for a module in training mode. ``constraints`` (one per prompt, None for a
    free row) restrict each row's tokens; the rollout then records what they allowed.
    """
    from transformers import LogitsProcessorList, StoppingCriteriaList

    query_ids, query_mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)
    stops = eos_ids(tokenizer, policy)
    processors = LogitsProcessorList()
    if constraints is not None:
        if len(constraints) != len(prompts):
            raise ValueError(f"{len(constraints)} constraints for {len(prompts)} prompts")
        # the temperature goes first, by hand, so the constraint's biases are not divided by it
        processors.extend(sampling_processors(constraints, query_ids.shape[1], temperature))
        temperature = 1.0
    config = plain_sampling(temperature, response_length, stops, int(tokenizer.pad_token_id))
    generate: Any = getattr(policy, "generate")  # noqa: B009 - nn.Module typing hides it
    criteria = StoppingCriteriaList()
    if stop_strings:
        criteria.append(StopStringCriterion(tokenizer, stop_strings, query_ids.shape[1]))
    out = generate(
        input_ids=query_ids,
        attention_mask=query_mask,
        generation_config=config,
        stopping_criteria=criteria,
        logits_processor=processors,
    )
    raw = out[:, query_ids.shape[1] :]
    rollout = finish_rollout(
        prompts, query_ids, query_mask, raw, tokenizer, stops, stop_strings, response_length
    )
    if constraints is not None:
        rollout.trace = replay(constraints, rollout.response_ids, rollout.response_mask)
    return rollout


def finish_rollout(
    prompts: Sequence[str],
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    raw: torch.Tensor,
    tokenizer: Any,
    stops: Sequence[int],
    stop_strings: Sequence[str],
    response_length: int,
) -> Rollout:
    """A :class:`Rollout` from sampled response ids (``[batch, <= response_length]``).

    The one place where responses are padded to ``response_length``, cut after EOS / stop
    strings and decoded, whoever sampled them (the policy or a rollout engine).
    """
    if raw.shape[1] < response_length:  # generation stopped early: every row ended
        fill = torch.full(
            (raw.shape[0], response_length - raw.shape[1]),
            int(tokenizer.pad_token_id),
            dtype=raw.dtype,
            device=raw.device,
        )
        raw = torch.cat([raw, fill], dim=1)
    ids, mask, has_eos, has_stop = truncate_responses(
        raw, stops, int(tokenizer.pad_token_id), tokenizer, stop_strings
    )
    texts = [
        tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
        for row, n in zip(ids, mask.sum(-1), strict=True)
    ]
    texts = [
        cut_at_stop(text, stop_strings) if stopped else text
        for text, stopped in zip(texts, has_stop.tolist(), strict=True)
    ]
    return Rollout(list(prompts), query_ids, query_mask, ids, mask, has_eos, texts, has_stop)


def engine_rollout(
    engine: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    response_length: int,
    temperature: float,
    seed: int,
    max_prompt_length: int = 512,
    device: torch.device | str = "cpu",
    stop_strings: Sequence[str] = (),
    stops: Sequence[int] | None = None,
) -> Rollout:
    """Like :func:`sample_responses`, with the tokens drawn by a rollout engine.

    The prompts are encoded exactly as for the policy (left-padded, cut to
    ``max_prompt_length``) and handed over without padding; the engine's responses go through
    :func:`finish_rollout`. Stop strings are applied afterwards, at token level (the engine
    samples to the length limit or a stop token).
    """
    query_ids, query_mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    stops = list(stops) if stops is not None else eos_ids(tokenizer)
    sampled = engine.generate(
        list(iter_prompt_ids(query_ids, query_mask)),
        max_new_tokens=response_length,
        temperature=temperature,
        stop_token_ids=stops,
        seed=seed,
    )
    if len(sampled) != len(prompts):
        raise ValueError(f"the rollout engine returned {len(sampled)} responses for {len(prompts)}")
    pad = int(tokenizer.pad_token_id)
    raw = torch.full((len(prompts), response_length), pad, dtype=torch.long)
    for row, response in enumerate(sampled):
        response = list(response)[:response_length]
        if response:
            raw[row, : len(response)] = torch.tensor(response, dtype=torch.long)
    return finish_rollout(
        prompts,
        query_ids.to(device),
        query_mask.to(device),
        raw.to(device),
        tokenizer,
        stops,
        stop_strings,
        response_length,
    )


@torch.no_grad()
def score_rollout(
    reward_fn: RewardFn, rollout: Rollout, no_eos_penalty: float | None = None
) -> torch.Tensor:
    """Scores (float32, on the rollout's device) of each truncated response.

    ``no_eos_penalty`` is subtracted from rows that ended neither by EOS nor by a stop string.
    """
    scores = torch.as_tensor(reward_fn(rollout.prompts, rollout.texts), dtype=torch.float32)
    scores = scores.reshape(-1).to(rollout.response_ids.device)
    if scores.shape[0] != len(rollout.prompts):
        raise ValueError(f"reward returned {scores.shape[0]} scores for {len(rollout.prompts)}")
    if no_eos_penalty is not None:
        scores = scores - no_eos_penalty * (~rollout.ended).float()
    return scores
