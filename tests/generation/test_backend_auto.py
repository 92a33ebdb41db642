"""``--generator-backend auto``: llama.cpp only where installed and passing its guard, measured once."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ragkit.generation import GenerationOptions, GenerationResult, Generator
from ragkit.generation.backends import LlamaCppGenerator, make_generator
from ragkit.generation.backends import auto as auto_module
from ragkit.generation.backends.auto import BackendVerdict, auto_generator, measure
from ragkit.generation.quantization import PROBES


class Scripted:
    """Answers every prompt with ``answer``, taking ``seconds`` per call (a fake clock)."""

    def __init__(self, answer: str, seconds: float, clock: list[float]) -> None:
        self.answer, self.seconds, self.clock = answer, seconds, clock

    def generate(self, prompts: Sequence[str], options: Any = None) -> list[GenerationResult]:
        self.clock[0] += self.seconds
        return [
            GenerationResult(
                text=f" {self.answer}",
                prompt_text=p,
                prompt_tokens=1,
                completion_tokens=1,
                finish_reason="stop",
            )
            for p in prompts
        ]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(auto_module.time, "perf_counter", lambda: now[0])
    return now


def test_the_guard_needs_the_same_answers_and_a_speedup(clock: list[float]) -> None:
    passed = measure(Scripted("1889", 3.0, clock), Scripted("1889", 1.0, clock))
    assert passed.chosen == "llamacpp" and passed.agreement == 1.0 and passed.probes == len(PROBES)
    wrong = measure(Scripted("1889", 3.0, clock), Scripted("1890", 1.0, clock))
    assert wrong.chosen == "transformers" and wrong.agreement == 0.0
    slow = measure(Scripted("1889", 1.0, clock), Scripted("1889", 1.0, clock))
    assert slow.chosen == "transformers" and "1.00x as fast" in slow.reason


def test_without_llama_cpp_auto_is_transformers_without_measuring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.setattr(auto_module, "measure", lambda *a: pytest.fail("measured"))
    gen = make_generator("auto", "some/model")
    assert isinstance(gen, Generator)
    assert gen.backend_verdict.reason == "llama-cpp-python is not installed"


def test_the_verdict_is_measured_once_and_then_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[int] = []

    def fake_measure(reference: Any, candidate: Any) -> BackendVerdict:
        calls.append(1)
        assert isinstance(reference, Generator) and isinstance(candidate, LlamaCppGenerator)
        return BackendVerdict(chosen="llamacpp", agreement=1.0, speedup=2.0, probes=6, reason="ok")

    monkeypatch.setattr(auto_module, "measure", fake_measure)
    opts = GenerationOptions(max_new_tokens=5)
    first = auto_generator(str(gguf), options=opts)
    again = auto_generator(str(gguf), options=opts)
    assert calls == [1]
    said = [r.getMessage() for r in caplog.records if r.name == "ragkit.generation"]
    assert len(said) == 2 and "once; the verdict is cached" in said[0]  # the slow start is said
    assert said[1] == "generator backend: llamacpp (ok)"
    assert isinstance(first, LlamaCppGenerator) and isinstance(again, LlamaCppGenerator)
    assert again.backend_verdict.reason == "ok" and again.config.options == opts
    gguf.write_bytes(b"GGUF, replaced")  # another file: measured again
    auto_generator(str(gguf))
    assert calls == [1, 1]


def test_auto_takes_only_the_options_both_backends_share(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragkit.errors import RagkitError

    with pytest.raises(RagkitError, match="n_threads do not apply to the auto"):
        make_generator("auto", None, n_threads=2)
    # int8 is a transformers path: asking for it means transformers, without measuring
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    monkeypatch.setattr(auto_module, "measure", lambda *a: pytest.fail("measured"))
    gen = make_generator("auto", "some/model", quantize="int8")
    assert isinstance(gen, Generator) and gen.config.quantize == "int8"
    assert "transformers option" in gen.backend_verdict.reason


def test_one_adapter_has_one_verdict_whatever_its_spelling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``grounded-qa`` and ``grounded-qa-gemma`` are the same adapter for the packaged Gemma."""
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    gguf = tmp_path / "gemma.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(auto_module, "_gguf_of", lambda name: gguf)
    calls: list[int] = []

    def fake_measure(reference: Any, candidate: Any) -> BackendVerdict:
        calls.append(1)
        return BackendVerdict(chosen="transformers", reason="measured")

    monkeypatch.setattr(auto_module, "measure", fake_measure)
    auto_generator("gemma3-270m", adapter="grounded-qa")
    auto_generator("gemma3-270m", adapter="grounded-qa-gemma")
    assert calls == [1]
