from __future__ import annotations

from pathlib import Path
from typing import Any

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

    answerable_only = EvalDataset(name="t", format="jsonl", questions=questions[:1])
    with Index.open(tmp_path / "idx", tiny_embedder) as index:
        retriever = DenseRetriever(index, k=2)
        rag = RAGPipeline(
            retriever, Generator(str(tiny_llama_path), device="cpu"), options={"max_new_tokens": 4}
        )
        report = evaluate(answerable_only, retriever, k=2, rag=rag)
    assert report.generation is not None
    # no unanswerable question: the abstention rate is undefined (null), not a score of 0
    assert report.generation["abstention_accuracy"] is None
    assert report.generation["f1"] is not None and report.generation["unanswerable"] == 0.0


def test_eval_generate_reads_asks_k_and_reports_progress_and_latency(
    tmp_path: Path, tiny_model_path: Path, tiny_llama_path: Path, monkeypatch: Any
) -> None:
    import json

    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.rag import RAGPipeline

    corpus = [f"Document {i} talks about river number {i} and city {i}." for i in range(8)]
    data = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": text,
                        "qas": [
                            {
                                "id": str(i),
                                "question": f"Which river is number {i}?",
                                "answers": [{"text": f"river number {i}", "answer_start": 24}],
                                "is_impossible": False,
                            }
                        ],
                    }
                    for i, text in enumerate(corpus)
                ],
            }
        ]
    }
    (tmp_path / "d.json").write_text(json.dumps(data), encoding="utf-8")
    seen: list[int] = []
    original = RAGPipeline.ask

    def spy(self: Any, question: str, *args: Any, **kwargs: Any) -> Any:
        answer = original(self, question, *args, **kwargs)
        seen.append(len(answer.passages))
        return answer

    monkeypatch.setattr(RAGPipeline, "ask", spy)
    result = CliRunner().invoke(
        app,
        ["eval", str(tmp_path / "d.json"), "--embedder", str(tiny_model_path), "--generate",
         "--generator", str(tiny_llama_path), "--generate-k", "2", "-k", "10",
         "--max-new-tokens", "3", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert seen and set(seen) == {2}, "the generator reads ask's k, not the retrieval depth"
    assert report["k"] == 10
    # progress on stderr even with --json, each phase counted over the questions (not 2 x N)
    n = len(seen)
    assert f"evaluating, retrieval: {n}/{n}" in result.stderr
    assert f"evaluating, answering: {n}/{n}" in result.stderr
    generation = report["generation"]
    assert (
        generation["latency_p50_s"] > 0
        and generation["latency_p95_s"] >= generation["latency_p50_s"]
    )
