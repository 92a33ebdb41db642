"""Query transformations: the generator rewrites the question before (or instead of) searching.

Both classes are retrievers (``search``) and pipeline steps (``run``), so they drop into
``RAGPipeline`` or a ``Pipeline`` wherever a retriever goes:

* :class:`MultiQueryRetriever` — the generator writes ``n`` differently worded queries; the base
  retriever answers each (and the original question), and the rankings are fused by reciprocal
  rank fusion. Helps when the user's wording differs from the corpus's.
* :class:`HyDERetriever` — "hypothetical document embeddings": the generator writes a short
  passage that would answer the question, and dense search uses the embedding of that passage
  (averaged with the question's, so a hallucinated passage cannot pull the search entirely
  off the question). Helps when questions are short and passages long.

Conversational rewriting (a follow-up into a standalone question) lives in
:mod:`ragkit.rag.chat`. Every transformation costs one generation per question: with a 135M
CPU model that is seconds, which is why none of them is on by default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import RagkitError
from ragkit.index.contract import VectorStore
from ragkit.pipeline.component import LoadContext, component, component_spec
from ragkit.retrieval import RRF_K, Retrieved, _open, index_from_config, reciprocal_rank_fusion
from ragkit.schema import Hit

_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")


def parse_queries(text: str, question: str, n: int) -> list[str]:
    """Up to ``n`` distinct queries, one per line, without list markers or the question itself."""
    seen = {question.strip().casefold()}
    queries: list[str] = []
    for line in text.splitlines():
        query = _LIST_MARKER.sub("", line).strip().strip('"').strip()
        key = query.casefold()
        if len(query) < 3 or key in seen:
            continue
        seen.add(key)
        queries.append(query)
        if len(queries) == n:
            break
    return queries


def _generate_text(generator: Any, prompt: Any, max_new_tokens: int) -> str:
    result = generator.generate([prompt], max_new_tokens=max_new_tokens, do_sample=False)[0]
    return str(result.text)


@component
class MultiQueryRetriever:
    """Search with the question and ``n`` generated rewordings of it; fuse the rankings by RRF."""

    component_name = "multi_query_retriever"

    def __init__(
        self,
        base: Any,
        generator: Any,
        n: int = 3,
        k: int | None = None,
        candidates: int | None = None,
        max_new_tokens: int = 96,
        rrf_k: int = RRF_K,
    ) -> None:
        if n < 1:
            raise RagkitError(f"n must be at least 1, got {n}")
        from prompts import library_template

        self.base = base
        self.generator = generator
        self.n = n
        self.k = k or int(getattr(base, "k", 5))
        self.candidates = candidates
        self.max_new_tokens = max_new_tokens
        self.rrf_k = rrf_k
        self.index = getattr(base, "index", None)
        self.template = library_template("multi_query")
        self.last_queries: list[str] = []

    def queries(self, question: str) -> list[str]:
        """The question followed by the generated rewordings (fewer if the model wrote fewer)."""
        prompt = self.template.render(question=question, n=self.n)
        text = _generate_text(self.generator, prompt, self.max_new_tokens)
        return [question, *parse_queries(text, question, self.n)]

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        wanted = k or self.k
        per_query = max(self.candidates or 0, wanted)
        self.last_queries = self.queries(query)
        rankings = [self.base.search(q, per_query, filters) for q in self.last_queries]
        fused = reciprocal_rank_fusion(rankings, wanted, self.rrf_k)
        return [h.model_copy(update={"retriever": "multi_query"}) for h in fused]

    def run(
        self, question: str, k: int | None = None, filters: dict[str, Any] | None = None
    ) -> Retrieved:
        return Retrieved(hits=self.search(question, k, filters))

    def to_config(self) -> dict[str, Any]:
        """Pipeline config: the base retriever nested; the generator is re-attached."""
        return {
            "base": component_spec(self.base),
            "n": self.n,
            "k": self.k,
            "candidates": self.candidates,
            "max_new_tokens": self.max_new_tokens,
            "rrf_k": self.rrf_k,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> MultiQueryRetriever:
        params = dict(config)
        ctx = context if isinstance(context, LoadContext) else LoadContext(context)
        base = ctx.build(params.pop("base", None), f"{cls.component_name}.base")
        return cls(base, ctx.require("generator", cls.component_name), **params)


@component
class HyDERetriever:
    """Dense search by the embedding of a generated answer passage (mixed with the question's)."""

    component_name = "hyde_retriever"

    def __init__(
        self,
        index: VectorStore | str | Path,
        generator: Any,
        k: int = 5,
        question_weight: float = 0.5,
        max_new_tokens: int = 96,
    ) -> None:
        if not 0.0 <= question_weight <= 1.0:
            raise RagkitError(f"question_weight must be in [0, 1], got {question_weight}")
        from prompts import library_template

        self.index = _open(index)
        self.generator = generator
        self.k = k
        self.question_weight = question_weight
        self.max_new_tokens = max_new_tokens
        self.template = library_template("hypothetical_answer")
        self.last_passage = ""

    def query_vector(self, question: str) -> np.ndarray:
        """The unit vector searched for: weighted mean of passage and question embeddings."""
        prompt = self.template.render(question=question)
        self.last_passage = _generate_text(self.generator, prompt, self.max_new_tokens).strip()
        embedder = self.index.embedder
        question_vector = embedder.encode_query(question)
        if not self.last_passage:
            return np.asarray(question_vector, dtype=np.float32)
        passage_vector = embedder.encode([self.last_passage])
        mixed = self.question_weight * question_vector + (1 - self.question_weight) * passage_vector
        norm = float(np.linalg.norm(mixed))
        return np.asarray(mixed / norm if norm > 0 else question_vector, dtype=np.float32)

    def search(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        hits = self.index.search_vector(self.query_vector(query), k or self.k, filters)
        return [h.model_copy(update={"retriever": "hyde"}) for h in hits]

    def run(
        self, question: str, k: int | None = None, filters: dict[str, Any] | None = None
    ) -> Retrieved:
        return Retrieved(hits=self.search(question, k, filters))

    def to_config(self) -> dict[str, Any]:
        """Pipeline config: the index by location; the generator is re-attached."""
        return {
            "index": str(self.index.directory),
            "k": self.k,
            "question_weight": self.question_weight,
            "max_new_tokens": self.max_new_tokens,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> HyDERetriever:
        params = dict(config)
        ctx = context if isinstance(context, LoadContext) else LoadContext(context)
        index = index_from_config(params.pop("index", None), ctx)
        return cls(index, ctx.require("generator", cls.component_name), **params)
