from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragkit import Index
from ragkit.errors import RagkitError
from ragkit.retrieval import (
    BM25Retriever,
    HybridRetriever,
    MMRReranker,
    make_retriever,
    maximal_marginal_relevance,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from ragkit.schema import Chunk, Hit


def _hit(cid: str, score: float) -> Hit:
    return Hit(chunk=Chunk(id=cid, document_id="d", text="x", start=0, end=1), score=score)


def test_rrf_order_on_a_constructed_example() -> None:
    dense = [_hit("a", 0.9), _hit("b", 0.8), _hit("c", 0.7)]
    lexical = [_hit("c", 9.0), _hit("a", 5.0), _hit("d", 1.0)]
    fused = reciprocal_rank_fusion([dense, lexical], k=4, rrf_k=60)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert [h.chunk.id for h in fused] == ["a", "c", "b", "d"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert [h.rank for h in fused] == [0, 1, 2, 3] and {h.retriever for h in fused} == {"hybrid"}
    assert [h.chunk.id for h in reciprocal_rank_fusion([dense, lexical], k=4, weights=[0.0, 1.0])][
        :2
    ] == ["c", "a"]
    assert reciprocal_rank_fusion([[], []], k=3) == []


def test_weighted_fusion_normalises_each_list() -> None:
    dense = [_hit("a", 0.9), _hit("b", 0.5)]
    lexical = [_hit("b", 20.0), _hit("c", 10.0)]
    fused = weighted_score_fusion([dense, lexical], k=3)
    assert [h.chunk.id for h in fused] == [
        "a",
        "b",
        "c",
    ]  # a: 1 + 0, b: 0 + 1 (tie: first seen first), c: 0 + 0
    assert [round(h.score, 3) for h in fused] == [1.0, 1.0, 0.0]


def test_mmr_prefers_diverse_results() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    near = np.array([0.99, 0.141, 0.0], dtype=np.float32)
    candidates = np.stack([near, near, np.array([0.7, 0.0, 0.714], dtype=np.float32)])
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    assert maximal_marginal_relevance(query, candidates, k=2, diversity=0.0) == [0, 1]
    assert maximal_marginal_relevance(query, candidates, k=2, diversity=0.5) == [0, 2]
    assert maximal_marginal_relevance(query, candidates[:0], k=2) == []


def test_filters_mean_the_same_for_every_retriever(index: Index) -> None:
    for kind in ("dense", "bm25", "hybrid"):
        hits = make_retriever(index, kind, k=10).search(
            "Strasbourg river", filters={"kind": "building"}
        )  # type: ignore[arg-type]
        assert {h.chunk.document_id for h in hits} == {"c1"}, kind
        hits = make_retriever(index, kind, k=10).search(
            "Strasbourg river", filters={"kind": ["river", "event"]}
        )  # type: ignore[arg-type]
        assert {h.chunk.document_id for h in hits} <= {"r1", "r2", "w1"}, kind
    with pytest.raises(RagkitError, match="unknown retriever"):
        make_retriever(index, "sparse", k=3)  # type: ignore[arg-type]


def test_hybrid_contains_lexical_matches_the_dense_model_misses(index: Index) -> None:
    lexical = BM25Retriever(index, k=2).search("Rhine Strasbourg")
    assert lexical[0].chunk.document_id == "r1"
    hybrid = HybridRetriever(index, k=4).search("Rhine Strasbourg")
    assert "r1" in [h.chunk.document_id for h in hybrid[:2]]
    weighted = HybridRetriever(index, k=4, mode="weighted", weights=(0.0, 1.0)).search(
        "Rhine Strasbourg"
    )
    assert weighted[0].chunk.document_id == "r1"
    with pytest.raises(RagkitError, match="hybrid mode"):
        HybridRetriever(index, mode="max")  # type: ignore[arg-type]


def test_mmr_reranker_uses_stored_vectors(index: Index) -> None:
    hits = index.search("river", k=4)
    reranked = MMRReranker(index, k=3, diversity=0.0).rerank("river", hits)
    assert [h.chunk.id for h in reranked] == [
        h.chunk.id for h in hits[:3]
    ]  # no diversity = similarity order
    diverse = MMRReranker(index, k=4, diversity=0.9).rerank("river", hits)
    assert sorted(h.chunk.id for h in diverse) == sorted(h.chunk.id for h in hits)
    assert [h.rank for h in diverse] == [0, 1, 2, 3]


def test_a_cross_encoder_path_that_does_not_exist_is_named_as_a_path(tmp_path: Path) -> None:
    """Not the hub's "Repo id must use alphanumeric chars" about what is plainly a path."""
    from ragkit.retrieval import CrossEncoderReranker

    for name in (str(tmp_path / "missing"), "./missing-model", "~/missing-model"):
        with pytest.raises(RagkitError, match=r"^cross-encoder path not found: "):
            _ = CrossEncoderReranker(name).model
