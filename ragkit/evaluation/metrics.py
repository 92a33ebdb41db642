"""Retrieval and answer metrics, as plain functions usable in notebooks and training loops.

Retrieval metrics take the ranked list of retrieved ids and the set of relevant ids of one
query; answer metrics follow the official SQuAD evaluation (lower-case, strip punctuation and
the articles a/an/the, collapse whitespace; best score over the gold answers).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def recall_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant ids found in the top ``k`` (0 when nothing is relevant)."""
    if not relevant:
        return 0.0
    return len(set(retrieved[:k]) & set(relevant)) / len(relevant)


def hit_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 if any relevant id is in the top ``k``: the "is the right passage in the prompt" measure."""
    return 1.0 if set(retrieved[:k]) & set(relevant) else 0.0


def mrr_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the top ``k``; 0 if none."""
    for rank, item in enumerate(retrieved[:k], start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """Binary-relevance nDCG: a relevant id at rank r gains 1/log2(r + 1); duplicates count once."""
    seen: set[str] = set()
    dcg = 0.0
    for rank, item in enumerate(retrieved[:k], start=1):
        if item in relevant and item not in seen:
            dcg += 1.0 / math.log2(rank + 1)
            seen.add(item)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def normalize_answer(text: str) -> str:
    """The SQuAD normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    golds = [normalize_answer(a) for a in answers]
    return 1.0 if normalize_answer(prediction) in golds else 0.0


def _f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Iterable[str]) -> float:
    """Best token-level F1 over the gold answers."""
    scores = [_f1(prediction, a) for a in answers]
    return max(scores) if scores else 0.0


def groundedness(answer: str, passages: Iterable[str]) -> float:
    """Share of the answer's normalised tokens that occur in the given passages."""
    tokens = normalize_answer(answer).split()
    if not tokens:
        return 0.0
    vocabulary = set(normalize_answer(" ".join(passages)).split())
    return sum(1 for t in tokens if t in vocabulary) / len(tokens)


ABSTENTION_PATTERNS = (
    "context does not say",
    "does not say",
    "not mentioned",
    "no information",
    "cannot answer",
    "don't know",
    "do not know",
    "not in the passages",
    "passages do not contain",
)


def abstained(answer: str) -> bool:
    """Whether an answer declines to answer (the grounded-QA prompt asks for "The context does not say")."""
    lowered = answer.lower()
    return any(p in lowered for p in ABSTENTION_PATTERNS)
