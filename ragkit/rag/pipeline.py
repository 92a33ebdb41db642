"""The ready-made RAG pipeline: retriever → prompt → generator → answer with citations."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from ragkit.errors import InvalidQueryError
from ragkit.generation import GenerationOptions, Generator, GeneratorBackend
from ragkit.generation.grounded import ABSTAIN_PHRASE
from ragkit.pipeline import Pipeline, PipelineResult, load_pipeline, save_pipeline
from ragkit.rag.citations import CitationStep
from ragkit.rag.generate_step import Decoding, DecodingError, GenerateStep
from ragkit.rag.profiles import answering_profile, chosen_adapter
from ragkit.rag.prompt_builder import PromptBuilder
from ragkit.rag.relevance import RelevanceGate
from ragkit.rag.schema import Answer, Usage
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
        abstain_below: float | None = None,
        require_probe: bool | None = None,
        max_prompt_tokens: int | None = None,
        min_relevance: float | None = None,
    ) -> None:
        """Unset answering choices (template, decoding, adapter, abstention bias and threshold,
        answer length, prompt cap) come from the generator's
        :class:`~ragkit.rag.profiles.AnsweringProfile`;
        with a strategy other than ``plain``, decoding defaults to free. ``abstain_below=0``
        turns the answerability probe's veto off (its estimate is still reported). ``require_probe``
        (None: whether ``abstain_below`` was given, above 0) makes a generator without a probe
        an error instead of a veto that never runs. ``min_relevance`` (grounded decoding):
        decline when no retrieved passage reaches this cosine to the question; -1 turns the
        profile's gate off."""
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
            if decoding == "free":  # an explicit abstention option would silently do nothing
                given = [
                    name
                    for name, value in (
                        ("abstain_bias (--abstain-bias)", abstain_bias),
                        ("abstain_below (--abstain-below)", abstain_below),
                    )
                    if value  # None or 0: nothing asked for
                ]
                if min_relevance is not None and min_relevance > -1.0:
                    given.append("min_relevance (--min-relevance)")
                if given:
                    raise DecodingError(
                        f"{' and '.join(given)} {'work' if len(given) > 1 else 'works'} with "
                        "grounded decoding only "
                        "(--decoding grounded); free decoding has no abstention path"
                    )
            if require_probe is None:  # a threshold asked for, not the profile's default
                require_probe = bool(abstain_below)
            abstain_bias = profile.abstain_bias if abstain_bias is None else abstain_bias
            abstain_below = profile.abstain_below if abstain_below is None else abstain_below
            opts = (
                options
                if options is not None
                else {**DEFAULT_OPTIONS, "max_new_tokens": profile.max_new_tokens}
            )
            if isinstance(opts, GenerationOptions):
                opts = opts.model_dump(exclude_unset=True)
            cap = profile.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens
            self.prompt_builder = PromptBuilder(template, budget=gen, max_prompt_tokens=cap)
            if self.prompt_builder.completion and "apply_chat_template" not in opts:
                # a completion-style template is the exact text the model continues
                opts = {**opts, "apply_chat_template": False}
            if decoding != "free" and strategy != "plain":
                raise DecodingError(
                    f"decoding {decoding!r} works with the plain strategy only, not {strategy!r}"
                )
            index = getattr(retriever, "index", None)
            embedder = getattr(index, "embedder", None)
            embed = embedder.encode if embedder is not None else None
            gate_at = min_relevance
            if gate_at is None and getattr(embedder, "name", None) == profile.relevance_embedder:
                gate_at = profile.min_relevance  # measured on this embedder's cosines only
            gate = (
                [RelevanceGate(gate_at, index)]
                if decoding == "grounded" and gate_at is not None and gate_at > -1.0
                else []
            )
            steps = [
                retriever,
                *gate,
                self.prompt_builder,
                *answer_steps(
                    strategy,
                    gen,
                    opts,
                    embed,
                    examples,
                    decoding,
                    abstain_bias,
                    abstain_below,
                    require_probe,
                ),
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

    @property
    def min_relevance(self) -> float:
        """The relevance gate's threshold (-1: no gate), as a rebuild passes it on."""
        gate = next((s for s in self.pipeline.steps if isinstance(s, RelevanceGate)), None)
        return -1.0 if gate is None else gate.min_similarity

    def preload(self) -> threading.Thread | None:
        """Load the generator (and, for grounded decoding, its token table) in a background
        thread, so that it overlaps opening the index, loading the embedder and retrieving.

        Why: a cold ``ragkit ask`` otherwise does these one after another, and the loads are
        mostly native code (mmap, ONNX / llama.cpp set-up) that two cores can run side by side.
        Only for a backend whose class says ``loads_in_background = True``: loading the
        transformers generator imports torch and transformers, and importing them in two threads
        at once (the embedder may import them too) can trip Python's import-deadlock detection.
        Errors are left for the foreground: the first real call raises the same one, in one line.
        """
        if not getattr(type(self._generator), "loads_in_background", False):
            return None

        def load() -> None:
            try:
                self._generator.warm_up()
                step = self.generate_step
                if step is not None and step.decoding == "grounded":
                    getattr(self._generator, "token_table", lambda: None)()
            except Exception:  # re-raised, in one line, by the foreground call
                pass

        thread = threading.Thread(target=load, name="ragkit-preload", daemon=True)
        thread.start()
        return thread

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
            answerability=out.get("answerability"),
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
        """Answer through the pipeline with the generation streamed, piece by piece.

        Retrieval and the prompt run before this returns; the generation step streams
        (:meth:`GenerateStep.stream`) and, once it ends, the citation step runs on its output
        as in :meth:`ask`, so the answer and its trace (every step timed) are :meth:`ask`'s.
        With grounded decoding, pieces that could still be the abstention phrase are held
        back; an abstention ends with the answer's own text instead.

        Strategies other than ``plain`` make several model calls per answer; they are not
        streamed: the finished answer arrives as one piece.
        """
        step = self.generate_step
        if step is None or self.strategy != "plain":
            answer = self.ask(question, k, filters)
            finished = AnswerStream(iter([answer.answer]))
            finished.answer = answer
            return finished
        run = self.pipeline.stream(step, **self._inputs(question, k, filters))
        grounded = step.decoding == "grounded"

        def pieces() -> Iterator[str]:
            collected: list[str] = []
            held: list[str] = []  # grounded: what may still turn out to be the abstention phrase
            shown = False
            try:
                for piece in run:
                    collected.append(piece)
                    if grounded and ABSTAIN_PHRASE.startswith("".join(collected).lstrip().lower()):
                        held.append(piece)
                        continue
                    if held:
                        piece = "".join(held) + piece
                        held.clear()
                    if not shown:  # the answer's leading space (after "Answer:") is not its text
                        piece = piece.lstrip()
                        if not piece:
                            continue
                    shown = True
                    yield piece
            finally:  # also when the caller drops the iteration: stop generating
                run.close()
            if run.result is None:  # closed early: no answer
                return
            answer = holder.answer = self._answer(question, run.result)
            rest = answer.answer if answer.abstained and not shown else "".join(held)
            if not shown:
                rest = rest.lstrip()
            if rest:
                yield rest

        holder = AnswerStream(pieces(), on_close=run.close)
        return holder

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
