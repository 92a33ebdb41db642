"""The real packaged SmolLM2: conversion cache, a known answer, batching and streaming on SQuAD.

Conversion runs into a fresh temporary cache (so "converts once" is really observed); it costs
~20 s of de-quantisation on a small CPU, paid once per session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragkit.generation import Generator, checkpoints, resolve_causal_lm
from ragkit.generation.checkpoints import MANIFEST_NAME, packaged_gguf

pytestmark = pytest.mark.integration

SQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad_small.json"


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    try:
        packaged_gguf()
    except Exception as exc:  # the package is part of the set-up; say so instead of failing
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("ragkit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGKIT_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def converted(fresh_cache: Path) -> Path:
    assert not (fresh_cache / "models").exists()
    path = resolve_causal_lm("smollm2")
    assert isinstance(path, Path)
    return path


@pytest.fixture(scope="module")
def smollm2(converted: Path) -> Generator:
    return Generator("smollm2", device="cpu").warm_up()


def test_conversion_is_complete_and_plain(converted: Path, fresh_cache: Path) -> None:
    assert converted.parent == fresh_cache / "models"
    names = {p.name for p in converted.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", MANIFEST_NAME} <= names
    config = json.loads((converted / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config and config["model_type"] == "llama"
    manifest = json.loads((converted / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["format_version"] == checkpoints.CONVERSION_FORMAT
    assert manifest["source"] == str(packaged_gguf().resolve())
    # written through a temporary sibling and renamed: nothing else is left in the folder
    siblings = {p.name for p in converted.parent.iterdir()} - {converted.name}
    assert siblings <= {converted.name + ".lock"}


def test_second_resolve_is_a_cache_hit(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(checkpoints, "_write_conversion", no_conversion)
    assert resolve_causal_lm("smollm2") == converted
    assert resolve_causal_lm("SmolLM2-135M-Instruct") == converted


def test_capital_of_france(smollm2: Generator) -> None:
    result = smollm2.generate(["What is the capital of France?"], max_new_tokens=24)[0]
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert smollm2.context_length == 8192
    assert smollm2.tokenizer.pad_token_id == smollm2.tokenizer.eos_token_id  # the tricky case


def _squad_prompts(n: int) -> list[str]:
    if not SQUAD.is_file():
        pytest.skip(f"{SQUAD} not found")
    data = json.loads(SQUAD.read_text(encoding="utf-8"))["data"]
    prompts = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or len(prompts) >= n:
                    continue
                prompts.append(
                    f"Context: {paragraph['context']}\n\nAnswer briefly: {qa['question']}"
                )
    return prompts


def test_squad_batch_equals_one_by_one_and_stream(smollm2: Generator) -> None:
    prompts = _squad_prompts(2)
    prompts[1] = prompts[1][:300]  # different lengths: left padding with pad == eos
    batched = smollm2.generate(prompts, max_new_tokens=12)
    singles = [smollm2.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in singles]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in singles]
    assert "".join(smollm2.stream(prompts[1], max_new_tokens=12)) == singles[1].text
