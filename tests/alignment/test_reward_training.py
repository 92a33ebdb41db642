"""The reward-model job end to end on a tiny model: it learns, resumes exactly, saves everything."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment import CheckpointError, RewardJobConfig, RewardModel, train_reward_model
from alignment.checkpoint import checkpoint_dirs
from alignment.job_loop import Interrupted
from alignment.metrics import read_metrics

ConfigFactory = Callable[..., RewardJobConfig]


def test_the_loop_learns_a_synthetic_preference(reward_config: ConfigFactory) -> None:
    """Chosen responses contain the word 'good': validation accuracy must reach 0.9."""
    config = reward_config(200, eval_every=5)
    result = train_reward_model(config)
    assert result.train_pairs == 150 and result.validation_pairs == 50
    assert result.validation["accuracy"] >= 0.9
    assert result.validation["margin"] > 0
    assert result.validation["loss"] < 0.3
    evals = [r for r in read_metrics(config.output_dir / "metrics.jsonl") if r["split"] == "eval"]
    assert len(evals) >= 3 and evals[-1]["accuracy"] >= evals[0]["accuracy"]


def test_run_folder_contents_model_card_and_normalisation(reward_config: ConfigFactory) -> None:
    config = reward_config(48, max_steps=3)
    result = train_reward_model(config)
    out = config.output_dir
    for name in ("config.yaml", "data_report.json", "metrics.jsonl", "curves.png", "result.json"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((out / "tensorboard").iterdir())
    card = (result.model_dir / "README.md").read_text()
    assert "steps: 3" in card and "accuracy" in card and "base model" in card
    summary = json.loads((out / "result.json").read_text())
    assert summary["steps"] == 3 and summary["validation"]["pairs"] == 12
    reports = json.loads((out / "data_report.json").read_text())
    assert reports[0]["kept"] == 48
    # the stored bias makes the reference set (validation chosen + rejected) average 0
    model = RewardModel.load(result.model_dir)
    assert model.normalisation_bias == pytest.approx(result.normalisation_bias)
    from alignment.data import read_preference_jsonl, train_validation_split

    pairs = read_preference_jsonl(config.data.path).records
    val = train_validation_split(pairs, validation_fraction=0.25).validation
    scores = model.score(
        [p.prompt for p in val] * 2, [p.chosen for p in val] + [p.rejected for p in val]
    )
    assert abs(scores.mean().item()) < 1e-4


def test_resume_after_a_kill_gives_the_same_final_weights(
    reward_config: ConfigFactory, tmp_path: Path
) -> None:
    base = reward_config(64, max_steps=6, checkpoint_every=2, keep_checkpoints=2, eval_every=3)
    straight = base.model_copy(update={"output_dir": tmp_path / "straight"})
    broken = base.model_copy(update={"output_dir": tmp_path / "broken"})
    train_reward_model(straight)

    def kill_after_step_3(step: int) -> None:
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_reward_model(broken, on_step=kill_after_step_3)
    assert [s for s, _ in checkpoint_dirs(broken.output_dir)] == [2]
    assert not (broken.output_dir / "model").exists()
    resumed = train_reward_model(broken, resume=True)
    assert resumed.loop.resumed_from == 2
    assert [s for s, _ in checkpoint_dirs(broken.output_dir)] == [4, 6]  # keep_checkpoints=2

    a = load_file(str(straight.output_dir / "model" / "head.safetensors"))
    b = load_file(str(broken.output_dir / "model" / "head.safetensors"))
    assert torch.equal(a["weight"], b["weight"]) and torch.equal(a["bias"], b["bias"])
    wa = load_file(str(straight.output_dir / "model" / "backbone" / "model.safetensors"))
    wb = load_file(str(broken.output_dir / "model" / "backbone" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the metrics file reads as one run: steps 1..6 once each, no duplicates from the killed run
    train_steps = [
        r["step"]
        for r in read_metrics(broken.output_dir / "metrics.jsonl")
        if r["split"] == "train"
    ]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    straight_log = read_metrics(straight.output_dir / "metrics.jsonl")
    broken_log = read_metrics(broken.output_dir / "metrics.jsonl")
    assert [r["loss"] for r in straight_log] == [r["loss"] for r in broken_log]


def test_resume_refuses_a_checkpoint_of_another_job(reward_config: ConfigFactory) -> None:
    config = reward_config(32, max_steps=2, checkpoint_every=1)
    train_reward_model(config)
    changed = config.model_copy(
        update={"training": config.training.model_copy(update={"learning_rate": 0.5})}
    )
    with pytest.raises(CheckpointError, match="other model/data/training settings"):
        train_reward_model(changed, resume=True)
    # bookkeeping settings may change between the two runs
    watched = config.model_copy(
        update={"training": config.training.model_copy(update={"eval_every": 1})}
    )
    train_reward_model(watched, resume=True)


def test_resume_without_checkpoint_is_a_clear_error(reward_config: ConfigFactory) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_reward_model(reward_config(32, max_steps=1), resume=True)


def test_lora_and_frozen_layers_train_only_what_they_should(reward_config: ConfigFactory) -> None:
    from alignment.job_setup import count_parameters, prepare_trainable
    from alignment.reward_training import build_reward_model

    config = reward_config(32, max_steps=1)
    lora = config.model_copy(update={"model": config.model.model_copy(update={"finetune": "lora"})})
    model = build_reward_model(lora)
    model.backbone = prepare_trainable(model.backbone, lora.model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("head.") for n in names)
    assert any(n.startswith("head.") for n in names)

    frozen = config.model_copy(
        update={"model": config.model.model_copy(update={"freeze_layers": 1})}
    )
    model = build_reward_model(frozen)
    all_params = count_parameters(model)[0]
    model.backbone = prepare_trainable(model.backbone, frozen.model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any("embed_tokens" in n or "layers.0." in n for n in names)
    assert any("layers.1." in n for n in names) and count_parameters(model)[0] < all_params
    result = train_reward_model(lora)
    assert result.loop.steps == 1


def _saved_adapter(model_dir: Path, out: Path, target_modules: list[str]) -> Path:
    """A LoRA adapter of the tiny model with non-zero weights (peft starts B at 0: no change)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(lm, LoraConfig(r=2, lora_alpha=4, target_modules=target_modules))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(out)
    return out


