"""The relevance gate declines questions no retrieved passage is close to, and only those."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.embedding import Embedder
from ragkit.generation import Generator
from ragkit.rag import RAGPipeline
from ragkit.rag.relevance import RelevanceGate, best_similarity

from .test_grounded import QUESTIONS, grounded_rag


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_best_similarity_is_the_highest_cosine() -> None:
    vectors = {"q": unit(1, 0), "near": unit(1, 1), "far": unit(-1, 0.1)}

    def encode(texts: Any) -> np.ndarray:
        return np.stack([vectors[t] for t in texts])

    def encode_query(text: str) -> np.ndarray:
        return vectors[text].reshape(1, -1)

    assert best_similarity(encode_query, encode, "q", ["far", "near"]) == pytest.approx(
        float(unit(1, 1) @ unit(1, 0))
    )
    assert best_similarity(encode_query, encode, "q", []) == -1.0
    with pytest.raises(ValueError, match="cosine"):
        RelevanceGate(1.5)


class Orthogonal:
    """Questions and passages on orthogonal axes: every similarity is exactly 0 (the tiny
    random embedder puts all texts at cosine ~1, which tests nothing)."""

    def encode_query(self, text: str) -> np.ndarray:
        return unit(1, 0).reshape(1, -1)

    def encode(self, texts: Any) -> np.ndarray:
        return np.stack([unit(0, 1) for _ in texts])


def gated(rag: RAGPipeline) -> RelevanceGate:
    return next(s for s in rag.pipeline.steps if isinstance(s, RelevanceGate))


def test_a_question_no_passage_is_close_to_is_declined_with_its_reason(
    file_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    ungated = grounded_rag(
        file_index, tiny_embedder, tiny_generator, abstain_bias=-50.0, min_relevance=-1.0
    )
    assert not any(isinstance(s, RelevanceGate) for s in ungated.pipeline.steps)
    strict = grounded_rag(
        file_index, tiny_embedder, tiny_generator, abstain_bias=-50.0, min_relevance=0.5
    )
    passing = grounded_rag(
        file_index, tiny_embedder, tiny_generator, abstain_bias=-50.0, min_relevance=0.0
    )
    gated(strict).embedder = gated(passing).embedder = Orthogonal()
    for question in QUESTIONS:
        declined = strict.ask(question)
        assert declined.abstained and not declined.citations
        assert declined.trace is not None
        assert any("no retrieved passage is close" in n for n in declined.trace.notes)
        streamed = strict.stream(question)
        assert "".join(streamed) == declined.answer
        # a question that passes (similarity 0 >= 0) is answered exactly as without the gate
        assert passing.ask(question).answer == ungated.ask(question).answer


def test_a_gate_every_passage_passes_changes_no_answer_and_survives_save_and_load(
    file_index: Path, tiny_embedder: Embedder, tiny_generator: Generator, tmp_path: Path
) -> None:
    ungated = grounded_rag(
        file_index, tiny_embedder, tiny_generator, abstain_bias=-50.0, min_relevance=-1.0
    )
    lenient = grounded_rag(
        file_index, tiny_embedder, tiny_generator, abstain_bias=-50.0, min_relevance=-0.9999
    )
    gates = [s for s in lenient.pipeline.steps if isinstance(s, RelevanceGate)]
    assert len(gates) == 1
    for question in QUESTIONS:
        assert lenient.ask(question).answer == ungated.ask(question).answer
    lenient.save(tmp_path / "rag.yaml")
    loaded = RAGPipeline.load(tmp_path / "rag.yaml", {"generator": tiny_generator})
    gate = next(s for s in loaded.pipeline.steps if isinstance(s, RelevanceGate))
    assert gate.min_similarity == pytest.approx(-0.9999) and gate.embedder is not None
    assert loaded.ask(QUESTIONS[0]).answer == lenient.ask(QUESTIONS[0]).answer


def test_the_profiles_gate_applies_to_the_embedder_it_was_measured_on_only(
    file_index: Path,
    tiny_embedder: Embedder,
    tiny_generator: Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cosines are an embedder's own scale: MiniLM's threshold means nothing for another."""
    import ragkit.rag.pipeline as pipeline_module
    from ragkit.rag.profiles import answering_profile

    def profile_for(embedder_name: str) -> Any:
        base = answering_profile(tiny_generator)
        return base.model_copy(update={"min_relevance": 0.3, "relevance_embedder": embedder_name})

    monkeypatch.setattr(
        pipeline_module, "answering_profile", lambda g: profile_for(tiny_embedder.name)
    )
    measured_on_this = grounded_rag(file_index, tiny_embedder, tiny_generator)
    assert gated(measured_on_this).min_similarity == pytest.approx(0.3)
    monkeypatch.setattr(pipeline_module, "answering_profile", lambda g: profile_for("other/model"))
    other = grounded_rag(file_index, tiny_embedder, tiny_generator)
    assert not any(isinstance(s, RelevanceGate) for s in other.pipeline.steps)
    explicit = grounded_rag(file_index, tiny_embedder, tiny_generator, min_relevance=0.2)
    assert gated(explicit).min_similarity == pytest.approx(0.2)  # asked for: any embedder


def test_the_default_profile_gates_at_the_measured_minilm_threshold() -> None:
    from ragkit.models import DEFAULT_EMBEDDER
    from ragkit.rag.profiles import answering_profile

    profile = answering_profile(None)
    assert (profile.min_relevance, profile.relevance_embedder) == (0.25, DEFAULT_EMBEDDER)
