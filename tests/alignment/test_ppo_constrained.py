"""PPO under a token constraint (grounded decoding): sampled, scored and trained as served."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment import ensure_pad_token
from alignment.errors import DataFormatError
from alignment.ppo import PPOConfig, PPOJobConfig, PPOTrainer, sample_responses, train_ppo
from alignment.ppo.constrained import EXCLUDED, ConstraintTrace, replay
from ragkit.generation.constraints import AllowedTokens

from .conftest import VOCAB, make_model, make_tokenizer
from .test_ppo_trainer import batch, make_trainer, prompt_pool, tiny_value_model

W = {word: VOCAB.index(word) for word in ("w1", "w2", "w3", "w7")}
EOS = VOCAB.index("<eos>")


class FewWords:
    """Allows w1, w2, w3, w7 and EOS; ``bias`` on w1 at the first step only."""

    def __init__(self, bias: float = 0.0) -> None:
        self.bias = bias

    def allowed(self, generated: Sequence[int]) -> AllowedTokens | None:
        ids = sorted([*W.values(), EOS])
        return AllowedTokens(ids=ids, bias={} if generated else {W["w1"]: self.bias})


def test_sampling_follows_the_constrained_distribution_temperature_first() -> None:
    """Frequencies of the first token = softmax(z / T + c): the bias is not divided by T."""
    tokenizer = make_tokenizer()
    model = make_model().eval()
    ensure_pad_token(tokenizer, model)
    prompt = "Human : w4 w5 Assistant :"
    rows, temperature, bias = 3000, 2.0, 1.5
    torch.manual_seed(0)
    rollout = sample_responses(
        model,
        tokenizer,
        [prompt] * rows,
        response_length=1,
        temperature=temperature,
        constraints=[FewWords(bias)] * rows,
    )
    with torch.no_grad():
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # type: ignore[operator]
        z = model(ids).logits[0, -1] / temperature
    offsets = ConstraintTrace([[FewWords(bias).allowed([])]]).offsets([0], 1, z.shape[0])[0, 0]
    expected = torch.softmax(z + offsets, -1)
    first = rollout.response_ids[:, 0]
    allowed = {*W.values(), EOS}
    assert set(first.tolist()) <= allowed
    for token in allowed:
        seen = float((first == token).float().mean())
        assert seen == pytest.approx(float(expected[token]), abs=0.03), token
    # the other order, softmax((z·T + b) / T), would put w1 at a clearly different rate
    wrong = torch.softmax(z + offsets - (offsets == bias) * bias / 2, -1)
    assert abs(float(wrong[W["w1"]]) - float(expected[W["w1"]])) > 0.08
    assert rollout.trace is not None and len(rollout.trace.steps) == rows


def test_trace_offsets_exclude_forbidden_tokens_and_carry_biases() -> None:
    trace = ConstraintTrace([[AllowedTokens(ids=[1, 2], bias={2: -4.0}), None]])
    out = trace.offsets([0], 3, 5)
    assert out[0, 0].tolist() == [EXCLUDED, 0.0, -4.0, EXCLUDED, EXCLUDED]
    assert out[0, 1].tolist() == [0.0] * 5  # unconstrained step
    assert out[0, 2].tolist() == [0.0] * 5  # past the row's end


def test_replay_refuses_a_token_the_constraint_forbids() -> None:
    ids = torch.tensor([[W["w1"], VOCAB.index("w9")]])
    with pytest.raises(ValueError, match="forbids on replay"):
        replay([FewWords()], ids, torch.ones_like(ids))


def constrained_trainer(**overrides: object) -> PPOTrainer:
    """The trainer tests' tiny setup (reward: count of w7), sampled under :class:`FewWords`."""
    settings: dict[str, object] = {"batch_size": 8, "response_length": 4, **overrides}
    return make_trainer(constraint_for=lambda prompt: FewWords(bias=-1.0), **settings)


