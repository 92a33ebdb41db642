from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.errors import InvalidQueryError
from ragkit.generation import Generator
from ragkit.pipeline import Parallel, Pipeline, PipelineError, load_pipeline
from ragkit.rag import CitationStep, GenerateStep, PromptBuilder, RAGPipeline, map_citations
from ragkit.rag.schema import Passage
from ragkit.retrieval import DenseRetriever, Retrieved
from ragkit.schema import Chunk, Hit

QUESTIONS = [
    "What is the capital of Alsace?",
    "Which river flows through Paris?",
    "When did the war on terror begin?",
]


@pytest.fixture(scope="module")
def retriever(tiny_index: Path, tiny_embedder: Embedder) -> DenseRetriever:
    return DenseRetriever(Index.open(tiny_index, tiny_embedder), k=2)


@pytest.fixture(scope="module")
def rag(retriever: DenseRetriever, tiny_generator: Generator) -> RAGPipeline:
    return RAGPipeline(retriever, tiny_generator, options={"max_new_tokens": 12})


def test_miswired_pipeline_fails_at_construction(
    retriever: DenseRetriever, tiny_generator: Generator
) -> None:
    with pytest.raises(
        PipelineError,
        match=r"step 'GenerateStep' needs input 'prompt'.*hits \(from step 'DenseRetriever'\)",
    ):
        Pipeline([retriever, GenerateStep(tiny_generator)])


class Counter:
    def run(self, question: str) -> Retrieved:
        return Retrieved(hits=[])


class WantsInt(BaseModel):
    n: int


class NeedsIntHits:
    def run(self, hits: int) -> WantsInt:
        return WantsInt(n=hits)


class Fused(BaseModel):
    hits: list[Hit]


class ReciprocalRank:
    def run(self, hits_list: list[list[Hit]]) -> Fused:
        scores: dict[str, tuple[float, Hit]] = {}
        for hits in hits_list:
            for rank, hit in enumerate(hits):
                prev = scores.get(hit.chunk.id, (0.0, hit))[0]
                scores[hit.chunk.id] = (prev + 1 / (60 + rank), hit)
        ordered = sorted(scores.values(), key=lambda t: -t[0])
        return Fused(hits=[h for _, h in ordered])


def test_type_mismatch_names_both_steps(retriever: DenseRetriever) -> None:
    with pytest.raises(
        PipelineError,
        match=r"'NeedsIntHits' needs 'hits' as int, but step 'Counter' provides list\[.*Hit\]",
    ):
        Pipeline([Counter(), NeedsIntHits()])


def test_run_without_return_annotation_is_refused() -> None:
    class Bad:
        def run(self, question: str):  # type: ignore[no-untyped-def]
            return question

    with pytest.raises(PipelineError, match="must be annotated to return a pydantic model"):
        Pipeline([Bad()])


def test_rag_answer_trace_and_exact_prompt(rag: RAGPipeline) -> None:
    answer = rag.ask(QUESTIONS[0])
    assert answer.passages and answer.passages[0].n == 1
    assert answer.trace is not None
    assert [s.step for s in answer.trace.steps] == [
        "DenseRetriever",
        "PromptBuilder",
        "GenerateStep",
        "CitationStep",
    ]
    built = rag.prompt_builder.run(QUESTIONS[0], rag.retriever.run(QUESTIONS[0]).hits)
    assert answer.trace.prompt == rag.generator.render(built.prompt)
    assert built.passages[0].text in answer.trace.prompt and "[1]" in answer.trace.prompt
    assert QUESTIONS[0] in answer.trace.to_text()
    assert '"prompt"' in answer.trace.to_json()


def test_run_batch_equals_one_by_one(rag: RAGPipeline) -> None:
    batched = rag.ask_batch(QUESTIONS)
    single = [rag.ask(q) for q in QUESTIONS]
    assert [a.answer for a in batched] == [a.answer for a in single]
    assert [a.trace.prompt for a in batched] == [a.trace.prompt for a in single]  # type: ignore[union-attr]


def test_stream_concatenates_to_answer(rag: RAGPipeline) -> None:
    stream = rag.stream(QUESTIONS[1])
    pieces = list(stream)
    assert stream.answer is not None
    generated = rag.ask(QUESTIONS[1]).trace.steps[2].outputs["text"]  # type: ignore[union-attr]
    assert "".join(pieces).strip() == generated


def test_yaml_round_trip_gives_same_output(rag: RAGPipeline, tmp_path: Path) -> None:
    path = tmp_path / "rag.yaml"
    rag.save(path)
    text = path.read_text()
    assert "dense_retriever" in text and "!!python" not in text
    loaded = RAGPipeline.load(path)
    assert [s.component_name for s in loaded.pipeline.steps] == [
        "dense_retriever",
        "prompt_builder",
        "generator",
        "citations",
    ]
    assert loaded.prompt_builder.budget is loaded.generator
    for q in QUESTIONS[:2]:
        assert loaded.ask(q).answer == rag.ask(q).answer


def test_yaml_rejects_unknown_components(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "format: ragkit-pipeline\nversion: 1\nsteps:\n  - type: os.system\n    params: {}\n"
    )
    with pytest.raises(PipelineError, match=r"unknown component type 'os\.system'"):
        load_pipeline(path)
    path.write_text("format: ragkit-pipeline\nversion: 1\nsteps: []\nextra: 1\n")
    with pytest.raises(PipelineError, match="unknown key"):
        load_pipeline(path)


