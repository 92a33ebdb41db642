"""The PPO job on a tiny random Llama: outputs, exact resume, config errors, prompt plumbing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from alignment import RewardModel, ensure_pad_token, load_config
from alignment.config import dump_config
from alignment.errors import ConfigError
from alignment.metrics import read_metrics
from alignment.ppo import PPOJobConfig, train_ppo
from alignment.ppo.job_data import load_prompts, prompts_for_update

from .conftest import WORDS, make_model, make_tokenizer


def write_hh(path: Path, n: int, seed: int = 0) -> Path:
    """HH-format lines; two share a prompt so distinct prompts < lines."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        head = "\n\nHuman: " + " ".join(rng.choices(WORDS, k=rng.randint(2, 5)))
        if i % 7 == 6:  # a multi-turn dialogue: the prompt keeps the earlier turns
            head += "\n\nAssistant: good\n\nHuman: " + " ".join(rng.choices(WORDS, k=2))
        prompt = head + "\n\nAssistant:"
        lines.append(json.dumps({"chosen": prompt + " good w1", "rejected": prompt + " bad w2"}))
    lines.append(lines[0])  # a duplicate prompt
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def job(tmp_path: Path, model_dir: Path, name: str = "run", **overrides: Any) -> PPOJobConfig:
    data = write_hh(tmp_path / "hh.jsonl", 30)
    settings: dict[str, Any] = {
        "policy": {"name_or_path": str(model_dir)},
        "reward": {"rule": "count:w7"},
        "data": {"path": str(data), "heldout_fraction": 0.2, "heldout_max": 4},
        "ppo": {
            "batch_size": 4,
            "mini_batches": 2,
            "ppo_epochs": 2,
            "response_length": 6,
            "temperature": 1.0,
            "learning_rate": 1e-3,
            "max_prompt_length": 64,
        },
        "updates": 2,
        "checkpoint_every": 1,
        "sample_every": 1,
        "samples_per_log": 2,
        "output_dir": str(tmp_path / name),
        **overrides,
    }
    return PPOJobConfig.model_validate(settings)


def policy_weights(result_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(result_dir / "model" / "model.safetensors"))


