"""The answer-quality benchmark passes every option it takes to the pipeline it measures.

Why a test for a benchmark: ``eval --config default --abstain-bias B`` once dropped the bias
silently, so a bias sweep measured the profile's bias at every point.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmark_script import BENCHMARKS, load_script

from ragkit.generation.adapters import AdapterError
from ragkit.rag import RAGPipeline


def load_benchmark(monkeypatch: pytest.MonkeyPatch) -> Any:
    return load_script(
        monkeypatch, BENCHMARKS / "answer_quality.py", "answer_quality_bench", on_path=False
    )


def test_the_default_configuration_gets_the_bias_threshold_and_adapter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def from_index(index: Any, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "pipeline"

    monkeypatch.setattr(RAGPipeline, "from_index", staticmethod(from_index))
    bench = load_benchmark(monkeypatch)
    bench.build_pipeline(
        "default", tmp_path, abstain_bias=-2.5, k=3, adapter="some/adapter", abstain_below=0.0
    )
    assert seen == {"abstain_bias": -2.5, "k": 3, "adapter": "some/adapter", "abstain_below": 0.0}
    seen.clear()
    bench.build_pipeline("default", tmp_path)
    assert seen == {}  # nothing given: the profile decides


def load_acceptance_check(monkeypatch: pytest.MonkeyPatch) -> Any:
    load_benchmark(monkeypatch)  # acceptance_check imports it by its script name
    monkeypatch.setitem(sys.modules, "answer_quality", sys.modules["answer_quality_bench"])
    return load_script(
        monkeypatch, BENCHMARKS / "acceptance_check.py", "acceptance_check", on_path=False
    )


def test_the_acceptance_check_wants_whole_words_and_a_quote_from_the_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    check = load_acceptance_check(monkeypatch)
    source = tmp_path / "Strasbourg.txt"
    source.write_text("The Grande Île lies in the River Ill.", encoding="utf-8")

    class Cited:
        def __init__(self, quote: str, start: int) -> None:
            self.quote, self.quote_start, self.quote_end = quote, start, start + len(quote)
            self.source = str(source)

    class Answered:
        def __init__(self, text: str, citations: list[Cited], abstained: bool = False) -> None:
            self.answer, self.citations, self.abstained = text, citations, abstained

    assert check.check(Answered("River Ill", [Cited("River Ill", 27)]), "Ill")["passed"]
    assert not check.check(Answered("will", [Cited("lies", 16)]), "Ill")["correct"]
    wrong_offsets = check.check(Answered("Ill", [Cited("Ill", 3)]), "Ill")
    assert wrong_offsets["correct"] and not wrong_offsets["cited"]
    assert not check.check(Answered("Ill", [], abstained=True), "Ill")["passed"]


def test_the_acceptance_check_refuses_a_bad_adapter_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check = load_acceptance_check(monkeypatch)
    monkeypatch.setattr(check, "ensure_wiki_index", lambda: tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AdapterError("adapter '/nowhere' is neither a packaged adapter nor a folder")

    monkeypatch.setattr(check, "build_pipeline", refuse)
    assert check.main(["--adapter", "/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: adapter '/nowhere' is neither a packaged adapter nor a folder"


def test_compare_scores_each_side_at_its_own_probe_veto(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two adapters are compared at their own veto thresholds, from runs with the veto off."""
    bench = load_benchmark(monkeypatch)

    def row(qid: str, impossible: bool, answerability: float) -> dict[str, Any]:
        common = {"id": qid, "question": qid, "impossible": impossible, "abstained": False}
        extra = {"abstain_ok": 0.0} if impossible else {"em": 1.0, "f1": 1.0}
        return {**common, **extra, "answer": "x", "answerability": answerability, "citations": []}

    rows = [row("a1", False, 0.12), row("u1", True, 0.12)]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"configs": {"default": {"rows": rows}}}), encoding="utf-8")

    assert bench.main(["compare", str(path), str(path), "--veto-b", "0.15"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the veto at 0.15 turns the answer at 0.12 into an abstention
    assert report["f1"]["mean"] == -1.0
    assert report["abstention_accuracy"]["mean"] == 1.0
    assert bench.main(["compare", str(path), str(path), "--veto-a", "0.1", "--veto-b", "0.1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["f1"]["mean"] == 0.0 and report["abstention_accuracy"]["mean"] == 0.0