def test_parallel_fan_out_and_merge(
    retriever: DenseRetriever, tiny_embedder: Embedder, tiny_index: Path
) -> None:
    wide = DenseRetriever(Index.open(tiny_index, tiny_embedder), k=4)
    pipeline = Pipeline(
        [Parallel(narrow=retriever, wide=wide), ReciprocalRank()], inputs={"question": str}
    )
    result = pipeline.run(question="capital of Alsace")
    assert len(result["narrow_hits"]) == 2 and len(result["wide_hits"]) == 4
    assert len(result["hits_list"]) == 2
    assert len(result["hits"]) == 4
    with pytest.raises(PipelineError, match="missing input 'question'"):
        pipeline.run()


def test_citation_mapping() -> None:
    passages = [
        Passage(
            n=1,
            chunk_id="c1",
            source="a.txt",
            start=0,
            end=20,
            text="Strasbourg is in Alsace",
            score=0.9,
        ),
        Passage(
            n=2,
            chunk_id="c2",
            source="b.txt",
            start=5,
            end=30,
            text="Paris is in France",
            score=0.8,
        ),
    ]
    cited = map_citations("Strasbourg [1] and Paris [2][7].", passages)
    assert [(c.n, c.chunk_id, c.start, c.end) for c in cited.citations] == [
        (1, "c1", 0, 20),
        (2, "c2", 5, 30),
    ]
    assert cited.invalid_markers == [7] and "[7]" not in cited.answer
    assert cited.notes
    inferred = map_citations("Paris is in France.", passages)
    assert [(c.n, c.inferred) for c in inferred.citations] == [(2, True)]
    assert map_citations("The context does not say.", passages).citations == []
    assert map_citations("Bananas are yellow.", passages, infer=True).citations == []


def filler_hits(n: int) -> list[Hit]:
    """``n`` ranked hits of the same 48 filler words (best first)."""
    text = "zq xv kj wp " * 12
    return [
        Hit(
            chunk=Chunk(id=f"c{i}", document_id="d", text=text, start=0, end=144, source="s"),
            score=1.0 - i / (10 * n),
        )
        for i in range(n)
    ]


def test_prompt_budget_drops_lowest_ranked_passages(short_context_llama_path: Path) -> None:
    generator = Generator(
        str(short_context_llama_path), device="cpu", options={"max_new_tokens": 8}
    )
    builder = PromptBuilder(budget=generator)
    hits = filler_hits(4)
    built = builder.run("What is the capital?", hits)
    assert generator.count_tokens(built.prompt) <= generator.max_prompt_tokens()
    assert 1 <= len(built.passages) < 4 and [p.n for p in built.passages] == list(
        range(1, len(built.passages) + 1)
    )
    assert any("dropped" in n or "truncated" in n for n in built.notes)
    with pytest.raises(InvalidQueryError, match="question alone is longer"):
        builder.run("capital " * 300, hits)


def test_a_prompt_cap_below_the_context_drops_passages_and_says_so(
    tiny_generator: Generator,
) -> None:
    """The answering profile's cap (the prompt length an adapter was trained on) binds before
    the model's context does: ``-k 1000`` must not hand a CPU a 30k-token prompt."""
    hits = filler_hits(20)
    uncapped = PromptBuilder(budget=tiny_generator).run("What is the capital?", hits)
    assert len(uncapped.passages) == 20 and not uncapped.notes
    cap = tiny_generator.count_tokens(uncapped.prompt) // 3
    builder = PromptBuilder(budget=tiny_generator, max_prompt_tokens=cap)
    built = builder.run("What is the capital?", hits)
    assert 1 <= len(built.passages) < 20 and tiny_generator.count_tokens(built.prompt) <= cap
    assert [p.chunk_id for p in built.passages] == [h.chunk.id for h in hits[: len(built.passages)]]
    assert any("prompt cap" in n and str(cap) in n for n in built.notes)
    again = PromptBuilder.from_config(builder.to_config(), {"generator": tiny_generator})
    assert again.max_prompt_tokens == cap
    assert again.run("What is the capital?", hits).passages == built.passages
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        PromptBuilder(max_prompt_tokens=0)


def test_the_default_profile_caps_prompts_at_its_adapters_training_length() -> None:
    from ragkit.rag.profiles import answering_profile

    assert answering_profile(None).max_prompt_tokens == 1536  # sft max_length of the adapter
    assert answering_profile("smollm2").max_prompt_tokens is None


def test_empty_question_is_refused(rag: RAGPipeline) -> None:
    with pytest.raises(InvalidQueryError, match="question is empty"):
        rag.ask("  ")


def test_pipeline_or_operator(retriever: DenseRetriever, tiny_generator: Generator) -> None:
    builder: Any = PromptBuilder(budget=tiny_generator)
    pipeline = (
        Pipeline([retriever])
        | builder
        | GenerateStep(tiny_generator, {"max_new_tokens": 4})
        | CitationStep()
    )
    result = pipeline.run(question="capital of France")
    assert isinstance(result["answer"], str) and result.trace.prompt


_ABANDON = """
import sys
from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.generation import Generator
from ragkit.rag import RAGPipeline
from ragkit.retrieval import DenseRetriever

index = Index.open(sys.argv[1], Embedder(sys.argv[2], device="cpu"))
generator = Generator(sys.argv[3], device="cpu", options={"max_new_tokens": 3000})
rag = RAGPipeline(DenseRetriever(index, k=1), generator, options={"max_new_tokens": 3000})
stream = rag.stream("What is the capital of Alsace?")
print(repr(next(iter(stream))), flush=True)
"""


def test_abandoning_a_stream_mid_generation_exits_cleanly(
    tmp_path: Path, tiny_index: Path, tiny_model_path: Path, tiny_llama_path: Path
) -> None:
    import subprocess
    import sys

    script = tmp_path / "abandon.py"
    script.write_text(_ABANDON)
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_index), str(tiny_model_path), str(tiny_llama_path)],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-1000:]
    assert done.stdout.strip(), "a first piece was streamed before exiting"
