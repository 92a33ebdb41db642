"""The runnable example scripts (`ragkit align` under another name): overrides from the
command line, one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_script_runs_a_quick_job(
    tiny_model_dir: Path,
    tmp_path: Path,
    make_pairs: object,
    write_pairs: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", make_pairs(40))  # type: ignore[operator]
    config = tmp_path / "reward.yaml"
    config.write_text(
        f"data: {{path: {data}, format: fields, validation_fraction: 0.25}}\n"
        "training: {batch_size: 4}\nmax_length: 64\nmin_prompt_tokens: 2\n"
    )
    script = _load("train_reward_model")
    code = script.main(
        [
            "--config",
            str(config),
            "--model",
            str(tiny_model_dir),
            "--limit",
            "16",
            "--max-steps",
            "2",
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["train_pairs"] + summary["validation_pairs"] == 16
    assert (tmp_path / "out" / "model" / "reward_model.json").is_file()


def test_sft_script_reports_a_bad_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text("training: {lerning_rate: 0.1}\n")
    assert _load("train_sft").main(["--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown key 'training.lerning_rate'" in err
    assert "\n" not in err
