"""Fixtures for pipeline tests: a tiny index (tiny embedder) and a tiny random Llama generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_llama import build_tiny_llama

from ragkit import ChunkingSettings, Index
from ragkit.embedding import Embedder
from ragkit.schema import Document

TEXTS = {
    "strasbourg": "Strasbourg is the capital of Alsace. The Rhine river flows past Strasbourg.",
    "paris": "Paris is the capital of France. The Seine river flows through Paris.",
    "war": "The war on terror began in 2001 after the attacks on the United States.",
    "culture": "Culture includes music, art, language and the history of people.",
}


def build_llama(folder: Path, max_positions: int = 4096) -> Path:
    return build_tiny_llama(folder, list(TEXTS.values()), max_positions=max_positions)


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("rag-llama"))


@pytest.fixture(scope="session")
def short_context_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("rag-llama-short"), max_positions=480)


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> Path:
    directory = tmp_path_factory.mktemp("rag-index") / "idx"
    with Index.create(
        directory, tiny_embedder, ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=0)
    ) as index:
        index.add_documents(
            [
                Document(id=k, text=v, source=f"{k}.txt", metadata={"topic": k})
                for k, v in TEXTS.items()
            ]
        )
        index.commit()
    return directory


@pytest.fixture(scope="session")
def tiny_generator(tiny_llama_path: Path) -> Any:
    from ragkit.generation import Generator

    return Generator(str(tiny_llama_path), device="cpu", options={"max_new_tokens": 12}).warm_up()


def answered_three_ways(rag: Any, questions: list[str]) -> tuple[list[Any], list[Any], list[Any]]:
    """The same questions batched, one by one and streamed: (batched, single, [(answer, text)])
    — the three must agree wherever a decoding decision is made."""
    batched = rag.ask_batch(questions)
    single = [rag.ask(q) for q in questions]
    streamed = []
    for question in questions:
        stream = rag.stream(question)
        text = "".join(stream)
        assert stream.answer is not None
        streamed.append((stream.answer, text))
    return batched, single, streamed


@pytest.fixture(scope="session")
def file_index(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> Path:
    """The tiny texts as real files, so citation offsets can be checked against the source."""
    folder = tmp_path_factory.mktemp("grounded-sources")
    directory = folder / "idx"
    with Index.create(
        directory, tiny_embedder, ChunkingSettings(unit="chars", chunk_size=60, chunk_overlap=0)
    ) as index:
        docs = []
        for name, text in TEXTS.items():
            path = folder / f"{name}.txt"
            path.write_text("Preamble line.\n" + text, encoding="utf-8")
            docs.append(Document(id=name, text=path.read_text(encoding="utf-8"), source=str(path)))
        index.add_documents(docs)
        index.commit()
    return directory
