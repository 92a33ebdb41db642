from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragkit import Index
from ragkit.cli import app
from ragkit.embedding import Embedder
from ragkit.errors import RagkitError
from ragkit.generation import Generator
from ragkit.rag import STRATEGIES, RAGPipeline, default_examples
from ragkit.retrieval import DenseRetriever

EXPECTED_STEPS = {
    "plain": ["GenerateStep"],
    "fewshot": ["FewShotStep", "GenerateStep"],
    "cot": ["ChainOfThought"],
    "self-consistency": ["SelfConsistency"],
    "least-to-most": ["LeastToMost"],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_wires_and_answers(
    strategy: str, tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path
) -> None:
    generator = Generator(str(tiny_llama_path), device="cpu")
    retriever = DenseRetriever(Index.open(tiny_index, tiny_embedder), k=2)
    rag = RAGPipeline(retriever, generator, options={"max_new_tokens": 6}, strategy=strategy)
    names = [type(s).__name__ for s in rag.pipeline.steps]
    assert names == ["DenseRetriever", "PromptBuilder", *EXPECTED_STEPS[strategy], "CitationStep"]
    answer = rag.ask("What is the capital of Alsace?")
    assert isinstance(answer.answer, str)
    assert (
        answer.trace is not None
        and [s.step for s in answer.trace.steps][2:-1] == EXPECTED_STEPS[strategy]
    )
    streamed = rag.stream("What is the capital of Alsace?")
    assert "".join(streamed).strip() and streamed.answer is not None


def test_fewshot_inserts_the_builtin_demonstrations(
    tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path
) -> None:
    generator = Generator(str(tiny_llama_path), device="cpu")
    retriever = DenseRetriever(Index.open(tiny_index, tiny_embedder), k=1)
    rag = RAGPipeline(retriever, generator, options={"max_new_tokens": 4}, strategy="fewshot")
    prompt = rag.ask("When was the tower completed?").trace.prompt  # type: ignore[union-attr]
    assert prompt is not None
    assert sum(example.output in prompt for example in default_examples()) >= 1


def test_unknown_strategy_is_refused(
    tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path
) -> None:
    with pytest.raises(RagkitError, match="unknown strategy"):
        RAGPipeline(
            DenseRetriever(Index.open(tiny_index, tiny_embedder)),
            Generator(str(tiny_llama_path)),
            strategy="magic",
        )
    result = CliRunner().invoke(
        app, ["ask", "q?", "--index", str(tiny_index), "--strategy", "magic"]
    )
    assert result.exit_code == 2 and "Invalid value for '--strategy'" in result.stderr
    assert "'magic' is not one of 'plain', 'fewshot'" in result.stderr
