"""Shared pieces of the two PPO benchmark runners (ragkit's and TRL's).

Imported by ``ragkit_ppo.py`` (run in the project's ``.venv``) and ``trl_ppo.py`` (run in
``.bench-trl-venv``), so it needs nothing but torch and transformers: no ragkit, no TRL.

* **measurement**: wall and CPU time (``getrusage(RUSAGE_SELF)``), resident memory from
  ``/proc/self/status`` (``VmRSS``, and the high-water mark ``VmHWM``, which can be reset by
  writing ``5`` to ``/proc/self/clear_refs`` so that the training phase's own peak is measured
  apart from model loading);
* **the reward**: one ``AutoModelForSequenceClassification`` (SmolLM2 backbone + a seeded
  scalar head), read at the last token of ``prompt ids + response ids`` exactly as TRL's
  ``get_reward`` reads it (no EOS appended). ragkit trains on :func:`score_texts`; TRL trains on
  its own ``get_reward`` over the generated token ids;
* **held-out evaluation**: :func:`heldout_eval` samples responses with one plain
  ``generate`` call per batch (T, ``top_k = 0``, ``top_p = 1``, cut after the first EOS) under a
  fixed seed and scores them with :func:`score_texts`: the same code for both systems.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_mb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` in MiB (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb() -> float:
    """Current resident memory, MiB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Resident-memory high-water mark since the start or the last :func:`reset_peak`, MiB."""
    hwm = _status_mb("VmHWM")
    if hwm:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS (Linux ``clear_refs``); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PhaseClock:
    """Wall, CPU and memory of named phases (``load``, ``eval_before``, ``train``…)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.overall_peak = 0.0

    def start(self) -> tuple[float, float]:
        """Reset the memory peak and return ``(wall, cpu)`` start marks."""
        self.overall_peak = max(self.overall_peak, peak_rss_mb())
        reset_peak()
        return time.perf_counter(), cpu_seconds()

    def stop(self, name: str, marks: tuple[float, float]) -> dict[str, float]:
        """Record phase ``name`` begun at ``marks``."""
        peak = peak_rss_mb()
        self.overall_peak = max(self.overall_peak, peak)
        record = {
            "wall_s": time.perf_counter() - marks[0],
            "cpu_s": cpu_seconds() - marks[1],
            "peak_rss_mb": peak,
            "rss_after_mb": rss_mb(),
        }
        self.phases[name] = record
        return record


def load_spec(path: str | Path) -> dict[str, Any]:
    """The run's settings written by the orchestrator."""
    spec: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return spec


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write the runner's JSON for the orchestrator."""
    Path(path).write_text(json.dumps(result, indent=1), encoding="utf-8")


def setup_torch(threads: int, seed: int) -> None:
    """Same thread count and seeds for both systems."""
    import random

    import numpy as np

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def score_texts(
    reward_model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 8,
    append_eos: bool = False,
) -> torch.Tensor:
    """Reward of each ``prompt + response``: the head at the last token.

    Ids are ``tokenize(prompt) + tokenize(response)`` (what a policy generating after the
    prompt produced, up to re-tokenisation), then EOS when ``append_eos`` (a reward model
    trained by ragkit reads its score at the EOS it was trained with), right-padded, positions
    ``cumsum(mask) − 1``. ``responses`` never contain the EOS itself (it is cut when decoding).
    """
    backbone = getattr(reward_model, reward_model.base_model_prefix)
    tail = [int(tokenizer.eos_token_id)] if append_eos else []
    rows = [
        list(tokenizer(p)["input_ids"])
        + list(tokenizer(r, add_special_tokens=False)["input_ids"])
        + tail
        for p, r in zip(prompts, responses, strict=True)
    ]
    out = torch.empty(len(rows))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, seq in enumerate(chunk):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        hidden = backbone(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            use_cache=False,
        ).last_hidden_state
        last = mask.sum(1) - 1
        pooled = hidden[torch.arange(len(chunk)), last]
        out[start : start + len(chunk)] = reward_model.score(pooled).squeeze(-1).float()
    return out


