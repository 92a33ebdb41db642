"""Choosing the next token from raw logits in numpy, with the transformers path's semantics.

Backends that hand ragkit the logits of one step (llama.cpp) need the decoding options applied
exactly as ``transformers.generate`` applies them for the reference path, or the same options
would give different answers depending on the backend. The order is the one transformers uses:
repetition penalty and n-gram blocking on the whole sequence (prompt included), EOS suppression
until ``min_new_tokens``, then the row's token constraint (grounded decoding), then — when
sampling — temperature, top-k and top-p before drawing. Greedy is a plain argmax: no hidden
sampler defaults.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ragkit.generation.constraints import TokenConstraint
from ragkit.generation.options import GenerationOptions


def _repetition_penalty(scores: np.ndarray, seen: Sequence[int], penalty: float) -> None:
    """Divide positive / multiply negative logits of seen tokens (the CTRL paper's rule)."""
    ids = np.unique(np.asarray(seen, dtype=np.int64))
    values = scores[ids]
    scores[ids] = np.where(values < 0, values * penalty, values / penalty)


def _banned_by_ngrams(sequence: Sequence[int], size: int) -> list[int]:
    """Tokens that would complete an n-gram already present in ``sequence``."""
    if size <= 0 or len(sequence) < size:
        return []
    prefix = tuple(sequence[len(sequence) - size + 1 :])
    banned = []
    for start in range(len(sequence) - size + 1):
        if tuple(sequence[start : start + size - 1]) == prefix:
            banned.append(sequence[start + size - 1])
    return banned


def _apply_constraint(
    scores: np.ndarray, constraint: TokenConstraint, generated: Sequence[int]
) -> np.ndarray:
    allowed = constraint.allowed(generated)
    if allowed is None:
        return scores
    masked = np.full_like(scores, -np.inf)
    if allowed.ids:
        index = np.asarray(list(allowed.ids), dtype=np.int64)
        masked[index] = scores[index]
    for token, bias in allowed.bias.items():
        masked[token] += bias
    return masked


def _sample(scores: np.ndarray, opts: GenerationOptions, rng: np.random.Generator) -> int:
    logits = scores.astype(np.float64) / (opts.temperature if opts.temperature else 1.0)
    if opts.top_k is not None and opts.top_k < logits.size:
        kth = np.partition(logits, -opts.top_k)[-opts.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    finite = np.isfinite(logits)
    if not finite.any():
        return int(np.argmax(scores))
    probs = np.zeros_like(logits)
    probs[finite] = np.exp(logits[finite] - logits[finite].max())
    probs /= probs.sum()
    if opts.top_p is not None and opts.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # keep the smallest set whose mass reaches top_p (always at least the best token)
        cut = int(np.searchsorted(cumulative, opts.top_p)) + 1
        kept = np.zeros_like(probs)
        kept[order[:cut]] = probs[order[:cut]]
        probs = kept / kept.sum()
    return int(rng.choice(probs.size, p=probs))


def choose_token(
    logits: np.ndarray,
    opts: GenerationOptions,
    *,
    sequence: Sequence[int],
    generated: Sequence[int],
    eos_ids: Collection[int],
    constraint: TokenConstraint | None = None,
    rng: np.random.Generator | None = None,
) -> int:
    """The next token after ``sequence`` (prompt + ``generated``) under ``opts``.

    ``rng`` is required when sampling; greedy ignores it.
    """
    scores = np.array(logits, dtype=np.float32, copy=True)
    if opts.repetition_penalty != 1.0 and sequence:
        _repetition_penalty(scores, sequence, opts.repetition_penalty)
    banned = _banned_by_ngrams(sequence, opts.no_repeat_ngram_size)
    if banned:
        scores[np.asarray(banned, dtype=np.int64)] = -np.inf
    if len(generated) < opts.min_new_tokens and eos_ids:
        scores[np.asarray(sorted(eos_ids), dtype=np.int64)] = -np.inf
    if constraint is not None:
        scores = _apply_constraint(scores, constraint, generated)
    if not opts.do_sample:
        return int(np.argmax(scores))
    if rng is None:
        raise ValueError("sampling needs a random generator")
    return _sample(scores, opts, rng)
