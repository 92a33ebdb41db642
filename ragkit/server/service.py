"""The bridge between HTTP requests and :class:`~ragkit.rag.RAGPipeline`.

Requests may choose decoding options (``max_tokens``, ``temperature``...). A pipeline decodes
with the options it was built with, so for each distinct set of options the service builds a
sibling pipeline that shares the retriever, the loaded generator and the template — building one
costs no model load — and keeps the most recent few. Everything else is the library's own work.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ragkit.rag import Answer, AnswerStream, RAGPipeline
from ragkit.schema import Hit

if TYPE_CHECKING:
    from ragkit.index.contract import VectorStore

MAX_VARIANTS = 16


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

    def __init__(self, rag: RAGPipeline) -> None:
        self.rag = rag
        self._variants: OrderedDict[tuple[tuple[str, Any], ...], RAGPipeline] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def supports_options(self) -> bool:
        """Only the plain strategy has a single generation step whose options can be swapped."""
        return self.rag.strategy == "plain" and self.rag.generate_step is not None

    def _base_options(self) -> dict[str, Any]:
        step = self.rag.generate_step
        if step is None or step.options is None:
            return {}
        return step.options.model_dump(exclude_unset=True)

    def pipeline_for(self, decoding: Decoding) -> RAGPipeline:
        overrides = decoding.overrides()
        if not overrides or not self.supports_options:
            return self.rag
        options = {**self._base_options(), **overrides}
        if not options.get("do_sample"):
            for name in ("temperature", "top_k", "top_p", "seed"):
                options.pop(name, None)
        key = tuple(sorted(options.items()))
        with self._lock:
            found = self._variants.get(key)
            if found is not None:
                self._variants.move_to_end(key)
                return found
            step = self.rag.generate_step
            assert step is not None  # supports_options
            variant = RAGPipeline(
                self.rag.retriever,
                self.rag.generator,
                template=self.rag.prompt_builder.template,
                options=options,
                decoding=step.decoding,
                abstain_bias=step.abstain_bias,
            )
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
