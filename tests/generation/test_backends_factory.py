"""``make_generator``, the backend protocol, saved configs and the import cost of backends."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from scripted_generator import ScriptedGenerator as ScriptedBackend

import ragkit
from ragkit.generation import GenerationOptions, GenerationResult, Generator, TextStream
from ragkit.generation.backends import (
    BACKENDS,
    FinishedStream,
    GenerationStream,
    GeneratorBackend,
    GeneratorBackendError,
    LlamaCppGenerator,
    OpenAIGenerator,
    OpenAIStream,
    backend_options,
    generator_from_config,
    make_generator,
)


def test_default_is_the_transformers_generator() -> None:
    gen = make_generator()
    assert type(gen) is Generator and gen.config.model is None
    assert ragkit.make_generator is make_generator
    cpu = make_generator("transformers", "some/model", device="cpu", base_url=None)
    assert isinstance(cpu, Generator)
    assert (cpu.config.model, cpu.config.device) == ("some/model", "cpu")


def test_openai_backend_is_built_without_network() -> None:
    gen = make_generator(
        "openai", "m", base_url="http://127.0.0.1:9/v1", api_key_env="X", options={"seed": 1}
    )
    assert isinstance(gen, OpenAIGenerator)
    assert gen.config.model_dump(exclude={"options"}) == {
        "backend": "openai",
        "model": "m",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "X",
        "tokenizer": None,
        "context_length": None,
        "timeout": 120.0,
        "max_retries": 2,
        "max_concurrency": 8,
        "server_side_stop": True,
        "vllm_extensions": False,
        "use_n": True,
        "stream_usage": True,
    }
    assert gen.config.options == GenerationOptions(seed=1)
    assert not gen.is_loaded


def test_unknown_backend_and_foreign_options_are_refused() -> None:
    assert BACKENDS == ("transformers", "auto", "llamacpp", "openai", "vllm")
    with pytest.raises(GeneratorBackendError, match="unknown generator backend 'tgi'"):
        make_generator("tgi")
    with pytest.raises(GeneratorBackendError, match=r"base_url do not apply to the transformers"):
        make_generator("transformers", base_url="http://x/v1")
    with pytest.raises(GeneratorBackendError, match="device do not apply to the openai"):
        make_generator("openai", "m", device="cpu")
    assert "base_url" in backend_options("openai") and "device" in backend_options("transformers")


def test_every_backend_satisfies_the_protocol() -> None:
    assert isinstance(Generator("some/model"), GeneratorBackend)
    assert isinstance(OpenAIGenerator("m"), GeneratorBackend)
    llama = LlamaCppGenerator("model.gguf", loader=lambda *a: None)  # type: ignore[arg-type,return-value]
    assert isinstance(llama, GeneratorBackend)
    for stream_type in (TextStream, OpenAIStream, FinishedStream):
        assert all(hasattr(stream_type, name) for name in ("__next__", "__iter__", "close"))
    finished = FinishedStream(
        lambda: GenerationResult(
            text="hi", prompt_text="p", prompt_tokens=1, completion_tokens=1, finish_reason="stop"
        )
    )
    assert isinstance(finished, GenerationStream)
    assert list(finished) == ["hi"] and finished.result is not None


def test_configs_round_trip_without_secrets() -> None:
    gen = OpenAIGenerator("m", "http://h:1/v1", api_key="sk-secret", options={"max_new_tokens": 9})
    saved = json.loads(json.dumps(gen.config.model_dump(mode="json")))
    assert "sk-secret" not in json.dumps(saved) and "sk-secret" not in repr(gen)
    rebuilt = generator_from_config(saved)
    assert isinstance(rebuilt, OpenAIGenerator) and rebuilt.config == gen.config

    transformers = Generator("some/model", device="cpu")
    again = generator_from_config(transformers.config.model_dump(mode="json"))
    assert isinstance(again, Generator) and again.config == transformers.config
    with pytest.raises(GeneratorBackendError, match="unknown generator backend"):
        generator_from_config({"backend": "nope"})


def test_rag_pipeline_accepts_any_backend(tiny_embedder: Any, tmp_path: Any) -> None:
    from ragkit import ChunkingSettings, Index
    from ragkit.rag import RAGPipeline
    from ragkit.schema import Document

    with Index.create(
        tmp_path / "idx", tiny_embedder, ChunkingSettings(unit="chars", chunk_size=200)
    ) as index:
        index.add_documents(
            [Document(id="p", text="Paris is the capital of France.", source="p.txt")]
        )
        index.commit()
    scripted = ScriptedBackend()
    assert isinstance(scripted, GeneratorBackend)
    rag = RAGPipeline.from_index(tmp_path / "idx", scripted, k=1, retriever="bm25")  # type: ignore[arg-type]
    answer = rag.ask("What is the capital of France?")
    assert rag.generator is scripted and answer.answer == "Paris [1]"
    assert [c.n for c in answer.citations] == [1] and len(scripted.prompts) == 1


def test_importing_backends_stays_cheap() -> None:
    code = (
        "import sys, ragkit, ragkit.generation as g; "
        "g.make_generator('openai', 'm'); g.make_generator('transformers', 'x'); "
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
