"""The paired bootstrap behind the promotion rule.

Both models answer the same held-out questions, so the comparison is paired: what varies from
question to question (some are easy for both, some hard for both) cancels in the per-question
difference. Resampling the questions with replacement and taking the mean difference each time
gives the sampling distribution of the mean gain; its central ``confidence`` interval is the
measured noise. A candidate wins only when the whole interval lies above ``min_gain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from alignment.errors import AlignmentError

_CHUNK = 1_000  # bootstrap resamples drawn at once (bounds memory for long question lists)


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs current on the same questions: means, mean gain and its interval."""

    questions: int
    current: float
    candidate: float
    gain: float
    low: float
    high: float
    confidence: float
    samples: int
    seed: int

    def wins(self, min_gain: float = 0.0) -> bool:
        """The promotion rule: the interval's lower end is above ``min_gain``."""
        return self.low > min_gain

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: ``candidate 0.512 vs current 0.471 (gain +0.041, 95% interval ...)``."""
        return (
            f"candidate {self.candidate:.4f} vs current {self.current:.4f} on "
            f"{self.questions} questions: gain {self.gain:+.4f}, "
            f"{100 * self.confidence:g}% paired-bootstrap interval "
            f"[{self.low:+.4f}, {self.high:+.4f}]"
        )


def paired_bootstrap(
    candidate: Sequence[float],
    current: Sequence[float],
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Percentile interval of the mean of ``candidate[i] - current[i]`` over resampled questions.

    Reproducible: the same scores, ``samples`` and ``seed`` give the same interval.
    """
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise AlignmentError(
            f"the evaluation scored {a.size} questions for the candidate and {b.size} for the "
            "current model: both must score the same questions, in the same order"
        )
    n = a.size
    if n < 2:
        raise AlignmentError(f"the evaluation scored {n} question(s); a comparison needs 2 or more")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise AlignmentError("the evaluation returned a score that is not a finite number")
    if samples < 1 or not 0.0 < confidence < 1.0:
        raise AlignmentError("bootstrap samples must be positive and confidence in (0, 1)")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(samples, dtype=np.float64)
    for start in range(0, samples, _CHUNK):
        count = min(_CHUNK, samples - start)
        rows = rng.integers(0, n, size=(count, n))
        means[start : start + count] = diff[rows].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedComparison(
        questions=n,
        current=float(b.mean()),
        candidate=float(a.mean()),
        gain=float(diff.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        samples=samples,
        seed=seed,
    )
