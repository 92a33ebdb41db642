"""RAGPipeline.save/load for every strategy and both decoding modes: same steps, same answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.generation import Generator
from ragkit.pipeline import component_spec
from ragkit.rag import DECODINGS, STRATEGIES, RAGPipeline
from ragkit.retrieval import DenseRetriever

QUESTION = "What is the capital of Alsace?"
CASES = [(s, d) for s in STRATEGIES for d in DECODINGS if d == "free" or s == "plain"]


def build(
    strategy: str, decoding: str, index: Path, embedder: Embedder, model: Path
) -> RAGPipeline:
    extra: dict[str, Any] = {}
    if decoding == "grounded":
        # a random model copies the prompt's "not in the passages" as readily as anything:
        # bias it away from abstaining so that a span is decoded
        extra = {"template": "grounded_qa_completion", "abstain_bias": -50.0}
    rag = RAGPipeline(
        DenseRetriever(Index.open(index, embedder), k=2),
        Generator(str(model), device="cpu"),
        options={"max_new_tokens": 4},  # greedy (the default)
        strategy=strategy,
        decoding=decoding,  # type: ignore[arg-type]
        **extra,
    )
    # reasoning strategies raise the token limit to leave room for reasoning, and
    # self-consistency samples 5 paths: keep the test small (the saved file carries the change)
    for step in rag.pipeline.steps:
        if hasattr(step, "cot"):
            step.n = 2
            step = step.cot
        if isinstance(getattr(step, "options", None), dict):
            step.options["max_new_tokens"] = 4
    return rag


@pytest.mark.parametrize(("strategy", "decoding"), CASES)
def test_save_load_gives_the_same_pipeline_and_answer(
    strategy: str,
    decoding: str,
    tiny_index: Path,
    tiny_embedder: Embedder,
    tiny_llama_path: Path,
    tmp_path: Path,
) -> None:
    rag = build(strategy, decoding, tiny_index, tiny_embedder, tiny_llama_path)
    path = tmp_path / "rag.yaml"
    rag.save(path)
    text = path.read_text()
    assert "!!python" not in text and yaml.safe_load(text)["resources"]["generator"]
    loaded = RAGPipeline.load(path)  # everything rebuilt from the file, the generator included
    assert loaded.generator is not rag.generator
    assert loaded.strategy == strategy
    assert [component_spec(s) for s in loaded.pipeline.steps] == [
        component_spec(s) for s in rag.pipeline.steps
    ]
    # one generator for every step that uses one, and the prompt fitted to it
    assert loaded.prompt_builder.budget is loaded.generator
    users = [s for s in loaded.pipeline.steps if hasattr(s, "generator")]
    assert users and all(s.generator is loaded.generator for s in users)
    if loaded.generate_step is not None:
        assert loaded.generate_step.decoding == decoding
    before, after = rag.ask(QUESTION), loaded.ask(QUESTION)
    assert after.answer == before.answer
    assert after.trace is not None and before.trace is not None
    assert after.trace.prompt == before.trace.prompt
    assert after.trace.notes == before.trace.notes
    assert [c.model_dump() for c in after.citations] == [c.model_dump() for c in before.citations]


def test_load_reattaches_a_live_generator(
    tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path, tmp_path: Path
) -> None:
    rag = build("cot", "free", tiny_index, tiny_embedder, tiny_llama_path)
    path = tmp_path / "rag.yaml"
    rag.save(path)
    loaded = RAGPipeline.load(path, context={"generator": rag.generator})
    assert loaded.generator is rag.generator
    assert loaded.pipeline.steps[2].generator is rag.generator


def test_a_renamed_multi_step_pipeline_is_not_streamed_as_plain(
    tiny_index: Path, tiny_embedder: Embedder, tiny_llama_path: Path, tmp_path: Path
) -> None:
    """The strategy comes back from the name; without it, from the steps (never a wrong plain)."""
    rag = build("fewshot", "free", tiny_index, tiny_embedder, tiny_llama_path)
    path = tmp_path / "rag.yaml"
    rag.save(path)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "name": "my-pipeline"}, sort_keys=False))
    loaded = RAGPipeline.load(path, context={"generator": rag.generator})
    assert loaded.strategy == "custom"
    stream = loaded.stream(QUESTION)
    assert "".join(stream) == rag.ask(QUESTION).answer
