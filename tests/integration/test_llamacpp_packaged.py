"""Integration: the llama.cpp backend on the packaged Gemma GGUF with the grounded-qa adapter merged
in answers like the transformers default: the Strasbourg year, quoted exactly from its passage.

Skipped where llama-cpp-python is not installed (it compiles from source: ``ragkit[llamacpp]``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragkit import Embedder, Index, index_paths
from ragkit.rag import RAGPipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llamacpp_rag(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> RAGPipeline:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gguf")
    from ragkit.generation.backends import LlamaCppGenerator
    from ragkit.generation.checkpoints import packaged_model_gguf

    try:
        packaged_model_gguf(None)
    except Exception as exc:
        pytest.skip(f"packaged default generator unavailable: {exc}")
    folder = tmp_path_factory.mktemp("llamacpp-answers")
    for path in (shared_data / "wiki").glob("*.txt"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    directory = folder / "idx"
    with Index.create(directory, Embedder(None, device="cpu")) as index:
        index_paths(index, [folder])
    generator = LlamaCppGenerator(None, adapter="grounded-qa", n_threads=2)
    return RAGPipeline.from_index(directory, generator=generator)


def test_the_strasbourg_year_is_quoted_from_its_passage(llamacpp_rag: RAGPipeline) -> None:
    answer = llamacpp_rag.ask(
        "In which year was Strasbourg formally designated the seat of the European Parliament?"
    )
    assert "1992" in answer.answer, answer.answer
    (citation,) = answer.citations
    source = Path(citation.source).read_text(encoding="utf-8")
    assert citation.quote == answer.answer
    assert source[citation.quote_start : citation.quote_end] == citation.quote


def test_streamed_pieces_are_the_answer(llamacpp_rag: RAGPipeline) -> None:
    question = "Which river does Strasbourg lie on?"
    stream = llamacpp_rag.stream(question)
    pieces = list(stream)
    assert "".join(pieces).strip() == llamacpp_rag.ask(question).answer
