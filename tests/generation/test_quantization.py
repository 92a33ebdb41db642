"""int8 generation on CPU: the model is really quantised, every generation feature still works,
bad modes are refused in one line, and ``auto`` measures once then reads its verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragkit.generation import Generator
from ragkit.generation import quantization as q
from ragkit.generation.grounded import ABSTAIN_PHRASE, SpanAutomaton, span_text, token_table


@pytest.fixture(scope="module")
def int8_generator(tiny_llama_dir: Path) -> Generator:
    generator = Generator(
        str(tiny_llama_dir), device="cpu", quantize="int8", options={"max_new_tokens": 12}
    )
    generator.warm_up()
    return generator


def test_int8_replaces_the_linear_layers(int8_generator: Generator) -> None:
    import torch

    assert int8_generator.quantization == "int8"
    assert q.is_quantized(int8_generator.model)
    plain = [m for m in int8_generator.model.modules() if type(m) is torch.nn.Linear]
    assert plain == []


def test_int8_generates_batched_like_one_by_one(int8_generator: Generator) -> None:
    prompts = ["Paris is", "The quick brown fox jumps over the lazy dog. Who wrote the report?"]
    batched = int8_generator.generate(prompts, {"apply_chat_template": False})
    alone = [int8_generator.generate([p], {"apply_chat_template": False})[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert all(r.completion_tokens > 0 for r in batched)


def test_int8_keeps_grounded_decoding(int8_generator: Generator) -> None:
    passage = "The Rhine river flows past Strasbourg in 1992."
    automaton = SpanAutomaton(
        [passage],
        token_table(int8_generator.tokenizer),
        int8_generator.eos_token_ids,
        max_tokens=8,
    )
    result = int8_generator.generate(
        [f"{passage}\nAnswer:"],
        {"apply_chat_template": False, "max_new_tokens": 8, "stop": ["\n"]},
        constraints=[automaton],
    )[0]
    answer = span_text(result.text)
    assert answer and (answer in passage or ABSTAIN_PHRASE.startswith(answer)), answer


def test_unknown_mode_is_one_line() -> None:
    with pytest.raises(q.QuantizationError) as info:
        Generator("whatever", quantize="int4")
    assert "\n" not in str(info.value) and "int4" in str(info.value)


def test_int8_off_the_cpu_is_refused() -> None:
    with pytest.raises(q.QuantizationError, match="CPU only"):
        q.check_quantization("int8", "cuda:0")
    assert q.check_quantization(None, "cuda:0") == "none"
    assert q.check_quantization("AUTO", "cpu") == "auto"


def test_auto_measures_once_then_reads_the_cached_verdict(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    real = q.measure_int8

    def counting(*args: Any) -> q.QuantizationVerdict:
        calls.append(1)
        verdict = real(*args)
        # the tiny random model's speed says nothing; force a pass to test the int8 branch
        return verdict.model_copy(update={"chosen": "int8"})

    monkeypatch.setattr(q, "measure_int8", counting)
    first = Generator(str(tiny_llama_dir), device="cpu", quantize="auto").warm_up()
    assert first.quantization == "int8" and q.is_quantized(first.model)
    assert first.quantization_verdict is not None
    assert 0.0 <= first.quantization_verdict.agreement <= 1.0
    second = Generator(str(tiny_llama_dir), device="cpu", quantize="auto").warm_up()
    assert second.quantization == "int8"
    assert calls == [1]  # the second load read the cached verdict
    assert list((tmp_path / "quantization").glob("*.json"))


def test_auto_keeps_float_when_the_guard_fails(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(q, "MIN_AGREEMENT", 1.01)  # impossible to reach
    generator = Generator(str(tiny_llama_dir), device="cpu", quantize="auto").warm_up()
    assert generator.quantization == "none" and not q.is_quantized(generator.model)
    assert generator.quantization_verdict.chosen == "none"
    assert "probes" in generator.quantization_verdict.reason


def test_quantize_is_saved_in_the_config(tiny_llama_dir: Path) -> None:
    generator = Generator(str(tiny_llama_dir), device="cpu", quantize="int8")
    rebuilt = Generator.from_config(generator.config.model_dump())
    assert rebuilt.config.quantize == "int8"
