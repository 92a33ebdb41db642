"""Choosing few-shot examples for a query.

Every selector returns examples ranked best first, so a budget can drop from the end. The
embedding selectors take any callable from texts to vectors (``Embedder.encode``) through
:class:`EmbeddingCache`, which embeds each distinct text once: the example pool is embedded
on first use and reused for every later query.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from prompts.examples import Example
from prompts.protocols import EmbedFn

Matrix = npt.NDArray[np.float64]


@runtime_checkable
class ExampleSelector(Protocol):
    """Picks examples for one query, best first."""

    def select(self, query: str) -> list[Example]: ...


class EmbeddingCache:
    """Memoises an embedding callable per text; vectors are L2-normalised here.

    Normalising locally means any embedder works for cosine similarity, not only ones that
    already return unit vectors.
    """

    def __init__(self, embed: EmbedFn) -> None:
        self.embed = embed
        self._vectors: dict[str, npt.NDArray[np.float64]] = {}
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> Matrix:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            self.calls += 1
            raw = np.asarray(self.embed(missing), dtype=np.float64)
            if raw.ndim != 2 or raw.shape[0] != len(missing):
                raise ValueError(
                    f"the embedding callable returned shape {raw.shape} for {len(missing)} texts"
                )
            norms = np.linalg.norm(raw, axis=1, keepdims=True)
            raw = raw / np.where(norms == 0, 1.0, norms)
            for text, vector in zip(missing, raw, strict=True):
                self._vectors[text] = vector
        if not texts:
            return np.zeros((0, 0))
        return np.stack([self._vectors[t] for t in texts])


def _check_k(k: int) -> int:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return k


class FixedSelector:
    """The same examples, in the given order, for every query."""

    def __init__(self, examples: Sequence[Example], k: int | None = None) -> None:
        self.examples = list(examples)
        self.k = len(self.examples) if k is None else _check_k(k)

    def select(self, query: str) -> list[Example]:
        return self.examples[: self.k]


class RandomSelector:
    """``k`` examples drawn at random, reproducibly.

    The draw depends on ``seed`` and the query text (not on how many queries came before), so
    a benchmark gives the same prompts whatever order it runs its questions in.
    """

    def __init__(self, examples: Sequence[Example], k: int, seed: int = 0) -> None:
        self.examples = list(examples)
        self.k = _check_k(k)
        self.seed = seed

    def select(self, query: str) -> list[Example]:
        rng = random.Random(self.seed * 1_000_003 + zlib.crc32(query.encode("utf-8")))
        return rng.sample(self.examples, min(self.k, len(self.examples)))


class _Embedded:
    def __init__(
        self, examples: Sequence[Example], embed: EmbedFn | EmbeddingCache, k: int
    ) -> None:
        self.examples = list(examples)
        self.k = _check_k(k)
        self.cache = embed if isinstance(embed, EmbeddingCache) else EmbeddingCache(embed)

    def _similarities(self, query: str) -> tuple[Matrix, Matrix]:
        pool = self.cache([e.match_text for e in self.examples])
        q = self.cache([query])[0]
        return pool @ q, pool


class SemanticSelector(_Embedded):
    """The ``k`` examples most similar (cosine) to the query; ties keep pool order."""

    def select(self, query: str) -> list[Example]:
        if not self.examples or self.k == 0:
            return []
        scores, _ = self._similarities(query)
        order = np.argsort(-scores, kind="stable")[: self.k]
        return [self.examples[i] for i in order]


class MMRSelector(_Embedded):
    """Maximal marginal relevance: similar to the query but not to each other.

    Each pick maximises ``(1 - diversity) * sim(query, e) - diversity *
    max sim(e, picked)``; ``diversity=0`` is plain similarity ranking. Near-duplicate examples
    waste context, which is why this exists.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        embed: EmbedFn | EmbeddingCache,
        k: int,
        diversity: float = 0.5,
    ) -> None:
        super().__init__(examples, embed, k)
        if not 0.0 <= diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {diversity}")
        self.diversity = diversity

    def select(self, query: str) -> list[Example]:
        if not self.examples or self.k == 0:
            return []
        relevance, pool = self._similarities(query)
        picked: list[int] = []
        candidates = list(range(len(self.examples)))
        while candidates and len(picked) < self.k:
            if picked:
                redundancy = (pool[candidates] @ pool[picked].T).max(axis=1)
            else:
                redundancy = np.zeros(len(candidates))
            scores = (1 - self.diversity) * relevance[candidates] - self.diversity * redundancy
            best = candidates[int(np.argmax(scores))]
            picked.append(best)
            candidates.remove(best)
        return [self.examples[i] for i in picked]


class LengthSelector:
    """The best-ranked examples whose formatted length fits a token budget.

    Ranks come from ``ranker`` (another selector) or the pool order. Examples are skipped
    whole, never cut; a long example is skipped and shorter, lower-ranked ones may still fit.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        count_tokens: Callable[[str], int],
        budget: int,
        ranker: ExampleSelector | None = None,
        format_example: Callable[[Example], str] | None = None,
        k: int | None = None,
    ) -> None:
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        self.examples = list(examples)
        self.count_tokens = count_tokens
        self.budget = budget
        self.ranker = ranker
        self.format_example = format_example or (lambda e: f"{e.input}\n{e.output}")
        self.k = k

    def select(self, query: str) -> list[Example]:
        ranked = self.ranker.select(query) if self.ranker is not None else self.examples
        chosen: list[Example] = []
        used = 0
        for example in ranked:
            if self.k is not None and len(chosen) >= self.k:
                break
            cost = self.count_tokens(self.format_example(example))
            if used + cost <= self.budget:
                chosen.append(example)
                used += cost
        return chosen
