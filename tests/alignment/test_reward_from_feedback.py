"""`ragkit align reward --from-feedback DB`: the reward job trains on what `ragkit serve` recorded.

The store is filled through its own API (answers, votes, choices), exactly as the server does;
the backbone is the tiny random Llama of ``conftest.py`` and the word-level tokenizer, so the
answers use its vocabulary ("good" marks the answers users preferred).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner, Result

from alignment.reward_training import FEEDBACK_EXPORT_FILE
from ragkit.cli import app
from ragkit.feedback import FeedbackStore

runner = CliRunner()
WORDS = [f"w{i}" for i in range(60)]  # in the tiny tokenizer's vocabulary (conftest.py)
CONFIG = (
    "data: {validation_fraction: 0.25}\n"
    "training: {batch_size: 4, max_steps: 2, progress: false, learning_rate: 1.0e-3}\n"
    "max_length: 64\nmin_prompt_tokens: 2\n"
)


def fill_store(path: Path, questions: int, seed: int = 0) -> int:
    """Per question: a choice between two answers and an up/down vote on two more.

    Returns the number of preference pairs the store should export: one per choice plus one per
    (up, down) vote pair of a question.
    """
    rng = random.Random(seed)
    with FeedbackStore(path) as store:
        for q in range(questions):
            question = " ".join(rng.choices(WORDS, k=4))
            passages = [{"n": 1, "text": " ".join(rng.choices(WORDS, k=6))}]
            for a in range(4):
                words = rng.choices(WORDS, k=3)
                if a % 2 == 0:
                    words.append("good")
                store.record_answer(f"q{q}a{a}", question, " ".join(words), passages, "tiny")
            store.choose(f"q{q}a0", f"q{q}a1")
            store.vote(f"q{q}a2", 1)
            store.vote(f"q{q}a3", -1)
    return 2 * questions


def invoke(tiny_model_dir: Path, tmp_path: Path, db: Path, *extra: str) -> Result:
    config = tmp_path / "reward.yaml"
    config.write_text(CONFIG)
    return runner.invoke(
        app,
        [
            "align",
            "reward",
            "--config",
            str(config),
            "--model",
            str(tiny_model_dir),
            "--output",
            str(tmp_path / "out"),
            "--from-feedback",
            str(db),
            *extra,
        ],
    )


def test_reward_job_trains_on_the_feedback_store(tiny_model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    expected = fill_store(db, questions=8)
    result = invoke(tiny_model_dir, tmp_path, db, "--feedback-prompt", "question")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["feedback"]["pairs"] == expected == 16
    assert summary["train_pairs"] + summary["validation_pairs"] == expected
    assert summary["steps"] == 2
    out = tmp_path / "out"
    exported = (out / FEEDBACK_EXPORT_FILE).read_text().splitlines()
    assert len(exported) == expected
    assert all("good" in json.loads(line)["chosen"] for line in exported)
    # the saved config names the export, so the run folder says what it trained on
    assert FEEDBACK_EXPORT_FILE in (out / "config.yaml").read_text()
    assert (out / "model" / "reward_model.json").is_file()


def test_empty_feedback_store_is_a_one_line_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    with FeedbackStore(db) as store:  # answers but no feedback: nothing to pair
        store.record_answer("a1", "w1 w2", "w3", [], "tiny")
    result = invoke(tiny_model_dir, tmp_path, db)
    assert result.exit_code == 1
    stderr = result.stderr
    assert "no usable preference pairs" in stderr and "1 answers" in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    missing = invoke(tiny_model_dir, tmp_path, tmp_path / "nope.db")
    assert missing.exit_code == 1 and "not found" in missing.stderr
