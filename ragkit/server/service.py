"""The bridge between HTTP requests and :class:`~ragkit.rag.RAGPipeline`.

Requests may choose decoding options (``max_tokens``, ``temperature``...). A pipeline decodes
with the options it was built with, so for each distinct set of options the service builds a
sibling pipeline that shares the retriever, the loaded generator and the template — building one
costs no model load — and keeps the most recent few. Everything else is the library's own work.

:meth:`RAGService.reload` swaps in a pipeline with a freshly loaded generator (e.g. after the
feedback loop promoted a new adapter into the folder the server was started with). Every request
takes the pipeline it runs on once, at its start, so requests in flight finish on the old
generator; the old one is freed when the last of them ends.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ragkit.errors import RagkitError
from ragkit.rag import Answer, AnswerStream, RAGPipeline
from ragkit.schema import Hit

if TYPE_CHECKING:
    from ragkit.index.contract import VectorStore

MAX_VARIANTS = 16

PipelineBuilder = Callable[[RAGPipeline], RAGPipeline]
"""``build(current) -> replacement``: what :meth:`RAGService.reload` calls to make the new pipeline."""


class ReloadError(RagkitError):
    """The pipeline cannot be rebuilt (a strategy or generator the reload does not know)."""


def reloaded_pipeline(rag: RAGPipeline) -> RAGPipeline:
    """A copy of ``rag`` with a new generator built from the same configuration.

    The generator's configuration names its model and adapter (a packaged name or a folder), so
    loading it again picks up whatever the adapter folder holds now. Retriever, template,
    decoding options, decoding mode and abstention bias are the current pipeline's.
    """
    from ragkit.generation.backends import generator_from_config

    step = rag.generate_step
    if rag.strategy != "plain" or step is None:
        raise ReloadError(
            f"reload rebuilds plain-strategy pipelines only, not strategy {rag.strategy!r}"
        )
    config = getattr(rag.generator, "config", None)
    if config is None or not hasattr(config, "model_dump"):
        raise ReloadError(
            f"the generator {type(rag.generator).__name__} has no configuration to reload from"
        )
    generator = generator_from_config(config.model_dump())
    options = step.options.model_dump(exclude_unset=True) if step.options else None
    return rebuilt_pipeline(rag, generator, options)


def rebuilt_pipeline(
    rag: RAGPipeline, generator: Any, options: Mapping[str, Any] | None
) -> RAGPipeline:
    """``rag``'s answering choices (retriever, template, decoding, abstention, relevance gate,
    prompt cap) around ``generator`` and ``options``.

    One place for a reload and a sampling variant, so that a choice added to the pipeline is
    carried by both or by neither. ``rag`` is a plain-strategy pipeline.
    """
    step = rag.generate_step
    assert step is not None  # plain strategy: callers check
    builder = rag.prompt_builder
    return RAGPipeline(
        rag.retriever,
        generator,
        template=builder.template_name or builder.template,
        options=options,
        decoding=step.decoding,
        abstain_bias=step.abstain_bias,
        abstain_below=step.abstain_below,
        require_probe=step.require_probe,
        min_relevance=rag.min_relevance,
        max_prompt_tokens=builder.max_prompt_tokens,
    )


class Decoding(BaseModel):
    """The per-request decoding overrides; hashable so it can key a batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)

    def overrides(self) -> dict[str, Any]:
        """Generation options to merge over the pipeline's; temperature 0 means greedy."""
        out: dict[str, Any] = {}
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        sampling = bool(self.temperature) or self.top_p is not None
        if sampling:
            out["do_sample"] = True
            if self.temperature:
                out["temperature"] = self.temperature
            if self.top_p is not None:
                out["top_p"] = self.top_p
            if self.seed is not None:
                out["seed"] = self.seed
        return out


