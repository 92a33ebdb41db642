"""Rollout engines: a separate copy of the weights samples, the trainer pushes weights into it.

vLLM needs a CUDA GPU, which this machine lacks, so the contract is checked three ways:

- :class:`TransformersRolloutEngine` (a real second model) against the in-process path: the
  same tokens for the same weights and seed, weights pushed before every rollout that follows
  an update, the vocabulary rows of the trainer's pad token dropped;
- :class:`VLLMRolloutEngine` against a scripted stand-in for ``vllm.LLM`` that records the
  requests (token ids, sampling parameters, seeds) and the weights it is handed;
- the real engine, only where vLLM and a GPU are present (skipped with the reason elsewhere).
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from vllm_available import real_vllm

from alignment.ppo import (
    PPOConfig,
    PPOJobConfig,
    PPOTrainer,
    TransformersRolloutEngine,
    VLLMRolloutEngine,
    engine_rollout,
    policy_weights,
    sample_responses,
)
from alignment.ppo.engines import RolloutEngine, engine_seed
from alignment.ppo.job_config import ppo_job_fingerprint
from alignment.ppo.job_models import make_rollout_engine
from alignment.ppo.vllm_worker import RolloutWorkerExtension
from alignment.tokenization import ensure_pad_token
from ragkit.generation.backends import BackendUnavailableError

from .conftest import make_model, make_tokenizer
from .test_ppo_trainer import batch, prompt_pool, tiny_value_model


def response_words(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
    return torch.tensor([float(len(r.split())) for r in responses])


def settings(**overrides: Any) -> PPOConfig:
    values: dict[str, Any] = {
        "batch_size": 4,
        "mini_batches": 1,
        "ppo_epochs": 2,
        "response_length": 6,
        "temperature": 1.0,
        "learning_rate": 1e-2,  # large: every update visibly changes the weights
        **overrides,
    }
    return PPOConfig.model_validate(values)


def engine_trainer(
    policy: Any, tokenizer: Any, engine: RolloutEngine, config: PPOConfig
) -> PPOTrainer:
    """A CPU trainer (no reference, tiny value model) sampling through ``engine``."""
    return PPOTrainer(
        policy,
        None,
        tiny_value_model(tokenizer),
        response_words,
        tokenizer,
        config,
        rollout_engine=engine,
    )


def test_engine_samples_what_the_policy_samples() -> None:
    """Same weights, same seed, same padding id: the same tokens, masks and texts."""
    tokenizer = make_tokenizer()
    policy = make_model().eval()
    ensure_pad_token(tokenizer, policy)
    engine = TransformersRolloutEngine.copy_of(policy, int(tokenizer.pad_token_id))
    prompts = batch(prompt_pool(), 0, 6)
    torch.manual_seed(11)
    direct = sample_responses(policy, tokenizer, prompts, response_length=8, temperature=1.0)
    via = engine_rollout(engine, tokenizer, prompts, response_length=8, temperature=1.0, seed=11)
    assert torch.equal(via.response_ids, direct.response_ids)
    assert torch.equal(via.response_mask, direct.response_mask)
    assert torch.equal(via.query_ids, direct.query_ids)
    assert torch.equal(via.has_eos, direct.has_eos)
    assert via.texts == direct.texts
    assert direct.response_mask.sum() > 0
    other = engine_rollout(engine, tokenizer, prompts, response_length=8, temperature=1.0, seed=12)
    assert not torch.equal(other.response_ids, direct.response_ids)  # the seed is used


def test_trainer_pushes_the_policy_weights_before_each_rollout() -> None:
    tokenizer = make_tokenizer()
    policy = make_model()
    # built before the trainer adds its pad token: the engine has one vocabulary row fewer
    engine = TransformersRolloutEngine.copy_of(policy, 0)
    vocab = engine.vocab_size
    assert isinstance(engine, RolloutEngine)
    with torch.no_grad():  # the engine starts out of date: the first rollout must push
        for p in engine.model.parameters():
            p.add_(0.5)
    trainer = engine_trainer(policy, tokenizer, engine, settings())
    assert trainer.policy.get_input_embeddings().num_embeddings == vocab + 1  # type: ignore[operator]
    pushes: list[int] = []
    original = engine.load_weights

    def counting(weights: Any) -> None:
        pushes.append(trainer.updates)
        original(weights)

    engine.load_weights = counting  # type: ignore[method-assign]
    pool = prompt_pool()
    snapshots = []
    for update in range(3):
        metrics = trainer.step(batch(pool, update, 4))
        # the tokens came from the engine, the log-probs from the policy: the ratio starts at 1
        assert metrics["first_ratio_max_deviation"] < 1e-5
        assert metrics["grad_norm"] > 0
        trainer.sample(batch(pool, update + 1, 4))  # a rollout after the update pushes again
        expected = dict(policy_weights(trainer.policy, vocab))
        state = engine.model.state_dict()
        for name, value in expected.items():
            assert torch.equal(state[name], value), name
        snapshots.append(copy.deepcopy(state))
    assert pushes == [0, 1, 2, 3]  # once per policy version, not per rollout call
    embed = "model.embed_tokens.weight"
    assert not torch.equal(snapshots[0][embed], snapshots[1][embed])  # training moved them


def test_policy_weights_merge_lora_and_drop_extra_vocabulary_rows() -> None:
    from peft import LoraConfig, get_peft_model

    base = make_model()
    rows = base.get_input_embeddings().num_embeddings  # type: ignore[operator]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    weights = dict(policy_weights(model, rows - 3))
    assert not any("lora" in name for name in weights)
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(weights[q], merged[q])
    original = make_model().state_dict()[q]  # the same seed: the weights before the adapter
    assert not torch.equal(weights[q], original)  # the adapter is in
    assert weights["model.embed_tokens.weight"].shape[0] == rows - 3
    assert weights["lm_head.weight"].shape[0] == rows - 3


def test_engine_refuses_weights_it_cannot_hold() -> None:
    engine = TransformersRolloutEngine.copy_of(make_model(), 0)
    with pytest.raises(KeyError, match="no weight 'nope'"):
        engine.load_weights([("nope", torch.zeros(1))])
    with pytest.raises(ValueError, match=r"model\.norm\.weight"):
        engine.load_weights([("model.norm.weight", torch.zeros(3))])


# ---------------------------------------------------------------------- vLLM, scripted


class FakeVLLMModel:
    def __init__(self) -> None:
        self.loaded: list[list[tuple[str, torch.Tensor]]] = []

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        self.loaded.append(list(weights))

    def named_parameters(self) -> Any:
        return iter(self.loaded[-1])


class FakeWorker(RolloutWorkerExtension):
    """A vLLM worker with ragkit's extension mixed in, as ``worker_extension_cls`` does."""

    def __init__(self, model: FakeVLLMModel) -> None:
        self.model_runner = SimpleNamespace(model=model)


