"""The job layer's new options: PPO-ptx data, stop strings, checkpointing, LR schedule, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alignment import load_config
from alignment.errors import ConfigError
from alignment.metrics import read_metrics
from alignment.ppo import PPOJobConfig, train_ppo

from .test_ppo_job import job, write_hh

PPO = {
    "batch_size": 4,
    "mini_batches": 2,
    "ppo_epochs": 1,
    "response_length": 6,
    "temperature": 1.0,
    "learning_rate": 1e-3,
    "max_prompt_length": 64,
}


def test_job_with_ptx_stop_strings_checkpointing_and_linear_schedule(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    demos = write_hh(tmp_path / "demos.jsonl", 10, seed=3)
    config = job(
        tmp_path,
        tiny_model_dir,
        reward={"rule": "length"},
        updates=2,
        ppo={
            **PPO,
            "ptx_coef": 0.5,
            "stop_strings": ["w1"],
            "gradient_checkpointing": True,
            "lr_schedule": "linear",
            "warmup_steps": 1,
        },
        ptx={
            "data": {"path": str(demos), "format": "hh_chosen"},
            "batch_size": 2,
            "max_length": 64,
            "min_prompt_tokens": 2,
        },
    )
    result = train_ppo(config)
    train = [r for r in read_metrics(result.metrics_path) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["ptx_loss"] > 0 for r in train)
    assert all("stop_rate" in r for r in train)
    # 2 updates × 2 minibatches = 4 steps: warm-up 1, then 3/3, 2/3, 1/3 of the rate
    assert [r["lr"] for r in train] == pytest.approx([1e-3, 1e-3 / 3])
    samples = read_metrics(result.samples_path)
    assert all("stopped" in s and "w1" not in s["response"] for s in samples)
    reports = json.loads((config.output_dir / "data_report.json").read_text())
    assert len(reports) == 3  # prompts, demonstrations read, demonstrations tokenised
    state = json.loads(
        (config.output_dir / "checkpoints" / "update-000002" / "state.json").read_text()
    )
    assert state["ptx_batches"] == 4 and state["optimizer_steps"] == 4
    assert "PPO-ptx coefficient: 0.5" in (result.model_dir / "README.md").read_text()


def test_ptx_section_is_ignored_when_the_coefficient_is_zero(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = job(
        tmp_path,
        tiny_model_dir,
        updates=1,
        eval=False,
        ppo=PPO,
        ptx={"data": {"path": str(tmp_path / "missing.jsonl")}},  # never read
    )
    result = train_ppo(config)
    (train,) = read_metrics(result.metrics_path)
    assert "ptx_loss" not in train


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("ppo: {ptx_coef: 1.0}\n", "needs a 'ptx' section"),
        ("ppo: {grad_accumulation: 2}\nptx: {batch_size: 3}\n", "ptx.batch_size 3"),
        ("ppo: {ptx_coef: -1}\n", "'ppo.ptx_coef'"),
        ("ppo: {lr_schedule: linear, warmup_steps: 40}\nupdates: 10\n", "warmup_steps 40"),
        ("ppo: {lr_schedule: cosine}\n", "'ppo.lr_schedule'"),
        ("ppo: {stop_strings: ['']}\n", "stop string must not be empty"),
        ("ppo: {bf16: maybe}\n", "'ppo.bf16'"),
        ("ptx: {max_length: 16, min_prompt_tokens: 16}\n", "ptx.min_prompt_tokens"),
        ("ptx: {batchsize: 2}\n", "unknown key 'ptx.batchsize'"),
    ],
)
def test_bad_option_values_are_one_line_errors(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "ppo.yaml"
    path.write_text("reward: {rule: length}\n" + yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(PPOJobConfig, path)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_example_config_documents_the_new_options() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "configs" / "ppo.yaml"
    config = load_config(PPOJobConfig, path)
    data: dict[str, Any] = config.ppo.model_dump()
    for key in ("ptx_coef", "stop_strings", "gradient_checkpointing", "bf16", "lr_schedule"):
        assert key in path.read_text(), key
        assert key in data


def test_rlhf_example_passes_the_ppo_options_through(tmp_path: Path) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "rlhf_train.py"
    spec = importlib.util.spec_from_file_location("rlhf_train_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = tmp_path / "hh.jsonl"
    args = example.parse_args(
        ["--ptx-coef", "2.5", "--gradient-checkpointing", "--data", str(data), "--limit", "30"]
    )
    config = example.ppo_config(args, tmp_path / "sft", tmp_path / "rm")
    assert config.ppo.ptx_coef == 2.5 and config.ppo.gradient_checkpointing
    assert not config.ppo.bf16
    assert config.ptx is not None and config.ptx.data.path == data == config.data.path
    assert config.ptx.data.limit == 30 and config.ptx.data.format == "hh_chosen"
    plain = example.ppo_config(example.parse_args([]), tmp_path / "sft", tmp_path / "rm")
    assert plain.ppo.ptx_coef == 0.0 and plain.ppo.stop_strings == ["\n\nHuman:"]


def test_heldout_scored_every_n_updates_with_the_progress_bar(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = job(
        tmp_path, tiny_model_dir, reward={"rule": "length"}, updates=3, ppo=PPO, eval_every=2
    )
    assert config.progress  # on by default
    result = train_ppo(config)
    evals = [r for r in read_metrics(result.metrics_path) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 3]  # start, every 2, end (not twice at 3)
    assert all("score" in r for r in evals)
    captured = capsys.readouterr()
    drawn = captured.out + captured.err
    assert "clip_fraction" in drawn and "response_length" in drawn  # the bar's metrics
