"""The feedback loop on a tiny random Llama: export → reward → 2 PPO updates → evaluate → decide.

The store is filled through its own API, as the server does (answers with their model and
prompt format, then choices and votes; "good" marks the preferred answers). The evaluation
function is injected: it makes the candidate win, or lose within the noise, so the promotion
rule is exercised both ways without depending on what two PPO updates of a random model do.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment.feedback_loop import (
    CARD_FILE,
    FeedbackLoopConfig,
    FeedbackLoopError,
    FeedbackMismatchError,
    NotEnoughFeedbackError,
    live_version,
    run_feedback_loop,
    versions_dir,
)
from alignment.feedback_loop import promotion as promotion_module
from ragkit.errors import RagkitError
from ragkit.feedback import FeedbackStore

from .conftest import WORDS, make_model

FORMAT = "grounded_qa"  # the answering profile of a model given as a folder
BASE_SCORES = [0.2, 0.5, 0.1, 0.7, 0.4, 0.3, 0.6, 0.2, 0.9, 0.0, 0.5, 0.4]


def make_adapter(folder: Path, seed: int = 1) -> Path:
    """A LoRA adapter on the tiny Llama with non-zero weights (so it changes the model)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(make_model(), config)
    model.save_pretrained(str(folder), save_embedding_layers=False)
    return folder


def fill_store(
    path: Path,
    model: str,
    questions: int = 10,
    *,
    prompt_format: str = FORMAT,
    seed: int = 0,
) -> int:
    """Per question: a choice and an up/down vote pair; returns the pairs it makes (2 each)."""
    rng = random.Random(seed)
    with FeedbackStore(path) as store:
        for q in range(questions):
            question = " ".join(rng.choices(WORDS, k=4))
            passages = [{"n": 1, "text": " ".join(rng.choices(WORDS, k=6))}]
            for a in range(4):
                words = rng.choices(WORDS, k=3)
                if a % 2 == 0:
                    words.append("good")
                store.record_answer(
                    f"q{q}a{a}",
                    question,
                    " ".join(words),
                    passages,
                    model,
                    prompt_format=prompt_format,
                )
            store.choose(f"q{q}a0", f"q{q}a1")
            store.vote(f"q{q}a2", 1)
            store.vote(f"q{q}a3", -1)
    return 2 * questions


def loop_config(tmp_path: Path, model_dir: Path, serving_dir: Path, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": str(model_dir),
        "serving": {"adapter_dir": str(serving_dir)},
        "feedback": {"min_pairs": 16},
        "reward": {
            "data": {"validation_fraction": 0.25},
            "training": {
                "batch_size": 4,
                "max_steps": 2,
                "progress": False,
                "learning_rate": 1e-3,
            },
            "max_length": 64,
            "min_prompt_tokens": 2,
        },
        "ppo": {
            "ppo": {
                "batch_size": 4,
                "mini_batches": 2,
                "ppo_epochs": 1,
                "response_length": 6,
                "temperature": 1.0,
                "learning_rate": 1e-3,
                "max_prompt_length": 64,
            },
            "data": {"heldout_fraction": 0.2, "heldout_max": 2},
            "updates": 2,
            "checkpoint_every": None,
            "sample_every": None,
            "progress": False,
        },
        "promotion": {"bootstrap_samples": 2000},
        "output_dir": str(tmp_path / "run"),
    }
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def scripted_evaluation(
    candidate_gain: Sequence[float],
) -> tuple[Callable[[str | None], list[float]], list[str | None]]:
    """Scores BASE_SCORES for the current adapter, BASE_SCORES + gain for a PPO candidate."""
    calls: list[str | None] = []

    def evaluate(adapter: str | None) -> list[float]:
        calls.append(adapter)
        if adapter is not None and Path(adapter).parent.name == "ppo":
            return [b + g for b, g in zip(BASE_SCORES, candidate_gain, strict=True)]
        return list(BASE_SCORES)

    return evaluate, calls


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- end to end


