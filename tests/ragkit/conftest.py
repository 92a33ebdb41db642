"""A small committed index shared by the retriever tests: two rivers, a building, an event."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.index import Index
from ragkit.schema import Document


@pytest.fixture()
def index(tmp_path: Path, tiny_embedder: Embedder) -> Index:
    ix = Index.create(
        tmp_path / "idx",
        tiny_embedder,
        ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=0),
    )
    ix.add_documents(
        [
            Document(
                id="r1",
                text="The Rhine river flows past Strasbourg.",
                source="r1",
                metadata={"kind": "river"},
            ),
            Document(
                id="r2",
                text="The Seine river flows through Paris.",
                source="r2",
                metadata={"kind": "river"},
            ),
            Document(
                id="c1",
                text="Strasbourg cathedral is gothic.",
                source="c1",
                metadata={"kind": "building"},
            ),
            Document(
                id="w1",
                text="The war on terror began in 2001.",
                source="w1",
                metadata={"kind": "event"},
            ),
        ]
    )
    ix.commit()
    return ix