def test_the_reward_model_can_start_from_the_sft_policy(
    reward_config: ConfigFactory, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``init_adapter``: the backbone is the SFT policy (adapter merged), as in InstructGPT, and
    the job trains and saves on top of it; an adapter that does not fit is one line."""
    from transformers import AutoModelForCausalLM

    from alignment.errors import AlignmentError
    from alignment.reward_training import build_reward_model
    from ragkit.generation.adapters import apply_adapter

    adapter = _saved_adapter(tiny_model_dir, tmp_path / "sft-adapter", ["q_proj", "v_proj"])
    config = reward_config(32, max_steps=1).model_copy(update={"init_adapter": str(adapter)})
    model = build_reward_model(config)
    plain = build_reward_model(reward_config(32, max_steps=1))
    policy = apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    want = policy.base_model.state_dict()
    got = model.backbone.state_dict()
    changed = [k for k in want if "q_proj" in k or "v_proj" in k]
    assert changed and all(torch.equal(got[k], want[k]) for k in changed)
    assert not all(torch.equal(plain.backbone.state_dict()[k], want[k]) for k in changed)
    assert "adapter" in model.base_model
    assert train_reward_model(config).loop.steps == 1

    broken = _saved_adapter(tiny_model_dir, tmp_path / "other", ["q_proj"])
    (broken / "adapter_config.json").write_text(
        (broken / "adapter_config.json").read_text().replace('"q_proj"', '"no_such_proj"'),
        encoding="utf-8",
    )
    wrong = config.model_copy(update={"init_adapter": str(broken)})
    with pytest.raises(AlignmentError, match="init_adapter") as excinfo:
        build_reward_model(wrong)
    assert "\n" not in str(excinfo.value)