def test_a_winning_candidate_is_promoted_with_its_card(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "feedback.db"
    expected = fill_store(db, str(tiny_model_dir))
    serving = make_adapter(tmp_path / "deploy" / "adapter")  # a plain folder, e.g. an SFT run's
    original = files_of(serving)
    evaluate, calls = scripted_evaluation([0.1] * len(BASE_SCORES))
    stages: list[str] = []
    result = run_feedback_loop(
        db,
        loop_config(tmp_path, tiny_model_dir, serving),
        evaluate=evaluate,
        on_stage=lambda name, info: stages.append(name),
    )
    assert stages == ["export", "reward", "ppo", "evaluate", "decision"]
    assert result.promoted and result.pairs == expected == 20
    assert result.reason.startswith("promoted: candidate")
    # both evaluated: the current adapter where it is served, then the candidate
    assert calls == [str(serving), str(result.candidate_adapter)]
    assert result.comparison.gain == pytest.approx(0.1)
    assert result.comparison.low == pytest.approx(0.1)  # a constant gain has no noise

    # the serving folder is now a link to the new version; the original is kept, unchanged
    assert serving.is_symlink() and live_version(serving) == result.version
    assert result.version is not None and result.version.parent == versions_dir(serving)
    adopted = [p for p in versions_dir(serving).iterdir() if p.name.endswith("-adopted")]
    assert len(adopted) == 1 and files_of(adopted[0]) == original
    served = files_of(serving)
    assert (
        served["adapter_model.safetensors"]
        == (result.candidate_adapter / "adapter_model.safetensors").read_bytes()
    )

    card = json.loads((serving / CARD_FILE).read_text())
    assert card["decision"] == "promoted" and card["version"] == result.version.name
    assert card["base_model"] == str(tiny_model_dir) and card["prompt_format"] == FORMAT
    assert card["data"]["pairs"] == 20 and card["data"]["pairs_from"] == {"choice": 10, "votes": 10}
    assert card["data"]["store"] == {"answers": 40, "votes": 20, "choices": 10}
    assert len(card["data"]["pairs_sha256"]) == 64
    assert card["parent"]["adapter"] == str(serving) and card["parent"]["folder"] == calls[0]
    assert card["ppo"]["updates"] == 2 and "accuracy" in card["reward_model"]["validation"]
    scores = card["evaluation"]["scores"]
    assert scores["questions"] == len(BASE_SCORES) and scores["confidence"] == 0.95
    assert scores["low"] <= scores["gain"] <= scores["high"]
    assert set(card["configs"]) == {"loop", "reward", "ppo"}
    assert card["configs"]["ppo"]["policy_adapter"] == calls[0]
    assert card["configs"]["ppo"]["decoding"] == "free"  # a hub/folder model serves freely
    prompts = [json.loads(line) for line in (result.output_dir / "ppo_prompts.jsonl").open()]
    assert prompts and all(len(row["passages"]) == 1 and row["passages"][0] for row in prompts)
    assert card["timestamps"]["started"] <= card["timestamps"]["decided"]
    decision = json.loads((result.output_dir / "decision.json").read_text())
    assert decision["decision"] == "promoted"
    assert decision["serving_version"] == str(result.version)

    # what `ragkit serve --adapter deploy/adapter` does on restart: merge it into the base
    from ragkit.generation.adapters import apply_adapter

    merged = apply_adapter(make_model(), serving)
    assert not torch.equal(
        merged.state_dict()["model.layers.0.self_attn.q_proj.weight"],
        make_model().state_dict()["model.layers.0.self_attn.q_proj.weight"],
    )


def test_the_candidate_inherits_the_parents_answerability_probe(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A promotion must not drop the abstention veto the serving adapter had."""
    from ragkit.generation.answerability import PROBE_FILE, AnswerabilityProbe

    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir))
    serving = make_adapter(tmp_path / "deploy" / "adapter")
    AnswerabilityProbe(1, (0.0, 1.0), (1.0, 2.0), (0.5, -0.5), 0.25).save(serving)
    probe_bytes = (serving / PROBE_FILE).read_bytes()
    evaluate, _ = scripted_evaluation([0.1] * len(BASE_SCORES))
    result = run_feedback_loop(
        db, loop_config(tmp_path, tiny_model_dir, serving), evaluate=evaluate
    )
    assert (result.candidate_adapter / PROBE_FILE).read_bytes() == probe_bytes
    assert result.promoted and (serving / PROBE_FILE).read_bytes() == probe_bytes
    assert result.card["ppo"]["answerability_probe"].startswith("inherited from the parent")


def test_ppo_decodes_as_the_served_profile_unless_told(tmp_path: Path) -> None:
    from alignment.feedback_loop import FeedbackLoopConfig
    from alignment.feedback_loop.run import ppo_job_config

    def ppo_for(**extra: Any) -> Any:
        raw = loop_config(tmp_path, tmp_path, tmp_path / "adapter", **extra)
        raw["model"] = "default"
        config = FeedbackLoopConfig.model_validate(raw)
        return ppo_job_config(config, tmp_path / "p.jsonl", tmp_path / "rm", None, tmp_path)

    served = ppo_for()  # the Gemma profile answers with grounded spans, abstention bias -4
    assert served.decoding == "grounded" and served.abstain_bias == -6.0
    assert ppo_for(ppo={"decoding": "free"}).decoding == "free"
    assert ppo_for(ppo={"abstain_bias": 0.0}).abstain_bias == 0.0
    assert ppo_for(prompt_format="grounded_qa").decoding == "free"  # not the profile's format


def test_a_candidate_within_the_noise_is_not_promoted(tiny_model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir))
    initial = make_adapter(tmp_path / "sft-adapter")
    serving = tmp_path / "deploy" / "adapter"  # nothing promoted yet
    # better on average (+0.025) but up and down from question to question
    gain = [0.3, -0.3, 0.2, -0.2, 0.25, -0.25, 0.1, -0.1, 0.3, -0.2, 0.05, 0.15]
    evaluate, calls = scripted_evaluation(gain)
    config = loop_config(
        tmp_path, tiny_model_dir, serving, serving={"initial_adapter": str(initial)}
    )
    result = run_feedback_loop(db, FeedbackLoopConfig.model_validate(config), evaluate=evaluate)
    assert not result.promoted and result.version is None
    assert result.comparison.gain > 0 and result.comparison.low < 0 < result.comparison.high
    assert result.reason.startswith(f"kept the current model ({initial.resolve()})")
    assert "does not exceed +0" in result.reason and "interval" in result.reason
    assert calls[0] == str(initial.resolve())
    assert not os.path.lexists(serving)  # untouched: still nothing there
    decision = json.loads((result.output_dir / "decision.json").read_text())
    assert decision["decision"] == "kept" and decision["serving_version"] is None
    assert decision["evaluation"]["scores"]["gain"] == pytest.approx(result.comparison.gain)
    evaluation = json.loads((result.output_dir / "evaluation.json").read_text())
    assert evaluation["current"] == BASE_SCORES and len(evaluation["candidate"]) == 12
    # the same scores and seed give the same interval (the rule is reproducible)
    from alignment.feedback_loop import paired_bootstrap

    again = paired_bootstrap(evaluation["candidate"], evaluation["current"], samples=2000, seed=0)
    assert (again.low, again.high) == (result.comparison.low, result.comparison.high)


def test_a_failed_promotion_leaves_the_serving_adapter_as_it_was(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir))
    serving = make_adapter(tmp_path / "deploy" / "adapter")
    original = files_of(serving)
    evaluate, _ = scripted_evaluation([0.2] * len(BASE_SCORES))

    class FailingRename:
        """The promotion module's ``os``, whose atomic rename fails (every other call works)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def replace(src: Any, dst: Any) -> None:
            raise OSError("disk full (injected)")

    monkeypatch.setattr(promotion_module, "os", FailingRename())
    with pytest.raises(OSError, match="injected"):
        run_feedback_loop(db, loop_config(tmp_path, tiny_model_dir, serving), evaluate=evaluate)
    # still the original adapter (adopted into a version, same bytes), no half-made version
    assert files_of(serving) == original
    names = sorted(p.name for p in serving.parent.iterdir())
    assert all(not n.endswith((".link", ".tmp")) for n in names), names
    assert not serving.is_symlink()  # the adoption was undone, the folder is back in place
    assert [p for p in versions_dir(serving).iterdir() if p.is_dir()] == []


# --------------------------------------------------------------------------- bad input


def test_too_few_pairs_is_one_line_saying_how_many(tiny_model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir), questions=3)
    config = loop_config(tmp_path, tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(NotEnoughFeedbackError) as excinfo:
        run_feedback_loop(db, config, evaluate=lambda adapter: [0.0, 1.0])
    message = str(excinfo.value)
    assert "has 6 preference pair(s)" in message and "at least 16" in message
    assert "\n" not in message and isinstance(excinfo.value, RagkitError)
    with pytest.raises(FeedbackLoopError, match="feedback store not found"):
        run_feedback_loop(tmp_path / "missing.db", config, evaluate=lambda adapter: [0.0])


def test_feedback_of_another_model_is_refused_naming_both(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "feedback.db"
    fill_store(db, "smollm2")
    config = loop_config(tmp_path, tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(FeedbackMismatchError) as excinfo:
        run_feedback_loop(db, config, evaluate=lambda adapter: [0.0, 1.0])
    message = str(excinfo.value)
    assert "'smollm2'" in message and repr(str(tiny_model_dir)) in message
    assert "\n" not in message
    assert not (tmp_path / "run" / "reward").exists()  # refused before any training


def test_feedback_in_another_prompt_format_is_refused_naming_both(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir), prompt_format="grounded_qa_completion")
    config = loop_config(tmp_path, tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(FeedbackMismatchError) as excinfo:
        run_feedback_loop(db, config, evaluate=lambda adapter: [0.0, 1.0])
    message = str(excinfo.value)
    assert "'grounded_qa_completion'" in message and f"'{FORMAT}'" in message

    unrecorded = tmp_path / "old.db"
    fill_store(unrecorded, str(tiny_model_dir), prompt_format="")
    with pytest.raises(FeedbackMismatchError, match="allow_unrecorded_format"):
        run_feedback_loop(unrecorded, config, evaluate=lambda adapter: [0.0, 1.0])


def test_aliases_of_one_model_are_the_same_model() -> None:
    from alignment.feedback_loop import canonical_model

    assert canonical_model("default") == canonical_model("Gemma3-270M") == "gemma3-270m"
    assert canonical_model(None) == "gemma3-270m"
    assert canonical_model("smollm2-135m-instruct") == "smollm2"
    assert canonical_model("org/some-model") == "org/some-model"


def test_the_config_refuses_what_the_loop_sets(tmp_path: Path) -> None:
    from alignment.config import validate_config
    from alignment.errors import ConfigError

    base = {"serving": {"adapter_dir": str(tmp_path / "a")}}
    for section, message in [
        ({"reward": {"rule": "length"}}, "reward is set by the feedback loop"),
        ({"policy": {"name_or_path": "x"}}, "policy.name_or_path is set"),
        ({"policy": {"finetune": "full"}}, "must be lora"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_config(FeedbackLoopConfig, {**base, "ppo": section})
    with pytest.raises(ConfigError, match=r"unknown key 'promotion\.margin'"):
        validate_config(FeedbackLoopConfig, {**base, "promotion": {"margin": 0.1}})


def test_the_example_config_loads() -> None:
    from alignment.config import load_config

    root = Path(__file__).resolve().parents[2]
    config = load_config(FeedbackLoopConfig, root / "examples" / "configs" / "feedback_loop.yaml")
    assert config.ppo.policy.finetune == "lora" and config.promotion.confidence == 0.95


# --------------------------------------------------------------------------- PPO of an adapter


def test_ppo_of_an_adapter_starts_from_it_and_saves_an_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The reference is the base *with* the adapter: the first rollout's KL is 0, not the
    adapter's distance from the bare base; the result is an adapter of the same shape."""
    from alignment.metrics import read_metrics
    from alignment.ppo import train_ppo

    from .test_ppo_job import job

    initial = make_adapter(tmp_path / "initial")
    config = job(
        tmp_path,
        tiny_model_dir,
        policy={"name_or_path": str(tiny_model_dir), "finetune": "lora"},
        policy_adapter=str(initial),
        updates=1,
        checkpoint_every=None,
        sample_every=None,
        eval=False,
    )
    result = train_ppo(config)
    first = next(r for r in read_metrics(result.metrics_path) if r["split"] == "train")
    assert abs(first["kl"]) < 1e-3, first["kl"]
    assert result.adapter_dir is not None
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert saved["r"] == 4 and sorted(saved["target_modules"]) == ["q_proj", "v_proj"]
    assert saved["base_model_name_or_path"] == str(tiny_model_dir)

    from alignment.config import validate_config
    from alignment.errors import ConfigError
    from alignment.ppo import PPOJobConfig

    with pytest.raises(ConfigError, match=r"policy_adapter needs policy\.finetune: lora"):
        validate_config(PPOJobConfig, {**config.model_dump(), "policy": {"finetune": "full"}})


# --------------------------------------------------------------------------- kill -9

KILLED_LOOP = """
import json, os, signal, sys
from pathlib import Path
from alignment.feedback_loop import run_feedback_loop

db, config_file, kill_after = sys.argv[1], sys.argv[2], sys.argv[3]
config = json.loads(Path(config_file).read_text())

def evaluate(adapter):
    base = [0.2, 0.5, 0.1, 0.7]
    return [b + 0.2 for b in base] if adapter and Path(adapter).parent.name == "ppo" else base

def on_stage(name, info):
    if name == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

run_feedback_loop(db, config, evaluate=evaluate, on_stage=on_stage)
"""


def store_state(db: Path) -> tuple[str, dict[str, int], list[tuple[Any, ...]]]:
    import sqlite3

    connection = sqlite3.connect(db)
    try:
        check = connection.execute("PRAGMA integrity_check").fetchone()[0]
        rows = connection.execute("SELECT * FROM answers ORDER BY id").fetchall()
    finally:
        connection.close()
    with FeedbackStore(db) as store:
        counts = store.counts()
    return check, counts, rows


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["export", "reward", "ppo"])
def test_a_kill_9_mid_loop_leaves_the_feedback_and_the_serving_adapter_intact(
    tiny_model_dir: Path, tmp_path: Path, kill_after: str
) -> None:
    """SIGKILL the loop (a separate process) as a stage ends; the promotion's own steps are
    killed one by one in test_promotion_kill.py."""
    import subprocess
    import sys

    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir))
    before = store_state(db)
    serving = make_adapter(tmp_path / "deploy" / "adapter")
    original = files_of(serving)
    config = tmp_path / "loop.json"
    config.write_text(json.dumps(loop_config(tmp_path, tiny_model_dir, serving)))
    done = subprocess.run(
        [sys.executable, "-c", KILLED_LOOP, str(db), str(config), kill_after],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    assert store_state(db) == before
    assert before[0] == "ok"
    assert files_of(serving) == original and not serving.is_symlink()
    # and --resume goes on from there: the stages that ended are taken as they were
    run = tmp_path / "run"
    finished = {
        "export": ["export"],
        "reward": ["export", "reward"],
        "ppo": ["export", "reward", "ppo"],
    }[kill_after]
    written = {"export": "feedback_pairs.jsonl", "reward": "reward", "ppo": "ppo"}
    kept = {written[name]: (run / written[name]).stat().st_mtime_ns for name in finished}
    evaluate, _ = scripted_evaluation([0.1] * len(BASE_SCORES))
    resumed: list[str] = []
    result = run_feedback_loop(
        db,
        loop_config(tmp_path, tiny_model_dir, serving),
        evaluate=evaluate,
        resume=True,
        on_stage=lambda name, info: resumed.append(name) if info.get("resumed") else None,
    )
    assert resumed == finished
    assert {name: (run / name).stat().st_mtime_ns for name in kept} == kept
    assert result.promoted and files_of(serving) != original
