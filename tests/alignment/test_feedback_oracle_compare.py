"""``feedback_oracle.py``: compare-reward (two reward models compared pair by pair), and the
heldout-questions and control-data files of the loop run.

Why a test for a benchmark: the issue-20 rule for initialising the reward model from the SFT
policy is decided by this paired difference."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmark_script import BENCHMARKS, load_script


def load_oracle(monkeypatch: pytest.MonkeyPatch) -> Any:
    return load_script(monkeypatch, BENCHMARKS / "feedback_oracle.py", "feedback_oracle_bench")


def test_the_difference_is_paired_on_the_pairs_both_scored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oracle = load_oracle(monkeypatch)
    a = {"pairs_file": "p.jsonl", "margins": {"0": 1.0, "1": -1.0, "2": -0.5, "3": 2.0}}
    b = {"pairs_file": "p.jsonl", "margins": {"0": 0.5, "1": 0.2, "2": 0.1, "4": 1.0}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert oracle.main(["compare-reward", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pairs"] == 3  # pair 3 and pair 4 were scored by one model only
    assert (result["accuracy_a"], result["accuracy_b"]) == (round(1 / 3, 4), 1.0)
    assert result["b_right_a_wrong"] == 2 and result["a_right_b_wrong"] == 0
    assert result["ci95"][0] <= result["difference_b_minus_a"] <= result["ci95"][1]

    b["pairs_file"] = "other.jsonl"
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert oracle.main(["compare-reward", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    (tmp_path / "c.json").write_text("{}")
    assert oracle.main(["compare-reward", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2
    assert oracle.main(["compare-reward", str(tmp_path / "a.json"), str(tmp_path / "nope")]) == 2


def test_control_data_keeps_the_answers_no_pair_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PPO control trains on the top of each prompt's ranking: A > B and B > C keep A only;
    two answers never compared with each other and never beaten are both kept."""
    oracle = load_oracle(monkeypatch)
    pairs = [
        {"prompt": "P1 Answer:", "chosen": "A", "rejected": "B"},
        {"prompt": "P1 Answer:", "chosen": "B", "rejected": "C"},
        {"prompt": "P2 Answer:", "chosen": "X", "rejected": "Z"},
        {"prompt": "P2 Answer:", "chosen": "Y", "rejected": "Z"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "demos.jsonl"
    assert oracle.main(["control-data", "--pairs", str(path), "--out", str(out)]) == 0
    demos = [json.loads(line) for line in out.read_text().splitlines()]
    assert demos == [
        {"prompt": "P1 Answer:", "response": " A"},
        {"prompt": "P2 Answer:", "response": " X"},
        {"prompt": "P2 Answer:", "response": " Y"},
    ]
    assert "3 demonstrations for 2 prompts (4 pairs)" in capsys.readouterr().out
    (tmp_path / "bad.jsonl").write_text('{"prompt": "P"}\n')
    assert (
        oracle.main(["control-data", "--pairs", str(tmp_path / "bad.jsonl"), "--out", str(out)])
        == 2
    )
    assert "is not a pairs file" in capsys.readouterr().err


def test_heldout_questions_are_the_test_article_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    oracle = load_oracle(monkeypatch)
    aq = sys.modules["answer_quality"]

    def article(title: str, n: int) -> dict[str, Any]:
        qas = [{"id": f"{title}{i}", "question": "q?", "answers": []} for i in range(n)]
        return {"title": title, "paragraphs": [{"context": "c", "qas": qas}]}

    data = tmp_path / "squad.json"
    squad = {"version": "v2.0", "data": [article("Train", 2), article(aq.TEST_ARTICLE, 3)]}
    data.write_text(json.dumps(squad))
    monkeypatch.setattr(aq, "DATA", data)
    out = tmp_path / "held" / "out.json"
    assert oracle.main(["heldout-questions", "--out", str(out)]) == 0
    held = json.loads(out.read_text())
    assert [a["title"] for a in held["data"]] == [aq.TEST_ARTICLE]
    assert held["version"] == "v2.0"
