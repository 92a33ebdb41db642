"""Helpers of the soak tests (imported by their conftest and test modules)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from live_server import live_server

from ragkit import ChunkingSettings, Index
from ragkit.embedding import Embedder
from ragkit.schema import Document

HERE = Path(__file__).resolve().parent

SENTENCES = [
    "Strasbourg is the capital of Alsace and the Rhine river flows past Strasbourg.",
    "Paris is the capital of France and the Seine river flows through Paris.",
    "Culture includes music, art, language and the history of people.",
    "The cathedral of Strasbourg is a landmark of Europe.",
    "The war on terror began after the attacks; parliament debated it.",
    "Materialism is a view in the history of philosophy.",
]


def soak_documents(prefix: str, count: int) -> list[Document]:
    return [
        Document(
            id=f"{prefix}{i}",
            text=f"{SENTENCES[i % len(SENTENCES)]} Note {prefix}{i}.",
            source=f"{prefix}{i}.txt",
            metadata={"part": i % 3},
        )
        for i in range(count)
    ]


def build_index(directory: Path, embedder: Embedder, count: int = 30) -> Path:
    settings = ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=0)
    with Index.create(directory, embedder, settings) as index:
        index.add_documents(soak_documents("d", count))
        index.commit()
    return directory


def make_rag(index: Path, generator: Any, retriever: str = "hybrid") -> Any:
    from ragkit.rag import RAGPipeline

    return RAGPipeline.from_index(
        index, generator, k=3, retriever=retriever, options={"max_new_tokens": 3}
    )


@contextlib.contextmanager
def serve(rag: Any, **settings: Any) -> Iterator[str]:
    """The app with ``settings`` (defaults otherwise, rate limit included) on a loopback port."""
    from ragkit.server import ServerSettings, create_app

    with live_server(create_app(rag, ServerSettings(**settings))) as base:
        yield base


def assert_clean(result: dict[str, Any], routes: tuple[str, ...]) -> None:
    """Every request answered 200 (no 4xx, no 5xx), no connection error, every route used."""
    assert result["errors"] == [], result["errors"][:5]
    bad = {
        route: {status: n for status, n in counts.items() if status != "200"}
        for route, counts in result["statuses"].items()
    }
    assert all(not v for v in bad.values()), f"non-200 answers: {bad}"
    for route in routes:
        assert result["statuses"].get(route, {}).get("200", 0) > 0, (route, result["statuses"])


def assert_feedback_complete(db: Path, result: dict[str, Any]) -> None:
    """Every acknowledged answer, vote and choice is in the store, and nothing else."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        answers = {row[0] for row in conn.execute("SELECT id FROM answers")}
        votes = Counter(conn.execute("SELECT answer_id, value FROM votes").fetchall())
        choices = Counter(conn.execute("SELECT chosen_id, rejected_id FROM choices").fetchall())
    assert set(result["answers"]) <= answers, "acknowledged answers missing from the store"
    assert len(answers) == len(result["answers"])  # no error: every answer recorded was acked
    assert votes == Counter(tuple(v) for v in result["votes"])
    assert choices == Counter(tuple(c) for c in result["choices"])