class RAGService:
    """Thread-safe access to one pipeline and its option variants."""

    def __init__(self, rag: RAGPipeline, build: PipelineBuilder | None = None) -> None:
        self.rag = rag
        self.reloads = 0
        self._build = build or reloaded_pipeline
        self._variants: OrderedDict[tuple[tuple[str, Any], ...], RAGPipeline] = OrderedDict()
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()

    @staticmethod
    def _supports_options(rag: RAGPipeline) -> bool:
        return rag.strategy == "plain" and rag.generate_step is not None

    @property
    def supports_options(self) -> bool:
        """Only the plain strategy has a single generation step whose options can be swapped."""
        return self._supports_options(self.rag)

    @staticmethod
    def _base_options(rag: RAGPipeline) -> dict[str, Any]:
        step = rag.generate_step
        if step is None or step.options is None:
            return {}
        return step.options.model_dump(exclude_unset=True)

    def pipeline_for(self, decoding: Decoding) -> RAGPipeline:
        """The pipeline a request with ``decoding`` runs on (taken once: see :meth:`reload`)."""
        with self._lock:
            rag = self.rag
        overrides = decoding.overrides()
        if not overrides or not self._supports_options(rag):
            return rag
        options = {**self._base_options(rag), **overrides}
        if not options.get("do_sample"):
            for name in ("temperature", "top_k", "top_p", "seed"):
                options.pop(name, None)
        key = tuple(sorted(options.items()))
        with self._lock:
            current = self.rag is rag  # else reloaded meanwhile: build, but do not cache
            found = self._variants.get(key) if current else None
            if found is not None:
                self._variants.move_to_end(key)
                return found
            variant = rebuilt_pipeline(rag, rag.generator, options)  # supports_options: plain
            if current:
                self._variants[key] = variant
                while len(self._variants) > MAX_VARIANTS:
                    self._variants.popitem(last=False)
            return variant

    def answer_batch(self, decoding: Decoding, items: list[tuple[str, int | None]]) -> list[Answer]:
        """Answer questions that share decoding options; questions with one ``k`` share a call."""
        pipeline = self.pipeline_for(decoding)
        answers: list[Answer | None] = [None] * len(items)
        by_k: dict[int | None, list[int]] = {}
        for i, (_, k) in enumerate(items):
            by_k.setdefault(k, []).append(i)
        for k, positions in by_k.items():
            got = pipeline.ask_batch([items[i][0] for i in positions], k=k)
            for i, answer in zip(positions, got, strict=True):
                answers[i] = answer
        return [a for a in answers if a is not None]

    def stream(self, question: str, k: int | None, decoding: Decoding) -> AnswerStream:
        return self.pipeline_for(decoding).stream(question, k=k)

    def reload(self) -> RAGPipeline:
        """Build a replacement pipeline (new generator, loaded now), then swap it in.

        The load happens before the swap, outside the request path: requests keep being
        answered by the current pipeline meanwhile, and one that started before the swap
        finishes on it. Reloads run one at a time; a failed build leaves the current pipeline
        in place. Both models are in memory while the new one loads.
        """
        with self._reload_lock:
            fresh = self._build(self.rag)
            fresh.generator.warm_up()
            with self._lock:
                self.rag = fresh
                self._variants.clear()
                self.reloads += 1
            return fresh

    def search(self, query: str, k: int) -> list[Hit]:
        hits: list[Hit] = self.rag.retriever.search(query, k)
        return hits

    def index_stats(self) -> dict[str, Any]:
        """The store's manifest with its counts read now (a PostgreSQL store's manifest keeps
        the counts it was created with; another process may have committed to either kind)."""
        index: VectorStore | None = getattr(self.rag.retriever, "index", None)
        if index is None or getattr(index, "manifest", None) is None:
            return {}
        data: dict[str, Any] = index.manifest.model_dump(mode="json")
        data["counts"] = index.counts().model_dump(mode="json")
        data["retriever"] = type(self.rag.retriever).__name__
        data["k"] = getattr(self.rag.retriever, "k", None)
        return data

    def model_name(self) -> str:
        return self.rag.generator.config.model or "default"

    def adapter_name(self) -> str:
        """The generator's adapter (packaged name or folder as configured), "" for none."""
        return str(getattr(self.rag.generator.config, "adapter", None) or "")

    def prompt_format(self) -> str:
        """The prompt template's name: recorded with each answer, checked by the feedback loop."""
        builder = self.rag.prompt_builder
        return builder.template_name or str(getattr(builder.template, "name", "") or "custom")
