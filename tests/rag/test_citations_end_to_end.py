"""Citations checked by content: marker mapping, inferred citations, and one scripted answer
followed through the pipeline, the HTTP server and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scripted_generator import ScriptedGenerator
from typer.testing import CliRunner

from ragkit import ChunkingSettings, Index
from ragkit.atomic import atomic_path
from ragkit.embedding import Embedder
from ragkit.rag import RAGPipeline, map_citations
from ragkit.rag.schema import Passage
from ragkit.retrieval import BM25Retriever
from ragkit.schema import Document


def passage(n: int, text: str) -> Passage:
    return Passage(
        n=n, chunk_id=f"c{n}", source=f"s{n}.txt", start=0, end=len(text), text=text, score=1.0
    )


PASSAGES = [
    passage(1, "Strasbourg is the capital of Alsace."),
    passage(2, "Paris is the capital of France; it had 2,175,601 inhabitants."),
]


@pytest.mark.parametrize(
    ("text", "kept", "numbers", "invalid"),
    [
        ("Strasbourg [1, 2].", "Strasbourg [1, 2].", [1, 2], []),
        ("Strasbourg [9, 1].", "Strasbourg [1].", [1], [9]),
        ("Strasbourg [2,1] and [1].", "Strasbourg [2, 1] and [1].", [2, 1], []),
        ("Nothing [7].", "Nothing.", [], [7]),
    ],
)
def test_multi_number_markers_map_to_every_valid_passage(
    text: str, kept: str, numbers: list[int], invalid: list[int]
) -> None:
    cited = map_citations(text, PASSAGES, infer=False)
    assert cited.answer == kept
    assert [c.n for c in cited.citations] == numbers
    assert cited.invalid_markers == invalid


def test_an_inferred_citation_needs_the_whole_answer_in_the_passage() -> None:
    wrong_number = map_citations("Paris had 768,868 inhabitants", PASSAGES)
    assert wrong_number.citations == []
    assert wrong_number.answer == "Paris had 768,868 inhabitants"  # nothing appended
    assert any("uncited" in note for note in wrong_number.notes)
    right = map_citations("2,175,601 inhabitants", PASSAGES)
    assert [(c.n, c.inferred) for c in right.citations] == [(2, True)]
    assert right.answer == "2,175,601 inhabitants"  # the model never wrote a marker
    assert not any("cited nothing" in note for note in right.notes)


def test_atomic_path_leaves_no_temporary_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


# -- one scripted answer through every layer ---------------------------------------------------


@pytest.fixture(scope="module")
def two_doc_index(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> Path:
    directory = tmp_path_factory.mktemp("cite-e2e") / "idx"
    with Index.create(
        directory, tiny_embedder, ChunkingSettings(unit="chars", chunk_size=200)
    ) as index:
        index.add_documents(
            [
                Document(id="a", text="Strasbourg is the capital of Alsace.", source="a.txt"),
                Document(
                    id="b",
                    text="Alsace lies on the Rhine; Strasbourg is its capital.",
                    source="b.txt",
                ),
            ]
        )
        index.commit()
    return directory


def scripted_rag(index: Path, embedder: Embedder, text: str) -> RAGPipeline:
    return RAGPipeline(BM25Retriever(Index.open(index, embedder), k=2), ScriptedGenerator(text))  # type: ignore[arg-type]


def check(citations: list[dict[str, Any]], numbers: list[int]) -> None:
    assert [c["n"] for c in citations] == numbers
    for c in citations:
        assert "Strasbourg" in c["text"]


def test_markers_survive_the_pipeline_the_server_and_the_cli(
    two_doc_index: Path, tiny_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from ragkit.cli import app
    from ragkit.server import ServerSettings, create_app

    text = "Strasbourg [2, 1] [9]"
    rag = scripted_rag(two_doc_index, tiny_embedder, text)
    answer = rag.ask("What is the capital of Alsace?")
    check([c.model_dump() for c in answer.citations], [2, 1])
    assert answer.invalid_markers == [9] and answer.answer == "Strasbourg [2, 1]"

    with TestClient(create_app(rag, ServerSettings())) as client:
        response = client.post("/v1/query", json={"question": "What is the capital of Alsace?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == "Strasbourg [2, 1]"
    check(body["citations"], [2, 1])

    import ragkit.generation

    monkeypatch.setattr(
        ragkit.generation, "make_generator", lambda *a, **k: ScriptedGenerator(text)
    )
    monkeypatch.setattr("ragkit.embedding.Embedder", lambda *a, **k: tiny_embedder)
    result = CliRunner().invoke(
        app,
        ["ask", "What is the capital of Alsace?", "--index", str(two_doc_index), "--json",
         "--retriever", "bm25", "-k", "2", "--generator", "scripted"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    printed = json.loads(result.stdout)
    assert printed["answer"] == "Strasbourg [2, 1]"
    check(printed["citations"], [2, 1])
