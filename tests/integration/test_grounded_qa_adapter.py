"""Integration: the shipped grounded-QA adapter (float16) on the packaged SmolLM2.

The benchmark measured the adapter in float32 on 197 held-out questions; this re-scores the
shipped file on the first 16 of them, with the benchmark's own prompt and scoring, so a broken
export (wrong keys, wrong base, lost precision) fails here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location(
        "sft_squad_bench", ROOT / "benchmarks" / "sft_squad_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_shipped_adapter_answers_with_short_spans(shared_data: Path) -> None:
    pytest.importorskip("gguf")
    from ragkit.generation import resolve_causal_lm

    try:
        resolve_causal_lm("smollm2")
    except Exception as exc:
        pytest.skip(f"packaged SmolLM2 unavailable: {exc}")
    bench = _bench()
    items = bench.read_articles(shared_data / "squad_small.json")[
        "Computational_complexity_theory"
    ][:16]
    base = bench.evaluate("smollm2", items, 32, 16)
    tuned = bench.evaluate("smollm2", items, 32, 16, adapter="grounded-qa-smollm2")
    spans = sum(
        row["answer"] and row["answer"].lower() in item.context.lower()
        for row, item in zip(tuned["rows"], items, strict=True)
    )
    assert tuned["median_words"] <= 4 < base["median_words"]
    assert spans >= 10, f"only {spans} of 16 answers are spans of the passage"
    assert tuned["f1"] > base["f1"] + 0.05, (tuned["f1"], base["f1"])
