"""Streaming goes through the pipeline: the streamed step hands out its pieces as they come,
then the steps after it run as in ``run``; the answer and its trace (every step timed) are the
non-streamed ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from scripted_generator import ScriptedGenerator

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.generation import GenerationResult, Generator
from ragkit.pipeline import Pipeline, PipelineError, StepStream
from ragkit.rag import RAGPipeline
from ragkit.retrieval import BM25Retriever, DenseRetriever

QUESTION = "What is the capital of Alsace?"


# -- the generic pipeline core -------------------------------------------------------------------


class Text(BaseModel):
    text: str


class Spelled(BaseModel):
    letters: list[str]


class Counted(BaseModel):
    count: int


class Upper:
    def run(self, question: str) -> Text:
        return Text(text=question.upper())


class LetterStream:
    """A StepStream: one letter per piece, produced only when asked for."""

    def __init__(self, text: str) -> None:
        self._letters = iter(text)
        self.produced: list[str] = []
        self.output: Spelled | None = None
        self.closed = False

    def __iter__(self) -> LetterStream:
        return self

    def __next__(self) -> str:
        if self.closed:
            raise StopIteration
        try:
            letter = next(self._letters)
        except StopIteration:
            self.output = Spelled(letters=self.produced)
            raise
        self.produced.append(letter)
        return letter

    def close(self) -> None:
        self.closed = True


class Spell:
    def __init__(self) -> None:
        self.streams: list[LetterStream] = []

    def run(self, text: str) -> Spelled:
        return Spelled(letters=list(text))

    def stream(self, text: str) -> LetterStream:
        self.streams.append(LetterStream(text))
        return self.streams[-1]


class Count:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, letters: list[str]) -> Counted:
        self.calls += 1
        return Counted(count=len(letters))


def test_a_step_streams_and_the_steps_after_it_run_on_its_output() -> None:
    spell, count = Spell(), Count()
    pipeline = Pipeline([Upper(), spell, count])
    run = pipeline.stream(spell, question="abc")
    assert isinstance(spell.streams[0], StepStream)
    assert next(run) == "A"
    assert spell.streams[0].produced == ["A"]  # one piece produced, one handed out
    assert count.calls == 0 and run.result is None
    assert list(run) == ["B", "C"]
    assert run.result is not None and count.calls == 1
    plain = pipeline.run(question="abc")
    assert run.result.outputs == plain.outputs
    trace = run.result.trace
    assert [s.step for s in trace.steps] == [s.step for s in plain.trace.steps]
    assert [s.outputs for s in trace.steps] == [s.outputs for s in plain.trace.steps]
    assert all(s.seconds > 0.0 for s in trace.steps)
    assert trace.seconds >= sum(s.seconds for s in trace.steps)
    assert list(run) == []  # exhausted stays exhausted


def test_a_stream_can_be_chosen_by_position_and_abandoned() -> None:
    spell, count = Spell(), Count()
    run = Pipeline([Upper(), spell, count]).stream(1, question="abc")
    assert next(run) == "A"
    run.close()
    assert spell.streams[0].closed
    assert list(run) == [] and run.result is None and count.calls == 0


def test_streaming_a_step_that_cannot_stream_is_refused() -> None:
    upper, spell = Upper(), Spell()
    pipeline = Pipeline([upper, spell, Count()])
    with pytest.raises(PipelineError, match="'Upper' cannot stream"):
        pipeline.stream(upper, question="abc")
    with pytest.raises(PipelineError, match="not a step of pipeline"):
        pipeline.stream(Spell(), question="abc")
    with pytest.raises(PipelineError, match="no step at position 5"):
        pipeline.stream(5, question="abc")
    with pytest.raises(PipelineError, match="missing input 'question'"):
        pipeline.stream(spell)


# -- the RAG pipeline ----------------------------------------------------------------------------


class PieceStream:
    """A GenerationStream over fixed pieces that records how many it has produced."""

    def __init__(self, pieces: list[str]) -> None:
        self._pieces = iter(pieces)
        self._text = "".join(pieces)
        self.produced = 0
        self.closed = False
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.closed:
            raise StopIteration
        try:
            piece = next(self._pieces)
        except StopIteration:
            self.result = GenerationResult(
                text=self._text,
                prompt_text="p",
                prompt_tokens=3,
                completion_tokens=2,
                finish_reason="stop",
            )
            raise
        self.produced += 1
        return piece

    def close(self) -> None:
        self.closed = True


class StreamingScript(ScriptedGenerator):
    def __init__(self, pieces: list[str]) -> None:
        super().__init__("".join(pieces))
        self.pieces = pieces
        self.streams: list[PieceStream] = []

    def stream(self, prompt: Any, options: Any = None, **overrides: Any) -> PieceStream:
        self.prompts.append(prompt)
        self.streams.append(PieceStream(self.pieces))
        return self.streams[-1]


@pytest.fixture
def scripted_rag(tiny_index: Path, tiny_embedder: Embedder) -> tuple[RAGPipeline, StreamingScript]:
    generator = StreamingScript(["Strasbourg", " is the capital", " [1]"])
    retriever = BM25Retriever(Index.open(tiny_index, tiny_embedder), k=2)
    return RAGPipeline(retriever, generator, decoding="free"), generator  # type: ignore[arg-type]


def test_pieces_reach_the_caller_as_they_are_generated(
    scripted_rag: tuple[RAGPipeline, StreamingScript],
) -> None:
    rag, generator = scripted_rag
    stream = rag.stream(QUESTION)
    pieces = iter(stream)
    assert next(pieces) == "Strasbourg"
    assert generator.streams[0].produced == 1  # not generated ahead of the caller
    assert stream.answer is None
    assert "".join(pieces) == " is the capital [1]"
    assert stream.answer is not None


def test_closing_a_stream_stops_the_generation(
    scripted_rag: tuple[RAGPipeline, StreamingScript],
) -> None:
    rag, generator = scripted_rag
    with rag.stream(QUESTION) as stream:
        next(iter(stream))
    assert generator.streams[0].closed
    assert stream.answer is None
    pieces = iter(rag.stream(QUESTION))  # dropping the iteration (as the server does) stops it too
    next(pieces)
    pieces.close()  # type: ignore[attr-defined]
    assert generator.streams[1].closed


def test_the_streamed_answer_and_trace_are_the_asked_ones(
    scripted_rag: tuple[RAGPipeline, StreamingScript],
) -> None:
    rag, _ = scripted_rag
    asked = rag.ask(QUESTION)
    stream = rag.stream(QUESTION)
    assert "".join(stream) == "Strasbourg is the capital [1]"
    streamed = stream.answer
    assert streamed is not None and streamed.trace is not None and asked.trace is not None
    assert streamed.model_dump(exclude={"trace"}) == asked.model_dump(exclude={"trace"})
    assert streamed.usage is not None and streamed.usage.completion_tokens == 2
    assert [c.n for c in streamed.citations] == [1]
    steps = [(s.step, s.inputs, s.outputs) for s in streamed.trace.steps]
    assert steps == [(s.step, s.inputs, s.outputs) for s in asked.trace.steps]
    assert [s.step for s in streamed.trace.steps] == [
        "BM25Retriever",
        "PromptBuilder",
        "GenerateStep",
        "CitationStep",
    ]
    assert all(s.seconds > 0.0 for s in streamed.trace.steps)
    assert (streamed.trace.prompt, streamed.trace.notes) == (asked.trace.prompt, asked.trace.notes)


def test_a_real_model_streams_through_every_step(
    tiny_index: Path, tiny_embedder: Embedder, tiny_generator: Generator
) -> None:
    rag = RAGPipeline(
        DenseRetriever(Index.open(tiny_index, tiny_embedder), k=2),
        tiny_generator,
        options={"max_new_tokens": 12},
    )
    asked = rag.ask(QUESTION)
    stream = rag.stream(QUESTION)
    text = "".join(stream)
    streamed = stream.answer
    assert streamed is not None and streamed.trace is not None and asked.trace is not None
    assert text.strip() == asked.trace.steps[2].outputs["text"]
    assert streamed.model_dump(exclude={"trace"}) == asked.model_dump(exclude={"trace"})
    assert [s.outputs for s in streamed.trace.steps] == [s.outputs for s in asked.trace.steps]
    assert all(s.seconds > 0.0 for s in streamed.trace.steps)
    assert streamed.trace.prompt == asked.trace.prompt


def test_the_stream_does_not_begin_with_the_space_after_answer(
    tiny_index: Path, tiny_embedder: Embedder
) -> None:
    """A completion prompt ends "Answer:", so models begin with a bare space (Gemma writes
    " 1992" as " ", "1992"); the streamed text is the answer's own text, as ``ask`` gives it,
    for every client of the stream (CLI, server SSE, library)."""
    generator = StreamingScript([" ", " 1992", " [1]"])
    retriever = BM25Retriever(Index.open(tiny_index, tiny_embedder), k=2)
    rag = RAGPipeline(retriever, generator, decoding="free")  # type: ignore[arg-type]
    stream = rag.stream(QUESTION)
    pieces = list(stream)
    assert pieces == ["1992", " [1]"]
    assert stream.answer is not None and stream.answer.answer == rag.ask(QUESTION).answer
