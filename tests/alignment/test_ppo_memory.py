"""Memory savers: gradient checkpointing (same update, recomputed activations, KV cache kept in
rollouts) and bf16 autocast (allowed on the CPU with a warning, float32 log-probs)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from alignment.ppo import PPOConfig, PPOTrainer, sample_responses
from alignment.ppo.trainer import check_accelerator, check_bf16, enable_gradient_checkpointing

from .conftest import make_model, make_tokenizer
from .test_ppo_trainer import batch, count_target, prompt_pool, tiny_value_model


def make(**overrides: Any) -> PPOTrainer:
    tokenizer = make_tokenizer()
    settings: dict[str, Any] = {
        "batch_size": 8,
        "mini_batches": 2,
        "grad_accumulation": 2,
        "ppo_epochs": 1,
        "response_length": 6,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "value": "model",
        **overrides,
    }
    config = PPOConfig.model_validate(settings)
    value = tiny_value_model(tokenizer) if config.value == "model" else None
    return PPOTrainer(make_model(), None, value, count_target, tokenizer, config)


def first_block(model: nn.Module) -> nn.Module:
    """The first transformer block."""
    blocks = next(m for m in model.modules() if isinstance(m, nn.ModuleList))
    return blocks[0]  # type: ignore[no-any-return]


@contextmanager
def count_block_calls(model: nn.Module, log: list[bool]) -> Iterator[None]:
    """Record ``module.training`` for each run of the first block's query projection.

    transformers checkpoints a block's ``forward`` inside the block's hooks, so a hook on the
    block does not see the recomputation; one on its first submodule does (torch stops the
    recomputation early, once every saved tensor is back, so later submodules may not rerun).
    """
    q_proj = first_block(model).self_attn.q_proj
    handle = q_proj.register_forward_hook(lambda module, args, out: log.append(module.training))
    try:
        yield
    finally:
        handle.remove()


def test_gradient_checkpointing_recomputes_and_gives_the_same_update() -> None:
    prompts = batch(prompt_pool(), 0, 8)
    results = {}
    for checkpointing in (False, True):
        trainer = make(gradient_checkpointing=checkpointing)
        policy_calls: list[bool] = []
        value_calls: list[bool] = []
        assert trainer.value_model is not None
        with (
            count_block_calls(trainer.policy, policy_calls),
            count_block_calls(trainer.value_model, value_calls),
        ):
            metrics = trainer.step(prompts)
        params = {n: p.detach().clone() for n, p in trainer.trainable.named_parameters()}
        results[checkpointing] = (metrics, params, policy_calls, value_calls)
        assert not trainer.policy.training  # back in eval mode for the next rollout

    (plain, plain_params, plain_p, plain_v), (ckpt, ckpt_params, ckpt_p, ckpt_v) = (
        results[False],
        results[True],
    )
    # 2 minibatches × 2 micro-batches = 4 training forwards of the policy and the value model.
    # Without checkpointing they run in eval mode, once; with it in training mode, and each
    # is run again in the backward pass. Generation and statistics passes are the same.
    assert sum(plain_p) == 0 and sum(ckpt_p) == 2 * 4
    assert len(ckpt_p) == len(plain_p) + 4
    assert sum(plain_v) == 0 and sum(ckpt_v) == 2 * 4
    assert len(ckpt_v) == len(plain_v) + 4
    assert plain["grad_norm"] > 1e-3  # there was something to compare
    for key in ("score", "kl", "policy_loss", "value_loss", "grad_norm"):
        assert ckpt[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-6), key
    for name, value in plain_params.items():
        torch.testing.assert_close(ckpt_params[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_rollouts_keep_the_kv_cache_under_gradient_checkpointing() -> None:
    """Generation must run in eval mode: transformers drops the cache of a training-mode block
    under checkpointing, and ``generate`` then feeds one token at a time with no context."""
    trainer = make(gradient_checkpointing=True, value="head")
    pool = prompt_pool()
    trainer.step(batch(pool, 0, 8))
    prompts = batch(pool, 1, 8)
    trainer.trainable.train()  # as if a caller left the modules in training mode
    lengths: list[int] = []
    handle = first_block(trainer.policy).mlp.register_forward_hook(
        lambda module, args, out: lengths.append(int(args[0].shape[1]))
    )
    try:
        torch.manual_seed(5)
        rollout = trainer.sample(prompts)
    finally:
        handle.remove()
    # the prompt once, then one new token per step
    assert lengths[0] == rollout.query_ids.shape[1]
    assert lengths[1:] and set(lengths[1:]) == {1}
    # and those steps saw their context: same tokens as an eval-mode copy without checkpointing
    plain = copy.deepcopy(trainer.policy).eval()
    plain.activation_checkpointing_disable()
    torch.manual_seed(5)
    expected = sample_responses(
        plain, trainer.tokenizer, prompts, response_length=6, temperature=1.0
    )
    assert torch.equal(rollout.response_ids, expected.response_ids)


def test_gradient_checkpointing_needs_a_model_that_supports_it() -> None:
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        enable_gradient_checkpointing(nn.Linear(2, 2))


def test_bf16_on_cpu_warns_autocasts_and_keeps_log_probs_float32() -> None:
    with pytest.warns(UserWarning, match="bf16 on the CPU"):
        trainer = make(bf16=True, value="head")
    dtypes: list[torch.dtype] = []
    handle = first_block(trainer.policy).mlp.register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype)
    )
    try:
        metrics = trainer.step(batch(prompt_pool(), 0, 8))
    finally:
        handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # every forward pass ran under autocast
    assert all(p.dtype == torch.float32 for p in trainer.trainable.parameters())  # fp32 master
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    # rollout statistics and training use the same autocast: the first ratio stays 1 and the
    # first KL (policy == reference) stays 0, up to bf16 resolution: on CPUs without native
    # bf16 (AVX2 only, e.g. the AMD EPYC CI machines) the emulated bf16 matmuls depend on the
    # pass's batch shape, and statistics and training passes are shaped differently (measured
    # 1.24e-3 here; below 1e-6 on the machine of earlier CI runs). 2**-8 is bf16 precision.
    assert metrics["first_ratio_max_deviation"] < 2**-8
    assert metrics["kl"] == pytest.approx(0.0, abs=2**-8)
    rollout = trainer.last_rollout
    assert rollout is not None
    with torch.no_grad(), trainer.autocast():
        out = trainer.trainable(
            rollout.input_ids, rollout.attention_mask, rollout.response_ids, 1.0
        )
    assert out.logprobs.dtype == torch.float32 and out.values.dtype == torch.float32


def test_bf16_and_launch_precision_are_checked() -> None:
    with pytest.raises(ValueError, match="cuda and cpu"):
        check_bf16(torch.device("meta"))
    config = PPOConfig(bf16=False)
    fake = SimpleNamespace(mixed_precision="bf16", distributed_type="NO")
    with pytest.raises(ValueError, match=r"ppo\.bf16 is false"):
        check_accelerator(fake, config)
    check_accelerator(fake, PPOConfig(bf16=True))  # consistent: accepted
    with pytest.raises(ValueError, match="fp16"):
        check_accelerator(SimpleNamespace(mixed_precision="fp16", distributed_type="NO"), config)