def test_old_logprobs_are_those_of_the_constrained_policy() -> None:
    trainer = constrained_trainer()
    prompts = batch(prompt_pool(), 0, 8)
    torch.manual_seed(1)
    rollout = trainer.sample(prompts)
    allowed = {*W.values(), EOS}
    for row in range(8):
        n = int(rollout.lengths[row])
        assert set(rollout.response_ids[row, :n].tolist()) <= allowed
    old, ref, _ = trainer._rollout_statistics(rollout)
    assert torch.allclose(old, ref)  # the policy is its own reference before any update
    # row 0 by hand: a plain forward, T-scaled, plus the constraint, then log-softmax
    n = int(rollout.lengths[0])
    keep = rollout.attention_mask[0].bool()
    ids = rollout.input_ids[0][keep].unsqueeze(0)
    with torch.no_grad():
        logits = trainer.policy(ids).logits[0, -n - 1 : -1] / trainer.config.temperature
    offsets = rollout.logit_offsets(torch.tensor([0]), logits.shape[-1])
    assert offsets is not None
    manual = torch.log_softmax(logits + offsets[0, :n], -1)
    picked = manual.gather(-1, rollout.response_ids[0, :n].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(old[0, :n], picked, atol=1e-5)
    free = torch.log_softmax(logits, -1).gather(-1, rollout.response_ids[0, :n].unsqueeze(-1))
    assert (picked > free.squeeze(-1) + 1e-3).all()  # the constraint renormalises upwards


def test_constrained_step_starts_at_ratio_one_and_zero_kl() -> None:
    trainer = constrained_trainer()
    metrics = trainer.step(batch(prompt_pool(), 0, 8))
    assert metrics["first_ratio_max_deviation"] < 1e-5
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-5)
    # the entropy is that of five allowed tokens at most, not of the whole vocabulary
    assert 0.0 < metrics["entropy"] <= float(torch.log(torch.tensor(5.0))) + 1e-4


def test_constrained_ppo_learns_the_rewarded_allowed_token() -> None:
    trainer = constrained_trainer(learning_rate=1e-2, kl_coef=0.01, ppo_epochs=2)
    pool = prompt_pool()
    torch.manual_seed(0)
    before = [trainer.step(batch(pool, u, 8))["score"] for u in range(2)]
    for update in range(2, 10):
        trainer.step(batch(pool, update, 8))
    after = [trainer.step(batch(pool, u, 8))["score"] for u in range(10, 13)]
    assert sum(after) / len(after) > sum(before) / len(before) + 0.5


def test_a_rollout_engine_cannot_apply_a_constraint() -> None:
    tokenizer = make_tokenizer()
    with pytest.raises(ValueError, match="rollout engine cannot apply"):
        PPOTrainer(
            make_model(),
            None,
            tiny_value_model(tokenizer),
            lambda p, r: torch.zeros(len(r)),
            tokenizer,
            PPOConfig.model_validate({"batch_size": 2, "mini_batches": 1}),
            rollout_engine=object(),  # type: ignore[arg-type]
            constraint_for=lambda prompt: None,
        )


def grounded_job(tmp_path: Path, model_dir: Path, rows: list[dict[str, Any]]) -> PPOJobConfig:
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return PPOJobConfig.model_validate(
        {
            "policy": {"name_or_path": str(model_dir)},
            "reward": {"rule": "count:w7"},
            "data": {"path": str(data), "format": "prompts", "heldout_fraction": 0.25},
            "ppo": {
                "batch_size": 4,
                "mini_batches": 2,
                "response_length": 4,
                "temperature": 1.0,
                "max_prompt_length": 64,
            },
            "decoding": "grounded",
            "abstain_bias": -2.0,
            "updates": 2,
            "checkpoint_every": None,
            "sample_every": 1,
            "samples_per_log": 4,
            "progress": False,
            "output_dir": str(tmp_path / "run"),
        }
    )


def test_a_grounded_job_samples_only_words_of_each_prompts_passages(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = [
        # words w1-w9 only: the word-level tokenizer spells no other word with their prefixes
        {"prompt": f"Human : w{i} w{i + 1} Assistant :", "passages": [f"w{i + 1} w7", "w9 w8"]}
        for i in range(8)
    ]
    config = grounded_job(tmp_path, tiny_model_dir, rows)
    train_ppo(config)
    shown = {r["prompt"]: r["passages"] for r in rows}
    samples = [json.loads(line) for line in (config.output_dir / "samples.jsonl").open()]
    assert samples
    for sample in samples:
        words = set(" ".join(shown[sample["prompt"]]).split())
        # the word-level tokenizer has no space token: a grounded answer is one passage word
        assert sample["response"].split() and set(sample["response"].split()) <= words


def test_a_grounded_job_refuses_prompts_without_passages_in_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = [{"prompt": f"Human : w{i} Assistant :", "passages": ["w7 w8"]} for i in range(6)]
    rows[2] = {"prompt": "Human : w30 Assistant :"}
    config = grounded_job(tmp_path, tiny_model_dir, rows)
    with pytest.raises(DataFormatError, match=r"1 of 6 prompts .* have none \(field 'passages'\)"):
        train_ppo(config)


def test_grounded_decoding_needs_prompt_rows_and_in_process_sampling(tmp_path: Path) -> None:
    base = {"reward": {"rule": "length"}, "decoding": "grounded"}
    with pytest.raises(ValueError, match=r"needs data\.format: prompts"):
        PPOJobConfig.model_validate(base)
    with pytest.raises(ValueError, match="cannot apply the span constraint"):
        PPOJobConfig.model_validate(
            {**base, "data": {"format": "prompts"}, "rollout": {"engine": "vllm"}}
        )
