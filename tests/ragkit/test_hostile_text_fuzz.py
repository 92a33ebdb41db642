"""Hostile document text through index → search → CLI printers and ``/v1/search`` (issue 22).

A short hypothesis run; ``benchmarks/hostile_text_fuzz.py`` runs the same checks on ≥ 10,000
generated documents. What is generated and checked: ``tests/hostile_text.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hostile_text import HostileRig, corpora, hostile_texts
from hypothesis import HealthCheck, given, settings
from tiny_llama import build_tiny_llama

from ragkit.embedding import Embedder


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> HostileRig:
    from ragkit.generation import Generator

    llama = build_tiny_llama(
        tmp_path_factory.mktemp("hostile-llama"),
        ["Strasbourg is the capital of Alsace."],
        hidden_size=16,
        layers=1,
        heads=2,
        kv_heads=1,
    )
    return HostileRig(tiny_embedder, Generator(str(llama)), tmp_path_factory.mktemp("hostile"))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(corpus=corpora(max_files=4, max_line=5_000), query=hostile_texts(12))
def _run(rig: Any, corpus: Any, query: str) -> None:
    rig.check(corpus, query if query.strip() else "Strasbourg")


def test_hostile_text_survives_index_search_print_and_http(rig: HostileRig) -> None:
    _run(rig)
    assert rig.stats.corpora >= 30 and rig.stats.indexed_documents > 0


def test_a_corpus_without_a_single_word_indexes_and_searches(
    tmp_path: Path, tiny_embedder: Embedder
) -> None:
    # bm25s cannot index an empty vocabulary: a commit used to fail with "max() arg is an
    # empty sequence" when no chunk held a word (found by the test above)
    from ragkit.chunking import ChunkingSettings
    from ragkit.index import Index
    from ragkit.schema import Document

    settings = ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=0)
    with Index.create(tmp_path / "idx", tiny_embedder, settings) as index:
        index.add_documents([Document(id="d", text="[/] ... the", source="d")])
        index.commit()
        assert index.search_lexical("the [/]", 5) == []
        assert [h.chunk.text for h in index.search("[/]", 5)] == ["[/] ... the"]
