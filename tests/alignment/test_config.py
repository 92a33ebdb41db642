"""Job configs: YAML loading, unknown keys named in the error, the shipped examples load."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment import ConfigError, RewardJobConfig, SFTJobConfig, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs"


def test_yaml_config_loads_and_fills_defaults(tmp_path: Path) -> None:
    path = tmp_path / "reward.yaml"
    path.write_text("training:\n  learning_rate: 3.0e-5\n  epochs: 2\nmax_length: 256\n")
    config = load_config(RewardJobConfig, path)
    assert config.training.learning_rate == 3e-5 and config.training.epochs == 2
    assert config.max_length == 256 and config.training.batch_size == 8
    assert config.model.name_or_path is None and config.data.format == "hh"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  learning_rte: 1.0\n", "unknown key 'training.learning_rte'"),
        ("modle: {}\n", "unknown key 'modle'"),
        ("model:\n  lora: {rank: 4}\n", "unknown key 'model.lora.rank'"),
        ("training:\n  batch_size: zero\n", "'training.batch_size'"),
        (
            "training:\n  batch_size: 0\n",
            "'training.batch_size': Input should be greater than or equal to 1",
        ),
        ("model:\n  finetune: half\n", "'model.finetune'"),
        ("- just\n- a list\n", "expected a mapping"),
        ("training: [unclosed\n", "not valid YAML at line 2, column 1"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(RewardJobConfig, path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(SFTJobConfig, tmp_path / "nope.yaml")


def test_sft_rejects_a_prompt_budget_larger_than_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "sft.yaml"
    path.write_text("max_length: 16\nmin_prompt_tokens: 16\n")
    with pytest.raises(ConfigError, match="min_prompt_tokens must be smaller"):
        load_config(SFTJobConfig, path)


def test_shipped_example_configs_are_valid() -> None:
    reward = load_config(RewardJobConfig, EXAMPLES / "reward.yaml")
    sft = load_config(SFTJobConfig, EXAMPLES / "sft.yaml")
    assert reward.training.epochs == 1 and reward.data.format == "hh"
    assert sft.model.finetune == "lora" and sft.data.format == "hh_chosen"
