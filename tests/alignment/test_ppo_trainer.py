"""The PPO trainer end to end on a tiny random Llama: ratio 1, references, resume, learning."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from alignment import RewardModel, ensure_pad_token
from alignment.ppo import ConstraintFn, PPOConfig, PPOTrainer, ValueModel

from .conftest import VOCAB, make_model, make_tokenizer

TARGET = "w7"


def count_target(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    """Rule-based reward: +1 per occurrence of the target word."""
    return torch.tensor([float(r.split().count(TARGET)) for r in responses])


def prompt_pool(n: int = 64, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        "Human : " + " ".join(rng.choices(VOCAB[10:], k=rng.randint(2, 6))) + " Assistant :"
        for _ in range(n)
    ]


def batch(pool: list[str], update: int, size: int) -> list[str]:
    return [pool[(update * size + i) % len(pool)] for i in range(size)]


def tiny_value_model(tokenizer: object) -> ValueModel:
    """A value model copied from a (random) reward model on a tiny Llama backbone."""
    backbone = make_model(seed=1).model
    ensure_pad_token(tokenizer)
    backbone.resize_token_embeddings(len(tokenizer))  # type: ignore[arg-type]
    return ValueModel.from_reward_model(RewardModel(backbone, tokenizer))


def make_trainer(
    value: str = "model", constraint_for: ConstraintFn | None = None, **overrides: object
) -> PPOTrainer:
    tokenizer = make_tokenizer()
    settings: dict[str, object] = {
        "batch_size": 16,
        "mini_batches": 2,
        "response_length": 8,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "kl_coef": 0.05,
        "value": value,
        **overrides,
    }
    config = PPOConfig.model_validate(settings)
    value_model = tiny_value_model(tokenizer) if value == "model" else None
    return PPOTrainer(
        make_model(),
        None,
        value_model,
        count_target,
        tokenizer,
        config,
        constraint_for=constraint_for,
    )


def test_first_minibatch_ratio_is_one_and_first_kl_is_zero() -> None:
    trainer = make_trainer(grad_accumulation=2)
    metrics = trainer.step(batch(prompt_pool(), 0, 16))
    assert metrics["first_ratio_max_deviation"] < 1e-6
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < metrics["entropy"] <= float(torch.log(torch.tensor(71.0)))
    for key in ("approx_kl", "clip_fraction", "value_loss", "ratio_var", "eos_rate"):
        assert key in metrics


def test_lora_policy_uses_itself_with_adapters_disabled_as_reference() -> None:
    from peft import LoraConfig, get_peft_model

    tokenizer = make_tokenizer()
    base = make_model()
    ensure_pad_token(tokenizer, base)
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    config = PPOConfig(
        batch_size=8, response_length=6, temperature=1.0, learning_rate=5e-3, value="head"
    )
    trainer = PPOTrainer(policy, None, None, count_target, tokenizer, config)
    assert trainer.ref_policy is None
    pool = prompt_pool()
    first = trainer.step(batch(pool, 0, 8))
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    later = [trainer.step(batch(pool, u, 8))["kl"] for u in range(1, 4)]
    assert max(abs(k) for k in later) > 1e-4  # the adapters moved away from the reference


def test_default_value_function_needs_a_reward_model() -> None:
    with pytest.raises(ValueError, match="reward model"):
        PPOTrainer(make_model(), None, None, count_target, make_tokenizer(), PPOConfig())


def test_reward_model_scores_and_initialises_the_value_model() -> None:
    tokenizer = make_tokenizer()
    backbone = make_model(seed=1).model
    ensure_pad_token(tokenizer, backbone)
    reward_model = RewardModel(backbone, tokenizer, max_length=64, min_prompt_tokens=1)
    config = PPOConfig(batch_size=4, response_length=4, ppo_epochs=1, temperature=1.0)
    trainer = PPOTrainer(make_model(), None, None, reward_model, tokenizer, config)
    assert trainer.value_model is not None
    assert trainer.value_model.backbone is not reward_model.backbone  # a copy, trained apart
    prompts = batch(prompt_pool(), 0, 4)
    metrics = trainer.step(prompts)
    expected = reward_model.score(prompts, trainer.last_rollout.texts)
    assert metrics["score"] == pytest.approx(float(expected.mean()), abs=1e-5)


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    pool = prompt_pool()
    straight = make_trainer(value="head", adaptive_kl=True, kl_horizon=100)
    for update in range(3):
        expected = straight.step(batch(pool, update, 16))

    first = make_trainer(value="head", adaptive_kl=True, kl_horizon=100)
    for update in range(2):
        first.step(batch(pool, update, 16))
    saved = first.save_checkpoint(tmp_path / "ckpt")
    torch.manual_seed(12345)  # the resumed run must not depend on the RNG state before loading

    resumed = make_trainer(value="head", adaptive_kl=True, kl_horizon=100)
    resumed.load_checkpoint(saved)
    assert resumed.updates == 2
    got = resumed.step(batch(pool, resumed.updates, 16))
    for key in ("score", "kl", "kl_coef", "policy_loss", "value_loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key
    for (name, a), (_, b) in zip(
        straight.trainable.named_parameters(), resumed.trainable.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("value", ["model", "head"])
def test_ppo_learns_a_rule_based_reward_with_bounded_kl(value: str) -> None:
    """Mean reward rises clearly; this fails if the gradient sign or the advantage is wrong."""
    trainer = make_trainer(value=value)
    pool = prompt_pool()
    curve = [trainer.step(batch(pool, u, 16)) for u in range(16)]
    scores = [m["score"] for m in curve]
    first = sum(scores[:3]) / 3
    last = sum(scores[-3:]) / 3
    assert first < 0.6  # a random policy says the target word about once in 70 tokens
    assert last > first + 1.0, scores
    kls = [m["kl"] for m in curve]
    # a policy collapsed onto the target word would sit near 8·ln(71) ≈ 34 nats per sequence
    assert max(kls) < 25.0, kls
    assert sum(kls) / len(kls) > 0.0, kls  # a negative mean KL means a log-prob mismatch
    assert all(m["approx_kl"] < 0.2 for m in curve)
