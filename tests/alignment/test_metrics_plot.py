"""The curves PNG: a held-out score with a standard error gets a ± s.e. band (issue 20 asks for
the held-out reward with its noise, so that a rise can be read against it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alignment.metrics import plot_curves

pytest.importorskip("matplotlib")


def test_eval_scores_with_a_standard_error_get_a_band(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.axes import Axes

    bands: list[tuple[list[int], list[float], list[float]]] = []
    original = Axes.fill_between

    def recording(self: Axes, x: Any, low: Any, high: Any, **kwargs: Any) -> Any:
        bands.append((list(x), list(low), list(high)))
        return original(self, x, low, high, **kwargs)

    monkeypatch.setattr(Axes, "fill_between", recording)
    records = [
        {"step": 1, "split": "train", "score": 0.1, "kl": 0.0},
        {"step": 2, "split": "train", "score": 0.3, "kl": 0.1},
        {"step": 0, "split": "eval", "score": 1.0, "score_se": 0.5},
        {"step": 2, "split": "eval", "score": 2.0, "score_se": 0.25},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "curves.png"
    assert plot_curves(metrics, out, ("score", "kl"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bands == [([0, 2], [0.5, 1.75], [1.5, 2.25])]  # the eval score only; no kl band
