from __future__ import annotations

from pathlib import Path

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.evaluation import EvalQuestion, evaluate
from ragkit.retrieval import DenseRetriever
from ragkit.schema import Document


def test_evaluate_with_generation(
    tmp_path: Path, tiny_embedder: Embedder, tiny_llama_path: Path
) -> None:
    from ragkit.evaluation import EvalDataset
    from ragkit.generation import Generator
    from ragkit.rag import RAGPipeline

    docs = [
        Document(id="d1", text="Strasbourg is the capital of Alsace.", source="d1"),
        Document(id="d2", text="Paris is the capital of France.", source="d2"),
    ]
    questions = [
        EvalQuestion(
            id="1", question="capital of Alsace?", answers=["Strasbourg"], gold_ids=["d1"]
        ),
        EvalQuestion(id="2", question="Who painted it?", is_impossible=True),
    ]
    with Index.create(tmp_path / "idx", tiny_embedder) as index:
        index.add_documents(docs)
        index.commit()
        retriever = DenseRetriever(index, k=2)
        rag = RAGPipeline(
            retriever, Generator(str(tiny_llama_path), device="cpu"), options={"max_new_tokens": 4}
        )
        report = evaluate(
            EvalDataset(name="t", format="jsonl", questions=questions), retriever, k=2, rag=rag
        )
    assert report.retrieval["hit@10"] == 1.0 and report.retrieval["questions_scored"] == 1.0
    assert report.generation is not None
    assert set(report.generation) >= {
        "exact_match",
        "f1",
        "abstention_accuracy",
        "citation_precision",
        "groundedness",
    }
    assert report.generation["answered"] == 1.0 and report.generation["unanswerable"] == 1.0
