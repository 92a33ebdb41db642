"""``POST /v1/admin/reload``: guarded by API keys, swaps the generator, in-flight requests finish.

The feedback loop promotes a new adapter by pointing the serving folder at a new version; the
server loaded the old one. A restart picks the new one up (the folder is read at load time), and
so does this endpoint, without a restart.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import SecretStr
from scripted_generator import ScriptedGenerator

from alignment.feedback_loop import promote_adapter, versions_dir
from ragkit.server import Decoding, RAGService, ServerSettings, create_app

KEY = "reload-key-0123456789"


def lora_adapter(model_path: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights for the server's tiny Llama."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder), save_embedding_layers=False)
    return folder


def q_proj(generator: Any) -> torch.Tensor:
    weights: torch.Tensor = generator._model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    return weights.clone()


def client_for(rag: Any, **settings: Any) -> Any:
    from fastapi.testclient import TestClient

    app = create_app(rag, ServerSettings(rate_limit_per_minute=None, **settings))
    return TestClient(app)


def test_reload_is_refused_when_the_server_has_no_keys(server_rag: Any) -> None:
    with client_for(server_rag) as client:
        r = client.post("/v1/admin/reload")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"
        r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 403  # no key can be right when none is configured
        assert client.app.state.ragkit.service.reloads == 0


def test_reload_needs_a_valid_key(server_rag: Any) -> None:
    with client_for(server_rag, api_keys=(SecretStr(KEY),)) as client:
        assert client.post("/v1/admin/reload").status_code == 401
        wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert client.app.state.ragkit.service.reloads == 0


def test_reload_loads_the_newly_promoted_adapter(
    server_index: Path, server_llama_path: Path, tmp_path: Path
) -> None:
    from ragkit.generation import Generator
    from ragkit.rag import RAGPipeline

    serving = tmp_path / "deploy" / "adapter"
    promote_adapter(lora_adapter(server_llama_path, tmp_path / "a", 1), serving, {"v": "a"})
    generator = Generator(str(server_llama_path), device="cpu", adapter=str(serving)).warm_up()
    rag = RAGPipeline.from_index(
        server_index, generator, k=2, retriever="bm25", options={"max_new_tokens": 4}
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with client_for(rag, api_keys=(SecretStr(KEY),)) as client:
        service = client.app.state.ragkit.service
        assert client.post("/v1/query", json={"question": "Paris?"}, headers=headers).is_success
        promoted = promote_adapter(
            lora_adapter(server_llama_path, tmp_path / "b", 2), serving, {"v": "b"}
        )
        assert service.rag.generator is generator  # nothing changes until asked
        r = client.post("/v1/admin/reload", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reloaded"] is True and body["reloads"] == 1
        assert body["adapter"] == str(serving) and body["prompt_format"] == "grounded_qa"
        fresh = service.rag.generator
        assert fresh is not generator and fresh.is_loaded
        # the new generator carries version b, exactly as a fresh load of that version does
        expected = Generator(str(server_llama_path), device="cpu", adapter=str(promoted.version))
        assert torch.equal(q_proj(fresh), q_proj(expected.warm_up()))
        assert not torch.equal(q_proj(fresh), q_proj(generator))
        assert client.post("/v1/query", json={"question": "Paris?"}, headers=headers).is_success
    assert len([p for p in versions_dir(serving).iterdir() if p.is_dir()]) == 2


def test_a_failed_reload_keeps_serving_the_old_generator(server_rag: Any, tmp_path: Path) -> None:
    def broken(rag: Any) -> Any:
        from ragkit.generation.adapters import AdapterError

        raise AdapterError("adapter deploy/adapter does not fit this base model (injected)")

    service = RAGService(server_rag, build=broken)
    with client_for(service, api_keys=(SecretStr(KEY),)) as client:
        r = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "reload_failed"
        assert "still serving the previous model" in r.json()["error"]["message"]
        assert service.rag is server_rag and service.reloads == 0


class BlockingGenerator(ScriptedGenerator):
    """Writes its text, but only once released: a request held in flight."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, prompts: Any, options: Any = None, **overrides: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30)
        return super().generate(prompts, options, **overrides)


def test_requests_in_flight_finish_on_the_old_generator(server_rag: Any) -> None:
    from ragkit.rag import RAGPipeline

    old = BlockingGenerator("old answer")
    new = ScriptedGenerator("new answer")
    rag = RAGPipeline(server_rag.retriever, old)
    service = RAGService(rag, build=lambda current: RAGPipeline(current.retriever, new))
    sampled = Decoding(temperature=0.9, seed=1)
    assert service.pipeline_for(sampled) is not rag  # a cached variant of the old pipeline
    answers: list[str] = []
    worker = threading.Thread(
        target=lambda: answers.extend(
            a.answer for a in service.answer_batch(Decoding(), [("Paris?", None)])
        )
    )
    worker.start()
    assert old.entered.wait(30)  # the request is generating on the old generator
    service.reload()
    assert service.rag.generator is new and service.reloads == 1
    assert service.answer_batch(Decoding(), [("Paris?", None)])[0].answer == "new answer"
    variant = service.pipeline_for(sampled)  # variants are rebuilt on the new generator
    assert variant.generator is new
    old.release.set()
    worker.join(30)
    assert answers == ["old answer"]


def test_only_plain_pipelines_are_rebuilt(server_rag: Any) -> None:
    from ragkit.rag import RAGPipeline
    from ragkit.server.service import ReloadError, reloaded_pipeline

    rag = RAGPipeline(server_rag.retriever, ScriptedGenerator("x"), strategy="cot")
    with pytest.raises(ReloadError, match="plain-strategy"):
        reloaded_pipeline(rag)


def test_a_reload_and_a_sampling_variant_keep_the_gate_and_the_prompt_cap(
    server_rag: Any,
) -> None:
    """Rebuilt pipelines carry the served pipeline's relevance gate and prompt cap, not the
    profile's: ``serve --min-relevance 0.33`` stays 0.33 after a reload."""
    from ragkit.rag import RAGPipeline
    from ragkit.server.service import reloaded_pipeline

    rag = RAGPipeline(
        server_rag.retriever,
        server_rag.generator,
        template="grounded_qa_completion",
        decoding="grounded",
        min_relevance=0.33,
        max_prompt_tokens=900,
    )
    service = RAGService(rag)
    for rebuilt in (reloaded_pipeline(rag), service.pipeline_for(Decoding(temperature=0.9))):
        assert rebuilt is not rag
        assert rebuilt.min_relevance == pytest.approx(0.33)
        assert rebuilt.prompt_builder.max_prompt_tokens == 900
    ungated = RAGPipeline(server_rag.retriever, server_rag.generator, decoding="grounded",
                          template="grounded_qa_completion", min_relevance=-1.0)  # fmt: skip
    assert reloaded_pipeline(ungated).min_relevance == -1.0
