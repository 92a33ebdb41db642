"""Integration: packaged MiniLM + packaged SmolLM2 answering a SQuAD question with citations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkit import Embedder, Index
from ragkit.rag import RAGPipeline
from ragkit.schema import Document

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def squad_index(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    pytest.importorskip("gguf")
    data = json.loads((shared_data / "squad_small.json").read_text(encoding="utf-8"))
    paragraphs = data["data"][0]["paragraphs"][:8]
    directory = tmp_path_factory.mktemp("squad") / "idx"
    with Index.create(directory, Embedder(None, device="cpu")) as index:
        index.add_documents(
            [
                Document(id=f"normans-{i}", text=p["context"], source=f"squad:normans:{i}")
                for i, p in enumerate(paragraphs)
            ]
        )
        index.commit()
    return directory


def test_smollm2_answers_from_retrieved_passages(squad_index: Path) -> None:
    from ragkit.generation import resolve_causal_lm

    try:
        resolve_causal_lm("smollm2")
    except Exception as exc:
        pytest.skip(f"packaged SmolLM2 unavailable: {exc}")
    rag = RAGPipeline.from_index(
        squad_index, generator="smollm2", k=3, options={"max_new_tokens": 32}
    )
    question = "When were the Normans in Normandy?"
    answer = rag.ask(question)
    assert answer.passages[0].chunk_id.startswith("normans-0:")
    assert answer.answer.strip()
    assert answer.trace is not None and "10th and 11th centuries" in (answer.trace.prompt or "")
    index = rag.retriever.index
    for citation in answer.citations:
        document = index.document(citation.chunk_id.rsplit(":", 1)[0])
        assert (
            document is not None and document.text[citation.start : citation.end] == citation.text
        )
    batch = rag.ask_batch([question, "Who was the Norse leader?"])
    assert batch[0].answer == answer.answer