def test_two_update_job_writes_metrics_samples_checkpoint_and_model(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = job(tmp_path, tiny_model_dir, reward={"rule": "length"})
    result = train_ppo(config)
    out = config.output_dir
    assert result.updates == 2 and result.resumed_from is None
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == [1, 2]
    assert [r["step"] for r in evals] == [0, 2]  # held-out score at the start and the end
    assert evals[0]["prompts"] == result.heldout_prompts == 4
    for r in evals:  # the standard error of the held-out mean, for the plot's band
        assert r["score_se"] == pytest.approx(r["score_std"] / 2.0)
    for key in ("score", "kl", "entropy", "approx_kl", "clip_fraction", "value_loss"):
        assert all(key in r for r in train)
    samples = read_metrics(out / "samples.jsonl")
    assert [s["update"] for s in samples] == [1, 1, 2, 2]
    assert all(s["prompt"].endswith("\n\nAssistant:") for s in samples)
    assert all(s["score"] == len(s["response"].split()) for s in samples)
    # checkpoints every update, the newest two kept; the final one holds update 2
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["update-000001", "update-000002"]
    state = json.loads((out / "checkpoints" / "update-000002" / "state.json").read_text())
    assert state["updates"] == 2
    # the final policy loads as a plain causal LM and differs from the start
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    start = make_model().state_dict()
    moved = model.state_dict()["model.layers.0.mlp.up_proj.weight"]
    assert not torch.equal(moved, start["model.layers.0.mlp.up_proj.weight"])
    assert json.loads((result.model_dir / "alignment_ppo.json").read_text())["updates"] == 2
    card = (result.model_dir / "README.md").read_text()
    assert "rule length" in card and "updates: 2" in card
    assert json.loads((out / "result.json").read_text())["updates"] == 2


def test_resume_after_interruption_equals_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings: dict[str, Any] = {"updates": 3, "checkpoint_every": 2, "reward": {"rule": "length"}}
    full = train_ppo(job(tmp_path, tiny_model_dir, "full", **settings))
    config = job(tmp_path, tiny_model_dir, "cut", **settings)

    def interrupt(update: int, metrics: dict[str, float]) -> None:
        if update == 3:  # after update 3's metrics were written, before its checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ppo(config, on_update=interrupt)
    assert not (config.output_dir / "model").exists()
    resumed = train_ppo(config, resume=True)
    assert resumed.resumed_from == 2

    a, b = policy_weights(full.output_dir), policy_weights(resumed.output_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the metrics read as one run: update 3 once, and the same numbers
    cut = [r for r in read_metrics(resumed.metrics_path) if r["split"] == "train"]
    ref = [r for r in read_metrics(full.metrics_path) if r["split"] == "train"]
    assert [r["step"] for r in cut] == [1, 2, 3]
    for x, y in zip(cut, ref, strict=True):
        assert x["score"] == y["score"] and x["kl"] == y["kl"]
        assert x["policy_loss"] == y["policy_loss"]
    assert resumed.heldout_start == full.heldout_start
    assert resumed.heldout_end == full.heldout_end
    assert [s["update"] for s in read_metrics(resumed.samples_path)] == [1, 1, 2, 2, 3, 3]


def test_resume_refuses_a_run_with_other_settings(tmp_path: Path, tiny_model_dir: Path) -> None:
    train_ppo(job(tmp_path, tiny_model_dir, updates=1))
    other = job(tmp_path, tiny_model_dir, updates=1, reward={"rule": "count:w8"})
    with pytest.raises(Exception, match="other"):
        train_ppo(other, resume=True)


def test_reward_model_folder_and_value_model_copied_from_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    tokenizer = make_tokenizer()
    backbone = make_model(seed=1).model
    ensure_pad_token(tokenizer, backbone)
    RewardModel(backbone, tokenizer, max_length=64, min_prompt_tokens=2).save(tmp_path / "rm")
    config = job(
        tmp_path,
        tiny_model_dir,
        reward={"model_dir": str(tmp_path / "rm")},
        updates=1,
        sample_every=None,
        data={"path": str(write_hh(tmp_path / "x.jsonl", 12)), "heldout_fraction": 0.0},
    )
    result = train_ppo(config)
    assert result.heldout_prompts == 0 and result.heldout_start == {}
    (train,) = read_metrics(result.metrics_path)
    assert train["split"] == "train" and train["value_loss"] > 0
    assert not (result.output_dir / "samples.jsonl").read_text()
    assert "reward model" in (result.model_dir / "README.md").read_text()


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("reward: {rule: length}\nupdate: 3\n", "unknown key 'update'"),
        ("reward: {rule: length}\nppo: {batch_sise: 4}\n", "unknown key 'ppo.batch_sise'"),
        ("reward: {rule: length}\nppo: {value: both}\n", "'ppo.value'"),
        ("updates: 3\n", "'reward'"),
        ("reward: {rule: lenght}\n", "'reward'"),
        ("reward: {rule: length, model_dir: rm}\n", "exactly one"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(PPOJobConfig, path)
    message = str(info.value)
    assert key in message and "\n" not in message


def test_example_config_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "configs" / "ppo.yaml"
    config = load_config(PPOJobConfig, path)
    assert config.reward.model_dir is not None and config.data.format == "hh"


def test_prompts_split_by_prompt_and_batches_depend_only_on_the_update(tmp_path: Path) -> None:
    config = job(tmp_path, tmp_path)
    split = load_prompts(config.data)
    assert len(split.train) + len(split.heldout) == 30  # the duplicate line is one prompt
    assert not set(split.train) & set(split.heldout) and len(split.heldout) == 4
    assert all(p.startswith("\n\nHuman:") and p.endswith("\n\nAssistant:") for p in split.train)
    assert any("\n\nAssistant: good\n\nHuman:" in p for p in split.train + split.heldout)
    n = len(split.train)
    first_epoch = [p for u in range(n) for p in prompts_for_update(split.train, u, 1, seed=0)]
    assert sorted(first_epoch) == sorted(split.train)  # each prompt once per epoch
    assert prompts_for_update(split.train, 5, 4, 0) == prompts_for_update(split.train, 5, 4, 0)
    assert prompts_for_update(split.train, 5, 4, 0) != prompts_for_update(split.train, 5, 4, 1)


def test_cli_command_runs_a_job_and_reports_bad_configs_in_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from ragkit.cli.align import align_ppo_command

    app = typer.Typer()
    app.command()(align_ppo_command)
    config = job(tmp_path, tiny_model_dir, updates=3, reward={"rule": "length"})
    path = tmp_path / "ppo.yaml"
    path.write_text(dump_config(config))
    out = tmp_path / "cli-out"
    options = ["--limit", "12", "--updates", "1", "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(app, ["--config", str(path), "--output", str(out), *options])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["updates"] == 1 and summary["model"] == str(out / "model")
    assert summary["train_prompts"] + summary["heldout_prompts"] == 12
    assert (out / "metrics.jsonl").is_file()

    path.write_text("reward: {rule: length}\nppo: {epochs: 2}\n")
    bad = CliRunner().invoke(app, ["--config", str(path)])
    assert bad.exit_code == 1
    assert bad.stderr.strip().count("\n") == 0 and "unknown key 'ppo.epochs'" in bad.stderr
