"""Multi-query and HyDE retrieval, with a scripted generator (control flow) and a tiny index."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from ragkit import Index
from ragkit.errors import RagkitError
from ragkit.query_transforms import HyDERetriever, MultiQueryRetriever, parse_queries
from ragkit.retrieval import DenseRetriever
from ragkit.schema import Chunk, Hit


class ScriptedGenerator:
    """Answers every prompt with a fixed text and records the prompts (tests only)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.prompts: list[Any] = []

    def generate(self, prompts: list[Any], **options: Any) -> list[Any]:
        self.prompts.extend(prompts)

        class Result:
            text = self.text

        return [Result() for _ in prompts]


class RecordingRetriever:
    """Returns a fixed ranking per query and records the calls."""

    def __init__(self, rankings: dict[str, list[str]]) -> None:
        self.rankings = rankings
        self.calls: list[tuple[str, int, Any]] = []
        self.k = 2

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        self.calls.append((query, k or self.k, filters))
        ids = self.rankings.get(query, [])[: k or self.k]
        return [
            Hit(
                chunk=Chunk(id=c, document_id=c, text=c, start=0, end=1),
                score=1.0 / (r + 1),
                rank=r,
            )
            for r, c in enumerate(ids)
        ]


def test_parse_queries_strips_markers_duplicates_and_the_question() -> None:
    text = '1. Rhine river city\n- rhine river city\n\n* Strasbourg river\nWhat river?\n(3) x\n"Alsace waters"'
    assert parse_queries(text, "What river?", 5) == [
        "Rhine river city",
        "Strasbourg river",
        "Alsace waters",
    ]
    assert parse_queries(text, "What river?", 1) == ["Rhine river city"]


def test_multi_query_searches_each_rewording_and_fuses() -> None:
    base = RecordingRetriever(
        {
            "which river?": ["a", "b"],
            "river of strasbourg": ["c", "a"],
            "rhine city": ["c", "d"],
        }
    )
    generator = ScriptedGenerator("river of strasbourg\nrhine city\nunused third")
    retriever = MultiQueryRetriever(base, generator, n=2, k=3)
    hits = retriever.search("which river?", filters={"kind": "river"})
    assert [q for q, _, _ in base.calls] == ["which river?", "river of strasbourg", "rhine city"]
    assert all(f == {"kind": "river"} for _, _, f in base.calls)  # filters reach every search
    # RRF: "a" (ranks 1 and 2) and "c" (1 and 1) beat singletons; "c" has the better ranks
    assert [h.chunk.id for h in hits] == ["c", "a", "b"]
    assert all(h.retriever == "multi_query" for h in hits)
    assert (
        "which river?" in str(generator.prompts[0]) and retriever.last_queries[0] == "which river?"
    )


def test_multi_query_falls_back_to_the_question_alone() -> None:
    base = RecordingRetriever({"q?": ["a"]})
    hits = MultiQueryRetriever(base, ScriptedGenerator("   \n"), n=3).run("q?").hits
    assert [h.chunk.id for h in hits] == ["a"] and len(base.calls) == 1
    with pytest.raises(RagkitError, match="n must be at least 1"):
        MultiQueryRetriever(base, ScriptedGenerator(""), n=0)


def test_hyde_searches_by_the_mixed_embedding(index: Index) -> None:
    passage = "The war on terror began in 2001."
    generator = ScriptedGenerator(passage)
    hyde = HyDERetriever(index, generator, k=3, question_weight=0.0)
    hits = hyde.search("cathedral")
    # weight 0: only the generated passage counts, so its exact twin ranks first
    assert hits[0].chunk.document_id == "w1" and hyde.last_passage == passage
    assert all(h.retriever == "hyde" for h in hits)
    expected = index.embedder.encode([passage])[0]
    assert np.allclose(hyde.query_vector("cathedral")[0], expected, atol=1e-5)
    mixed = HyDERetriever(index, generator, question_weight=0.5).query_vector("cathedral")
    assert abs(float(np.linalg.norm(mixed)) - 1.0) < 1e-5
    filtered = HyDERetriever(index, generator, k=3).search(
        "cathedral", filters={"kind": "building"}
    )
    assert [h.chunk.document_id for h in filtered] == ["c1"]


def test_hyde_without_a_passage_is_plain_dense_search(index: Index) -> None:
    hyde = HyDERetriever(index, ScriptedGenerator(""), k=2)
    dense = DenseRetriever(index, k=2)
    assert [h.chunk.id for h in hyde.search("Rhine river")] == [
        h.chunk.id for h in dense.search("Rhine river")
    ]
    with pytest.raises(RagkitError, match="question_weight"):
        HyDERetriever(index, ScriptedGenerator(""), question_weight=2.0)
