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
from ragkit.schema import Chunk, Hit

from .test_grounded import QUESTIONS, grounded_rag


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


class FakeIndex:
    """Stored vectors by chunk id; every question embeds to ``query``, and an unstored text
    to ``embed(text)`` (the tiny random embedder puts all texts at cosine ~1: it tests
    nothing)."""

    def __init__(self, stored: dict[str, np.ndarray], query: np.ndarray, embed: Any) -> None:
        self.stored, self.query, self.embed = stored, query, embed
        self.embedder = self
        self.embedded: list[str] = []

    def vectors_of(self, chunk_ids: Any) -> dict[str, np.ndarray]:
        return {c: self.stored[c] for c in chunk_ids if c in self.stored}

    def encode_query(self, text: str) -> np.ndarray:
        return self.query.reshape(1, -1)

    def encode(self, texts: Any) -> np.ndarray:
        self.embedded.extend(texts)
        return np.stack([self.embed(t) for t in texts])


def orthogonal() -> FakeIndex:
    """Every passage orthogonal to every question: similarity exactly 0."""
    return FakeIndex({}, unit(1, 0), lambda text: unit(0, 1))


def hit(chunk_id: str, text: str) -> Hit:
    chunk = Chunk(id=chunk_id, document_id="d", text=text, start=0, end=len(text), source="s")
    return Hit(chunk=chunk, score=1.0)


def test_best_similarity_uses_stored_vectors_and_embeds_only_what_is_missing() -> None:
    index = FakeIndex({"near": unit(1, 1), "far": unit(-1, 0.1)}, unit(1, 0), lambda t: unit(0, 1))
    hits = [hit("far", "far text"), hit("near", "near text"), hit("new", "unstored text")]
    assert best_similarity(index, "q", hits) == pytest.approx(float(unit(1, 1) @ unit(1, 0)))
    assert index.embedded == ["unstored text"]  # the stored two are not embedded again
    assert best_similarity(index, "q", []) == -1.0
    with pytest.raises(ValueError, match="cosine"):
        RelevanceGate(1.5)


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
    gated(strict).index = gated(passing).index = orthogonal()
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
    assert gate.min_similarity == pytest.approx(-0.9999) and gate.index is not None
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


def test_no_hits_or_no_index_pass_through_unmeasured() -> None:
    """Nothing retrieved is the retriever's abstention (with its own note), not the gate's;
    a gate with no index to measure with records no similarity rather than a made-up one."""
    gate = RelevanceGate(0.5, orthogonal())
    empty = gate.run("q", [])
    assert (empty.hits, empty.relevance, empty.relevance_notes) == ([], None, [])
    unbound = RelevanceGate(0.5).run("q", [hit("a", "text")])
    assert len(unbound.hits) == 1 and unbound.relevance is None
    measured = gate.run("q", [hit("a", "text")])
    assert measured.hits == [] and measured.relevance == pytest.approx(0.0)