@torch.no_grad()
def sample_responses(
    policy: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    response_length: int,
    temperature: float,
) -> tuple[list[str], list[int], list[bool]]:
    """One sampled response per prompt: texts, token counts (EOS included), ended-by-EOS flags."""
    eos = int(tokenizer.eos_token_id)
    encoded = [list(tokenizer(p)["input_ids"]) for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, seq in enumerate(encoded):
        ids[i, width - len(seq) :] = torch.tensor(seq)
        mask[i, width - len(seq) :] = 1
    policy.eval()
    out = policy.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=response_length,
        min_new_tokens=0,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    texts, lengths, ended = [], [], []
    for row in out[:, width:].tolist():
        cut = row.index(eos) + 1 if eos in row else len(row)
        kept = row[:cut]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
        lengths.append(len(kept))
        ended.append(eos in row)
    return texts, lengths, ended


def heldout_eval(
    policy: Any,
    tokenizer: Any,
    reward_model: Any,
    prompts: Sequence[str],
    *,
    samples: int,
    seed: int,
    response_length: int,
    temperature: float,
    batch_size: int = 8,
    append_eos: bool = False,
) -> dict[str, Any]:
    """Mean reward of ``samples`` sampled responses per held-out prompt, under a fixed seed.

    Every call samples with the same seed, so two evaluations of nearby policies draw mostly the
    same tokens: the per-response ``scores`` are kept (in a fixed order) for a paired comparison.
    The policy's train/eval mode is restored afterwards (the evaluation may run mid-training).
    """
    scores: list[float] = []
    lengths: list[int] = []
    ended: list[bool] = []
    start = time.perf_counter()
    was_training = bool(policy.training)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(samples):
            for b in range(0, len(prompts), batch_size):
                chunk = list(prompts[b : b + batch_size])
                texts, lens, ends = sample_responses(
                    policy,
                    tokenizer,
                    chunk,
                    response_length=response_length,
                    temperature=temperature,
                )
                scores.extend(
                    score_texts(
                        reward_model, tokenizer, chunk, texts, append_eos=append_eos
                    ).tolist()
                )
                lengths.extend(lens)
                ended.extend(ends)
    policy.train(was_training)
    t = torch.tensor(scores)
    return {
        "scores": scores,
        "score": float(t.mean()),
        "score_std": float(t.std()) if t.numel() > 1 else 0.0,
        "score_sem": float(t.std() / t.numel() ** 0.5) if t.numel() > 1 else 0.0,
        "responses": len(scores),
        "response_length": sum(lengths) / len(lengths),
        "eos_rate": sum(ended) / len(ended),
        "seconds": time.perf_counter() - start,
    }


def spec_heldout_eval(
    policy: Any, tokenizer: Any, reward_model: Any, spec: dict[str, Any]
) -> dict[str, Any]:
    """:func:`heldout_eval` with the spec's settings (prompts, samples, seed, reward EOS)."""
    return heldout_eval(
        policy,
        tokenizer,
        reward_model,
        spec["heldout_prompts"],
        samples=spec["heldout_samples"],
        seed=spec["seed"] + 1000,
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        append_eos=bool(spec.get("reward_eos", False)),
    )


def timed_heldout_eval(
    phase: str,
    clock: PhaseClock,
    policy: Any,
    tokenizer: Any,
    reward_model: Any,
    spec: dict[str, Any],
) -> dict[str, Any] | None:
    """:func:`spec_heldout_eval` timed as ``phase`` (None when disabled).

    Mid-run evaluations call :func:`spec_heldout_eval` directly instead: a phase would reset
    the memory high-water mark of the enclosing training phase.
    """
    if spec["heldout_samples"] <= 0:
        return None
    marks = clock.start()
    result = spec_heldout_eval(policy, tokenizer, reward_model, spec)
    clock.stop(phase, marks)
    return result


def heldout_due(update: int, spec: dict[str, Any]) -> bool:
    """Whether a mid-run held-out evaluation follows ``update`` (1-based; not after the last)."""
    every = int(spec.get("heldout_every") or 0)
    return (
        every > 0
        and spec["heldout_samples"] > 0
        and update % every == 0
        and update < spec["updates"]
    )
