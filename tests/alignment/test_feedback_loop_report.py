"""``benchmarks/feedback_loop_report.py report``: the numbers issue 20 asks of a loop run.

Why a test for a benchmark: the SFT vs SFT+PPO comparison and the held-out rise in standard
errors are read from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from benchmark_script import BENCHMARKS, load_script


def load_report(monkeypatch: pytest.MonkeyPatch) -> Any:
    return load_script(
        monkeypatch, BENCHMARKS / "feedback_loop_report.py", "feedback_loop_report_bench"
    )


def test_report_splits_scores_and_compares_ppo_with_current_and_control(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    report = load_report(monkeypatch)
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    qas = [
        {
            "id": str(i),
            "question": f"q{i}?",
            "answers": [] if i % 2 else [{"text": "a"}],
            "is_impossible": bool(i % 2),
        }
        for i in range(6)
    ]
    squad = {"data": [{"title": "T", "paragraphs": [{"context": "a", "qas": qas}]}]}
    (tmp_path / "q.json").write_text(json.dumps(squad))
    run = tmp_path / "run"
    (run / "ppo").mkdir(parents=True)
    config = tmp_path / "loop.yaml"
    config.write_text(
        f"serving: {{adapter_dir: {tmp_path / 'deploy'}}}\n"
        f"evaluation: {{questions: {tmp_path / 'q.json'}, index: idx}}\noutput_dir: {run}\n"
    )
    current = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0]  # answerable: 0, 2, 4
    candidate = [1.0, 1.0, 1.0, 0.0, 0.5, 1.0]
    (run / "evaluation.json").write_text(json.dumps({"current": current, "candidate": candidate}))
    (run / "decision.json").write_text(json.dumps({"promoted": False, "reason": "kept"}))
    metrics = [
        {"step": 0, "split": "eval", "score": 1.0, "score_std": 2.0, "prompts": 4.0},
        {"step": 1, "split": "train", "score": 0.5, "kl": 0.2, "response_length": 4.0},
        {"step": 1, "split": "eval", "score": 4.0, "score_std": 2.0, "prompts": 4.0},
    ]
    (run / "ppo" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"scores": [1.0, 0.0, 0.5, 1.0, 0.5, 1.0]}))
    assert report.main(["report", "--config", str(config), "--control", str(control)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["current"]["answerable_f1"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3
    assert out["current"]["abstention"] == pytest.approx(1 / 3)  # (0 + 0 + 1) / 3
    assert out["candidate_ppo"]["answerable_f1"] == pytest.approx(2.5 / 3)
    assert out["ppo_vs_current_answerable_f1"]["gain"] == pytest.approx(1 / 3)
    assert out["ppo_vs_control"]["gain"] == pytest.approx((4.5 - 4.0) / 6)
    assert out["ppo"]["held_out_rise"] == pytest.approx(3.0)
    assert out["ppo"]["held_out_rise_in_se"] == pytest.approx(3.0 / (2**0.5))  # se 1 each
    assert out["ppo"]["final_kl"] == pytest.approx(0.2)
    assert Path(out["plot"]).read_bytes()[:4] == b"\x89PNG"


def test_report_of_stages_run_one_by_one_applies_the_loops_rule(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = load_report(monkeypatch)
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    qas = [{"id": str(i), "question": "q?", "answers": [{"text": "a"}]} for i in range(8)]
    squad = {"data": [{"title": "T", "paragraphs": [{"context": "a", "qas": qas}]}]}
    (tmp_path / "q.json").write_text(json.dumps(squad))
    config = tmp_path / "loop.yaml"
    config.write_text(
        f"serving: {{adapter_dir: {tmp_path / 'deploy'}}}\n"
        f"evaluation: {{questions: {tmp_path / 'q.json'}, index: idx}}\n"
    )

    def scores(name: str, values: list[float]) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"scores": values}))
        return str(path)

    current = scores("current", [0.5] * 8)
    better = scores("better", [1.0] * 8)  # every question gains: the interval is above 0
    mixed = scores("mixed", [1.0, 0.0] * 4)  # gains and losses alike: within the noise
    for candidate, promoted in ((better, True), (mixed, False)):
        args = ["report", "--config", str(config), "--current", current, "--candidate", candidate]
        assert report.main(args) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["decision"]["promoted"] is promoted
        assert out["decision"]["reason"].startswith("would promote" if promoted else "would keep")
        assert "ppo" not in out and out["plot"] is None  # no PPO folder given
