"""The in-process vLLM backend: option mapping, lazy import errors, glue, and the real engine.

vLLM needs Linux, a CUDA GPU and a large install, none of which this test machine has. So:

- the mapping functions (``SamplingParams`` / ``LLM`` keywords, ``RequestOutput`` → result) are
  tested purely;
- the error paths (vLLM missing, no GPU) are tested by hiding or faking the ``vllm`` module;
- the glue (prompt rendering + tokenization, per-prompt seeds, result order) runs against a
  scripted stand-in that records what a ``vllm.LLM`` would receive;
- the real engine test runs only where vLLM and a GPU are present, and says so when skipped.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from vllm_available import real_vllm

from ragkit.generation import ContextLengthError, GenerationOptions, Generator
from ragkit.generation.backends import (
    BackendUnavailableError,
    GeneratorBackend,
    UnsupportedOptionError,
    VLLMGenerator,
    VLLMGeneratorConfig,
    make_generator,
    vllm_engine_kwargs,
    vllm_result,
    vllm_sampling_kwargs,
)
from ragkit.generation.backends.vllm_engine import vllm_installed

REAL_ENGINE, NO_ENGINE_REASON = real_vllm()


# ---------------------------------------------------------------------- pure mapping


def test_sampling_kwargs_greedy() -> None:
    kwargs = vllm_sampling_kwargs(GenerationOptions(max_new_tokens=12, stop=["\n\n"]))
    assert kwargs == {
        "n": 1,
        "max_tokens": 12,
        "min_tokens": 0,
        "repetition_penalty": 1.0,
        "stop": ["\n\n"],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "top_p": 1.0,
        "temperature": 0.0,
    }


def test_sampling_kwargs_sampling() -> None:
    opts = GenerationOptions(
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        seed=3,
        min_new_tokens=2,
        repetition_penalty=1.2,
    )
    kwargs = vllm_sampling_kwargs(opts)
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (0.7, 0.9, 40)
    assert (kwargs["min_tokens"], kwargs["repetition_penalty"]) == (2, 1.2)
    assert "seed" not in kwargs  # per prompt: seed + i, added by the backend
    assert vllm_sampling_kwargs(GenerationOptions(do_sample=True))["temperature"] == 1.0


def test_sampling_kwargs_refuse_what_vllm_cannot_do() -> None:
    with pytest.raises(UnsupportedOptionError, match="beam search"):
        vllm_sampling_kwargs(GenerationOptions(num_beams=4))
    with pytest.raises(UnsupportedOptionError, match="no_repeat_ngram_size"):
        vllm_sampling_kwargs(GenerationOptions(no_repeat_ngram_size=3))


def test_engine_kwargs() -> None:
    config = VLLMGeneratorConfig(
        dtype="bfloat16",
        max_model_len=4096,
        gpu_memory_utilization=0.5,
        engine_options={"enable_prefix_caching": True, "enforce_eager": True},
    )
    assert vllm_engine_kwargs(config, "/models/x") == {
        "model": "/models/x",
        "tokenizer": "/models/x",
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.5,
        "enforce_eager": True,  # engine_options win
        "max_model_len": 4096,
        "enable_prefix_caching": True,
    }
    assert vllm_engine_kwargs(VLLMGeneratorConfig(), "m")["dtype"] == "auto"


def _output(text: str, tokens: int, finish: str, stop_reason: Any = None) -> Any:
    completion = SimpleNamespace(
        text=text, token_ids=tuple(range(tokens)), finish_reason=finish, stop_reason=stop_reason
    )
    return SimpleNamespace(outputs=[completion])


def test_result_mapping() -> None:
    opts = GenerationOptions(stop=["END"])
    length = vllm_result(_output("abc", 5, "length"), "P", 9, opts)
    assert (length.text, length.finish_reason, length.completion_tokens) == ("abc", "length", 5)
    assert (length.prompt_text, length.prompt_tokens) == ("P", 9)
    eos = vllm_result(_output("abc", 4, "stop"), "P", 9, opts)
    assert (eos.finish_reason, eos.stop_string) == ("stop", None)
    stopped = vllm_result(_output("abc", 4, "stop", "END"), "P", 9, opts)
    assert (stopped.text, stopped.finish_reason, stopped.stop_string) == (
        "abc",
        "stop_string",
        "END",
    )
    kept = vllm_result(_output("abcENDxyz", 6, "length"), "P", 9, opts)  # cut here as well
    assert (kept.text, kept.finish_reason) == ("abc", "stop_string")


# ---------------------------------------------------------------------- lazy import errors


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, even where it is
    assert not vllm_installed()
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ragkit\[vllm\]'"):
        make_generator("vllm", "some/model")


class FakeLLM:
    """Records what ragkit hands a ``vllm.LLM``; answers with scripted outputs."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[list[dict[str, Any]], list[Any]]] = []
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=64))
        FakeLLM.instances.append(self)

    def generate(self, prompts: list[dict[str, Any]], params: list[Any], use_tqdm: bool) -> Any:
        assert use_tqdm is False
        self.calls.append((prompts, params))
        return [
            _output(f"answer {i} seed {p.kwargs.get('seed')}", 3, "stop")
            for i, p in enumerate(params)
        ]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kwargs: SimpleNamespace(kwargs=kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_no_gpu_is_a_clear_error(fake_vllm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gen = VLLMGenerator("some/model")
    with pytest.raises(BackendUnavailableError, match=r"needs a CUDA GPU.*vllm serve"):
        gen.warm_up()
    assert not gen.is_loaded and not FakeLLM.instances


def test_glue_renders_tokenizes_and_seeds_like_ragkit(fake_vllm: Any, tiny_llama_dir: Path) -> None:
    gen = make_generator(
        "vllm",
        str(tiny_llama_dir),
        require_gpu=False,
        max_model_len=64,
        options={"max_new_tokens": 8},
    )
    assert isinstance(gen, VLLMGenerator) and isinstance(gen, GeneratorBackend)
    reference = Generator(str(tiny_llama_dir))
    prompts: list[Any] = ["Paris is", [{"role": "user", "content": "Tokens"}], "Paris is"]

    assert gen.count_tokens(prompts[0]) == reference.count_tokens(prompts[0])
    assert gen.max_prompt_tokens({"max_new_tokens": 14}) == 50
    assert not gen.is_loaded  # token accounting needs no engine

    results = gen.generate(prompts, do_sample=True, temperature=0.5, seed=7, stop=["x"])
    [engine] = FakeLLM.instances
    assert engine.kwargs["model"] == str(tiny_llama_dir) and engine.kwargs["max_model_len"] == 64
    [(sent, params)] = engine.calls
    tokenizer = reference.tokenizer
    for prompt, item, result in zip(prompts, sent, results, strict=True):
        rendered = reference.render(prompt)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        assert item == {"prompt_token_ids": ids}
        assert (result.prompt_text, result.prompt_tokens) == (rendered, len(ids))
    assert [p.kwargs["seed"] for p in params] == [7, 8, 9]
    assert params[0].kwargs["stop"] == ["x"] and params[0].kwargs["temperature"] == 0.5
    assert [r.text for r in results] == [
        "answer 0 seed 7",
        "answer 1 seed 8",
        "answer 2 seed 9",
    ]
    assert gen.is_loaded

    stream = gen.stream("Paris is")
    assert list(stream) == ["answer 0 seed None"] and stream.result is not None

    with pytest.raises(ContextLengthError, match="context of 64"):
        gen.generate(["Paris is " * 40])
    with pytest.raises(UnsupportedOptionError):
        gen.stream("Paris is", num_beams=2)


# ---------------------------------------------------------------------- the real engine


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_ENGINE, reason=f"in-process vLLM engine not tested: {NO_ENGINE_REASON}"
)
def test_real_engine_generates_with_ragkit_semantics() -> None:  # pragma: no cover - GPU only
    gen = make_generator("vllm", None, gpu_memory_utilization=0.3, max_model_len=2048)
    results = gen.generate(["What is the capital of France?"] * 3, max_new_tokens=16)
    assert results[0].text and results[0] == results[1] == results[2]  # greedy
    assert results[0].finish_reason in ("stop", "length")
    first = results[0].text
    stop = first[len(first) // 2 : len(first) // 2 + 2]
    [cut] = gen.generate(["What is the capital of France?"], max_new_tokens=16, stop=[stop])
    assert cut.finish_reason == "stop_string" and cut.text == first[: first.find(stop)]
    sampled = gen.generate(["Name a colour."] * 2, do_sample=True, temperature=1.0, seed=0)
    again = gen.generate(["Name a colour."] * 2, do_sample=True, temperature=1.0, seed=0)
    assert [r.text for r in sampled] == [r.text for r in again]