def msgpack_native(value: Any) -> bool:
    """What vLLM's RPC encoder carries without pickle: plain data and tensors."""
    if isinstance(value, list | tuple):
        return all(msgpack_native(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and msgpack_native(v) for k, v in value.items())
    return value is None or isinstance(value, str | int | float | bool | torch.Tensor)


class FakeLLM:
    """Records requests; answers row 0 with an EOS, row 1 with an EOS vLLM left out, the rest
    with the length limit."""

    def __init__(self, vocab: int, eos: int) -> None:
        self.vocab, self.eos = vocab, eos
        self.model = FakeVLLMModel()
        self.requests: list[tuple[list[dict[str, Any]], list[Any]]] = []
        config = SimpleNamespace(get_vocab_size=lambda: vocab)
        self.llm_engine = SimpleNamespace(model_config=config)

    def collective_rpc(
        self, method: Any, timeout: float | None = None, args: tuple[Any, ...] = ()
    ) -> list[Any]:
        # vLLM's multiprocess engine refuses callables without insecure (pickle) serialisation
        assert isinstance(method, str), "only method names cross vLLM's RPC without pickle"
        assert msgpack_native(args)
        return [getattr(FakeWorker(self.model), method)(*args)]

    def generate(self, prompts: list[dict[str, Any]], params: list[Any], use_tqdm: bool) -> Any:
        assert use_tqdm is False
        self.requests.append((prompts, params))
        outputs = []
        for row, p in enumerate(params):
            limit = p.kwargs["max_tokens"]
            if row == 0:
                completion = SimpleNamespace(token_ids=[12, 13, self.eos], finish_reason="stop")
            elif row == 1:
                completion = SimpleNamespace(token_ids=[14], finish_reason="stop", stop_reason=None)
            else:
                completion = SimpleNamespace(token_ids=[15] * limit, finish_reason="length")
            outputs.append(SimpleNamespace(outputs=[completion]))
        return outputs


class FakeGenerator:
    def __init__(self, llm: FakeLLM) -> None:
        self.llm = llm
        self.module = SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(kwargs=kw))

    def engine(self) -> tuple[Any, Any]:
        return self.module, self.llm


