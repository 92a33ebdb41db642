"""`ragkit align reward|sft`: the CLI runs the same jobs as the example scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from ragkit.cli import app

runner = CliRunner()


def test_align_reward_runs_a_quick_job(
    tiny_model_dir: Path, tmp_path: Path, make_pairs: object, write_pairs: object
) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", make_pairs(24))  # type: ignore[operator]
    config = tmp_path / "reward.yaml"
    config.write_text(
        f"data: {{path: {data}, format: fields, validation_fraction: 0.25}}\n"
        "training: {batch_size: 4, max_steps: 5}\nmax_length: 64\nmin_prompt_tokens: 2\n"
    )
    result = runner.invoke(
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
            # the example scripts' options, now the command's: override the config's training
            "--max-steps",
            "2",
            "--threads",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["train_pairs"] + summary["validation_pairs"] == 24
    assert (tmp_path / "out" / "model" / "reward_model.json").is_file()
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["training"]["max_steps"] == 2
    assert saved["training"]["threads"] == 1 and saved["training"]["progress"] is False


def test_align_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text("training: {batch_size: 4}\nunknown_key: 1\n")
    result = runner.invoke(app, ["align", "sft", "--config", str(config)])
    assert result.exit_code == 1
    assert "unknown_key" in result.stderr and "Traceback" not in result.output
    missing = runner.invoke(app, ["align", "reward", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "not found" in missing.stderr


LOOP_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "configs" / "feedback_loop.yaml"


def test_align_loop_missing_store_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "align",
            "loop",
            "--feedback-db",
            str(tmp_path / "nothing.db"),
            "--config",
            str(LOOP_CONFIG),
            "--output",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "feedback store not found" in lines[0], result.output


def test_align_loop_prints_the_decision(tmp_path: Path, monkeypatch: Any) -> None:
    import alignment.feedback_loop as loop

    seen: dict[str, Any] = {}

    class Result:
        def summary(self) -> dict[str, Any]:
            return {"promoted": False, "reason": "candidate within noise"}

    def fake(
        db: Any, config: Any, *, output_dir: Any = None, on_stage: Any = None, resume: bool
    ) -> Result:
        seen.update(db=db, config=config, output_dir=output_dir, resume=resume)
        on_stage("export", {"pairs": 3})
        return Result()

    monkeypatch.setattr(loop, "run_feedback_loop", fake)
    db = tmp_path / "feedback.db"
    command = ["align", "loop", "--feedback-db", str(db), "--config", str(LOOP_CONFIG)]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reason"] == "candidate within noise"
    assert seen == {"db": db, "config": LOOP_CONFIG, "output_dir": None, "resume": False}
    assert runner.invoke(app, [*command, "--resume"]).exit_code == 0
    assert seen["resume"] is True


def test_align_files_that_are_not_what_they_should_be_are_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """From a new-user probe: each of these was a traceback (or trained on) before."""
    folder = tmp_path / "folder"
    folder.mkdir()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"prompt": "Q: a b c", "response": " c"}) + "\n")

    def config(text: str) -> str:
        path = tmp_path / f"c{abs(hash(text))}.yaml"
        path.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\n" + text)
        return str(path)

    cases: list[tuple[list[str], str]] = [
        (["sft", "--config", str(folder)], "is a folder, not a YAML file"),
        (["reward", "--config", str(binary)], "is not a text (UTF-8) YAML file"),
        (
            [
                "sft",
                "--config",
                config(f"data: {{path: {demos}, format: jsonl}}\noutput_dir: {a_file}\n"),
            ],
            f"output_dir {a_file}: {a_file} is a file, not a folder",
        ),
        (
            [
                "sft",
                "--config",
                config(
                    f"data: {{path: {demos}, format: jsonl}}\ntraining: {{learning_rate: .inf}}\n"
                ),
            ],
            "training.learning_rate",
        ),
        (
            [
                "sft",
                "--config",
                config(f"data: {{path: {empty}, format: jsonl}}\noutput_dir: {tmp_path / 'o'}\n"),
            ],
            "no usable training demonstrations",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["align", *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0
        assert message in result.stderr, (message, result.stderr)
