"""The ready-made RAG pipeline: retriever → prompt → generator → answer with citations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ragkit.errors import InvalidQueryError
from ragkit.generation import GenerationOptions, Generator, GeneratorBackend
from ragkit.pipeline import Pipeline, PipelineResult, Trace, load_pipeline, save_pipeline
from ragkit.pipeline.trace import StepTrace, jsonable
from ragkit.rag.citations import CitationStep, map_citations
from ragkit.rag.generate_step import GenerateStep
from ragkit.rag.prompt_builder import DEFAULT_TEMPLATE, PromptBuilder
from ragkit.rag.schema import Answer
from ragkit.rag.strategies import answer_steps
from ragkit.retrieval import RetrieverKind, make_retriever

DEFAULT_OPTIONS = {"max_new_tokens": 128}


class AnswerStream:
    """Iterate to receive the answer's text pieces as they are generated; then read ``answer``.

    Stopping early is fine: ``close()`` (or leaving a ``with`` block) stops the generation.
    """

    def __init__(self, pieces: Iterator[str], on_close: Any = None) -> None:
        self._pieces = pieces
        self._on_close = on_close
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RAGPipeline:
    """Answer questions from an index with a generator, citing the passages used."""

    def __init__(
        self,
        retriever: Any,
        generator: GeneratorBackend | str | None = None,
        template: Any = DEFAULT_TEMPLATE,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        pipeline: Pipeline | None = None,
        strategy: str = "plain",
        examples: list[Any] | None = None,
    ) -> None:
        if pipeline is None:
            gen = generator if isinstance(generator, GeneratorBackend) else Generator(generator)
            opts = options if options is not None else DEFAULT_OPTIONS
            if isinstance(opts, GenerationOptions):
                opts = opts.model_dump(exclude_unset=True)
            self.prompt_builder = PromptBuilder(template, budget=gen)
            embedder = getattr(getattr(retriever, "index", None), "embedder", None)
            embed = embedder.encode if embedder is not None else None
            steps = [
                retriever,
                self.prompt_builder,
                *answer_steps(strategy, gen, opts, embed, examples),
                CitationStep(),
            ]
            pipeline = Pipeline(
                steps,
                inputs={"question": str},
                name="rag" if strategy == "plain" else f"rag-{strategy}",
            )
            self._generator = gen
        else:
            self.prompt_builder = next(s for s in pipeline.steps if isinstance(s, PromptBuilder))
            self._generator = next(
                s.generator
                for s in pipeline.steps
                if isinstance(getattr(s, "generator", None), GeneratorBackend)
            )
        self.strategy = strategy
        self.generate_step: GenerateStep | None = next(
            (s for s in pipeline.steps if isinstance(s, GenerateStep)), None
        )
        self.pipeline = pipeline
        self.retriever = pipeline.steps[0]
        # retrieval + prompt building, run on their own when the generation is streamed
        head = pipeline.steps[: pipeline.steps.index(self.prompt_builder) + 1]
        self._head = Pipeline(head, inputs={"question": str}, name="rag-head")

    @classmethod
    def from_index(
        cls,
        index: str | Path,
        generator: GeneratorBackend | str | None = None,
        k: int = 4,
        retriever: RetrieverKind = "hybrid",
        **kwargs: Any,
    ) -> RAGPipeline:
        return cls(make_retriever(index, retriever, k=k), generator, **kwargs)

    @property
    def generator(self) -> GeneratorBackend:
        return self._generator

    # -- answering --------------------------------------------------------------------------
    @staticmethod
    def _inputs(question: str, k: int | None, filters: Mapping[str, Any] | None) -> dict[str, Any]:
        if not isinstance(question, str) or not question.strip():
            raise InvalidQueryError("question is empty")
        values: dict[str, Any] = {"question": question}
        if k is not None:
            values["k"] = k
        if filters:
            values["filters"] = dict(filters)
        return values

    @staticmethod
    def _answer(question: str, result: PipelineResult) -> Answer:
        out = result.outputs
        return Answer(
            question=question,
            answer=out["answer"],
            citations=out["citations"],
            invalid_markers=out["invalid_markers"],
            passages=out["passages"],
            trace=result.trace,
        )

    def ask(
        self, question: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> Answer:
        return self._answer(question, self.pipeline.run(**self._inputs(question, k, filters)))

    def ask_batch(self, questions: Sequence[str], k: int | None = None) -> list[Answer]:
        """Answer many questions; generation runs batched (left padding, KV cache)."""
        results = self.pipeline.run_batch([self._inputs(q, k, None) for q in questions])
        return [self._answer(q, r) for q, r in zip(questions, results, strict=True)]

    run = ask
    run_batch = ask_batch

    def stream(
        self, question: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> AnswerStream:
        """Retrieve and build the prompt, then stream the generated answer piece by piece.

        Strategies other than ``plain`` make several model calls per answer; they are not
        streamed: the finished answer arrives as one piece.
        """
        if self.generate_step is None or self.strategy != "plain":
            answer = self.ask(question, k, filters)
            finished = AnswerStream(iter([answer.answer]))
            finished.answer = answer
            return finished
        prepared = self._head.run(**self._inputs(question, k, filters))
        prompt = prepared.outputs["prompt"]
        passages = prepared.outputs["passages"]
        text_stream = self.generator.stream(prompt, self.generate_step.options)

        def pieces() -> Iterator[str]:
            collected: list[str] = []
            for piece in text_stream:
                collected.append(piece)
                yield piece
            result = getattr(text_stream, "result", None)
            text = "".join(collected).strip()
            cited = map_citations(text, passages)
            trace: Trace = prepared.trace
            trace.prompt = result.prompt_text if result is not None else None
            trace.steps.append(
                StepTrace(
                    step="GenerateStep(stream)",
                    inputs={"prompt": jsonable(prompt)},
                    outputs={"text": text},
                    seconds=0.0,
                )
            )
            trace.notes.extend(cited.notes)
            holder.answer = Answer(
                question=question,
                answer=cited.answer,
                citations=cited.citations,
                invalid_markers=cited.invalid_markers,
                passages=passages,
                trace=trace,
            )

        holder = AnswerStream(pieces(), on_close=text_stream.close)
        return holder

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        save_pipeline(self.pipeline, path)

    @classmethod
    def load(cls, path: str | Path) -> RAGPipeline:
        return cls(retriever=None, pipeline=load_pipeline(path))
