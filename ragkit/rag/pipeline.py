"""The ready-made RAG pipeline: retriever → prompt → generator → answer with citations."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from ragkit.errors import InvalidQueryError
from ragkit.generation import GenerationOptions, Generator, GeneratorBackend
from ragkit.generation.grounded import ABSTAIN_PHRASE
from ragkit.pipeline import Pipeline, PipelineResult, Trace, load_pipeline, save_pipeline
from ragkit.pipeline.trace import StepTrace, jsonable
from ragkit.rag.citations import CitationStep
from ragkit.rag.generate_step import Decoding, DecodingError, Generated, GenerateStep, ground
from ragkit.rag.profiles import answering_profile, chosen_adapter
from ragkit.rag.prompt_builder import PromptBuilder
from ragkit.rag.schema import Answer, Passage, Usage
from ragkit.rag.strategies import STRATEGIES, answer_steps
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
        template: Any = None,
        options: GenerationOptions | Mapping[str, Any] | None = None,
        pipeline: Pipeline | None = None,
        strategy: str = "plain",
        examples: list[Any] | None = None,
        decoding: Decoding | None = None,
        abstain_bias: float | None = None,
        adapter: str | None = None,
    ) -> None:
        """Unset answering choices (template, decoding, adapter, abstention bias, answer length)
        come from the generator's :class:`~ragkit.rag.profiles.AnsweringProfile`; with a
        strategy other than ``plain``, decoding defaults to free."""
        if pipeline is None:
            profile = answering_profile(generator)
            if isinstance(generator, GeneratorBackend):
                gen = generator
            else:
                gen = Generator(
                    generator,
                    adapter=chosen_adapter(profile, adapter),
                    quantize=profile.quantize,
                )
            template = template if template is not None else profile.template
            if decoding is None:
                decoding = profile.decoding if strategy == "plain" else "free"
            abstain_bias = profile.abstain_bias if abstain_bias is None else abstain_bias
            opts = (
                options
                if options is not None
                else {**DEFAULT_OPTIONS, "max_new_tokens": profile.max_new_tokens}
            )
            if isinstance(opts, GenerationOptions):
                opts = opts.model_dump(exclude_unset=True)
            self.prompt_builder = PromptBuilder(template, budget=gen)
            if self.prompt_builder.completion and "apply_chat_template" not in opts:
                # a completion-style template is the exact text the model continues
                opts = {**opts, "apply_chat_template": False}
            if decoding != "free" and strategy != "plain":
                raise DecodingError(
                    f"decoding {decoding!r} works with the plain strategy only, not {strategy!r}"
                )
            embedder = getattr(getattr(retriever, "index", None), "embedder", None)
            embed = embedder.encode if embedder is not None else None
            steps = [
                retriever,
                self.prompt_builder,
                *answer_steps(strategy, gen, opts, embed, examples, decoding, abstain_bias),
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
            abstained=bool(out.get("abstained", False)),
            usage=_usage(out),
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
        step = self.generate_step
        grounded = step.decoding == "grounded"
        if grounded and not any(p.text.strip() for p in passages):
            answer = self._answer_from(
                question, prepared.trace, passages, step.run(prompt, passages)
            )
            finished = AnswerStream(iter([answer.answer]))
            finished.answer = answer
            return finished
        started = time.perf_counter()
        if grounded:
            text_stream = self.generator.stream(
                prompt, step.grounded_options(), constraint=step.constraint(passages)
            )
        else:
            text_stream = self.generator.stream(prompt, step.options)

        def pieces() -> Iterator[str]:
            collected: list[str] = []
            held: list[str] = []  # grounded: what may still turn out to be the abstention phrase
            for piece in text_stream:
                collected.append(piece)
                if grounded and ABSTAIN_PHRASE.startswith("".join(collected).lstrip().lower()):
                    held.append(piece)
                    continue
                if held:
                    yield "".join(held)
                    held.clear()
                yield piece
            result = getattr(text_stream, "result", None)
            text = "".join(collected).strip()
            generated = Generated(
                text=text,
                prompt_text=result.prompt_text if result is not None else "",
                finish_reason=result.finish_reason if result is not None else "stop",
                prompt_tokens=result.prompt_tokens if result is not None else 0,
                completion_tokens=result.completion_tokens if result is not None else 0,
                grounding=ground(text, passages) if grounded else None,
            )
            trace: Trace = prepared.trace
            trace.steps.append(
                StepTrace(
                    step=f"{type(step).__name__}(stream)",
                    inputs={"prompt": jsonable(prompt)},
                    outputs={"text": text},
                    seconds=time.perf_counter() - started,
                )
            )
            holder.answer = self._answer_from(question, trace, passages, generated)
            if held:
                yield holder.answer.answer if holder.answer.abstained else "".join(held)

        holder = AnswerStream(pieces(), on_close=text_stream.close)
        return holder

    @staticmethod
    def _answer_from(
        question: str, trace: Trace, passages: list[Passage], generated: Generated
    ) -> Answer:
        """The answer of a streamed (or model-free) generation, cited like the pipeline's."""
        cited = CitationStep().run(generated.text, passages, generated.grounding)
        if generated.prompt_text:
            trace.prompt = generated.prompt_text
        trace.notes.extend(cited.notes)
        return Answer(
            question=question,
            answer=cited.answer,
            citations=cited.citations,
            invalid_markers=cited.invalid_markers,
            passages=passages,
            abstained=cited.abstained,
            usage=Usage(
                prompt_tokens=generated.prompt_tokens,
                completion_tokens=generated.completion_tokens,
                finish_reason=generated.finish_reason,
            ),
            trace=trace,
        )

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the pipeline as YAML, with the generator as the file's shared resource: every
        step that uses it (generation, strategies, the prompt budget) is rebuilt around it."""
        save_pipeline(self.pipeline, path, resources={"generator": self.generator})

    @classmethod
    def load(cls, path: str | Path, context: Mapping[str, Any] | None = None) -> RAGPipeline:
        """Load a saved RAG pipeline; ``context`` re-attaches live objects instead of building
        them from the file (e.g. ``{"generator": gen}`` for a model already in memory)."""
        pipeline = load_pipeline(path, context)
        return cls(retriever=None, pipeline=pipeline, strategy=_strategy_of(pipeline))


def _strategy_of(pipeline: Pipeline) -> str:
    """The strategy a saved RAG pipeline was built with: its name says (``rag-<strategy>``);
    a renamed one is ``plain`` when the generator step follows the prompt builder, else
    ``custom`` (answered, and streamed, as one piece like any multi-call strategy)."""
    strategy = pipeline.name.removeprefix("rag-")
    if pipeline.name.startswith("rag-") and strategy in STRATEGIES:
        return strategy
    for step, after in pairwise(pipeline.steps):
        if isinstance(step, PromptBuilder):
            return "plain" if isinstance(after, GenerateStep) else "custom"
    return "custom"


def _usage(outputs: Mapping[str, Any]) -> Usage | None:
    """Token usage from the generation step's outputs, when the pipeline has one."""
    if "prompt_tokens" not in outputs or "completion_tokens" not in outputs:
        return None
    return Usage(
        prompt_tokens=int(outputs["prompt_tokens"]),
        completion_tokens=int(outputs["completion_tokens"]),
        finish_reason=str(outputs.get("finish_reason", "stop")),
    )