def test_vllm_engine_requests_and_weight_pushes() -> None:
    tokenizer = make_tokenizer()
    policy = make_model()
    vocab = policy.get_input_embeddings().num_embeddings  # type: ignore[operator]
    eos = int(tokenizer.eos_token_id)
    llm = FakeLLM(vocab, eos)
    engine = VLLMRolloutEngine(FakeGenerator(llm))
    trainer = engine_trainer(
        policy, tokenizer, engine, settings(response_length=5, temperature=0.7, seed=3)
    )
    prompts = batch(prompt_pool(), 0, 4)
    metrics = trainer.step(prompts)
    rollout = trainer.last_rollout
    assert rollout is not None

    [(sent, params)] = llm.requests
    assert [item["prompt_token_ids"] for item in sent] == [
        tokenizer(p)["input_ids"] for p in prompts
    ]
    first = params[0].kwargs
    assert (first["temperature"], first["top_p"], first["top_k"], first["n"]) == (0.7, 1.0, 0, 1)
    assert (first["max_tokens"], first["stop_token_ids"]) == (5, [eos])
    seed = engine_seed(3, 0, 0)
    assert [p.kwargs["seed"] for p in params] == [seed, seed + 1, seed + 2, seed + 3]

    # the responses as the trainer saw them: EOS kept (restored in row 1), limit in rows 2-3
    assert rollout.response_ids[0, :3].tolist() == [12, 13, eos]
    assert rollout.response_ids[1, :2].tolist() == [14, eos]
    assert rollout.has_eos.tolist() == [True, True, False, False]
    assert rollout.lengths.tolist() == [3, 2, 5, 5]
    assert metrics["eos_rate"] == pytest.approx(0.5)

    # one push before the first rollout, in transformers names, without the pad row
    [pushed] = llm.model.loaded
    names = dict(pushed)
    assert names["model.embed_tokens.weight"].shape[0] == vocab
    assert trainer.policy.get_input_embeddings().num_embeddings == vocab + 1  # type: ignore[operator]
    torch.testing.assert_close(
        names["model.norm.weight"], trainer.policy.state_dict()["model.norm.weight"]
    )
    assert all(t.device.type == "cpu" for t in names.values())
    [norm] = llm.collective_rpc("ragkit_weight", args=("model.norm.weight",))
    torch.testing.assert_close(norm, names["model.norm.weight"].float())
    with pytest.raises(KeyError, match="no parameter"):
        llm.collective_rpc("ragkit_weight", args=("lm_head.nope",))
    trainer.step(batch(prompt_pool(), 1, 4))
    assert len(llm.model.loaded) == 2  # the updated weights went in before the next rollout


def test_vllm_engine_starts_with_the_weight_push_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ragkit.generation.backends import vllm_engine

    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: True)  # nothing starts here
    engine = VLLMRolloutEngine.from_model("some/model", engine_options={"seed": 5})
    kwargs = vllm_engine.vllm_engine_kwargs(engine.generator.config, "some/model")
    assert kwargs["worker_extension_cls"] == "alignment.ppo.vllm_worker.RolloutWorkerExtension"
    assert (kwargs["enable_prefix_caching"], kwargs["seed"]) == (False, 5)
    # the name vLLM imports in its workers resolves to the class the trainer's calls rely on
    module, _, name = kwargs["worker_extension_cls"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is RolloutWorkerExtension


def test_vllm_rollout_engine_without_vllm_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    config = PPOJobConfig.model_validate(
        {"reward": {"rule": "length"}, "rollout": {"engine": "vllm"}}
    )
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ragkit\[vllm\]'"):
        make_rollout_engine(config.rollout, None)
    assert (
        make_rollout_engine(
            PPOJobConfig.model_validate({"reward": {"rule": "length"}}).rollout, None
        )
        is None
    )


def test_the_default_engine_leaves_the_run_fingerprint_as_it_was() -> None:
    plain = PPOJobConfig.model_validate({"reward": {"rule": "length"}})
    tuned = PPOJobConfig.model_validate(
        {"reward": {"rule": "length"}, "rollout": {"gpu_memory_utilization": 0.5}}
    )
    vllm = PPOJobConfig.model_validate(
        {"reward": {"rule": "length"}, "rollout": {"engine": "vllm"}}
    )
    assert ppo_job_fingerprint(plain) == ppo_job_fingerprint(tuned)
    assert ppo_job_fingerprint(plain) != ppo_job_fingerprint(vllm)


# ---------------------------------------------------------------------- the real engine


REAL_VLLM, NO_VLLM_REASON = real_vllm()


@pytest.mark.slow
@pytest.mark.skipif(not REAL_VLLM, reason=f"PPO with vLLM rollouts not tested: {NO_VLLM_REASON}")
def test_ppo_with_real_vllm_rollouts() -> None:  # pragma: no cover - GPU only
    from transformers import AutoModelForCausalLM

    from alignment.backbone import load_tokenizer, resolve_backbone

    path = resolve_backbone(None)
    tokenizer = load_tokenizer(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    engine = VLLMRolloutEngine.from_model(None, gpu_memory_utilization=0.3, max_model_len=1024)
    config = settings(batch_size=4, response_length=16, learning_rate=1e-5, value="head")
    trainer = PPOTrainer(
        policy, None, None, response_words, tokenizer, config, device="cuda", rollout_engine=engine
    )
    prompts = ["\n\nHuman: Name a colour.\n\nAssistant:"] * 4
    metrics = trainer.step(prompts)
    assert metrics["first_ratio_max_deviation"] < 1e-4
    assert metrics["response_length"] > 0
    trainer.sample(prompts)  # pushes the updated weights
    _, llm = engine.generator.engine()
    norm = trainer.policy.state_dict()["model.norm.weight"].float().cpu()
    [engine_norm] = llm.collective_rpc("ragkit_weight", args=("model.norm.weight",))
    torch.testing.assert_close(engine_norm, norm, rtol=1e-2, atol=1e-2)
