"""Running an evaluation: retrieval metrics for every question, answer metrics with ``generate``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragkit.evaluation.datasets import EvalDataset, EvalQuestion
from ragkit.evaluation.metrics import (
    abstained,
    exact_match,
    groundedness,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    token_f1,
)
from ragkit.index import Index
from ragkit.schema import Hit

RETRIEVAL_CUTOFFS = (1, 5, 10)
_MARKERS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase ``"retrieval"``, then ``"answering"`` with
``--generate``; each counts its own questions, so 418 questions never read as 836."""


class QuestionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    gold_ids: list[str]
    retrieved_ids: list[str]
    first_relevant_rank: int | None
    answers: list[str] = Field(default_factory=list)
    prediction: str | None = None
    exact_match: float | None = None
    f1: float | None = None
    is_impossible: bool = False


class EvalReport(BaseModel):
    """The stable JSON schema printed by ``ragkit eval --json`` (see the README)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    dataset: str
    retriever: str
    k: int
    questions: int
    answerable: int
    unanswerable: int
    retrieval: dict[str, float]
    generation: dict[str, float | None] | None = None
    seconds: float
    failures: list[QuestionResult] = Field(
        default_factory=list,
        description="Questions whose gold was not retrieved, or with F1 < 0.5.",
    )


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def gold_chunks_for(index: Index, question: EvalQuestion) -> list[str]:
    """Chunks of an existing index that contain the question's answer span with its context.

    The answer text alone is ambiguous ("1990" occurs everywhere), so a window of the gold
    paragraph around the span is matched first, narrowing to the span itself only if chunk
    boundaries cut every wider window.
    """
    if not question.context or not question.answers:
        return []
    matches: list[str] = []
    for answer, start in zip(
        question.answers, question.answer_starts or [-1] * len(question.answers), strict=False
    ):
        if start < 0:
            start = question.context.find(answer)
        if start < 0:
            continue
        end = start + len(answer)
        for margin in (40, 20, 0):
            window = question.context[max(0, start - margin) : end + margin]
            rows = index.store.conn.execute(
                "SELECT id FROM chunks WHERE instr(text, ?) > 0", (window,)
            ).fetchall()
            if rows:
                matches.extend(r[0] for r in rows)
                break
    return _dedupe(matches)


def evaluate(
    dataset: EvalDataset,
    retriever: Any,
    k: int = 10,
    unit: Literal["document", "chunk"] = "document",
    index: Index | None = None,
    rag: Any | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    batch_size: int = 8,
) -> EvalReport:
    """Evaluate ``retriever`` (and ``rag`` if given) on ``dataset``.

    ``unit`` says what the gold ids name: documents (the dataset's own corpus was indexed) or
    chunks (gold matched inside an existing ``index`` with :func:`gold_chunks_for`).
    """
    started = time.perf_counter()
    questions = dataset.questions[:limit] if limit else list(dataset.questions)
    depth = max(k, max(RETRIEVAL_CUTOFFS))
    results: list[QuestionResult] = []
    sums: dict[str, float] = {}
    scored = 0
    for position, question in enumerate(questions, start=1):
        gold = list(question.gold_ids)
        if unit == "chunk" and index is not None and question.context is not None:
            gold = gold_chunks_for(index, question)
        hits: list[Hit] = (
            [] if question.is_impossible else retriever.search(question.question, depth)
        )
        retrieved = _dedupe(
            [h.chunk.document_id if unit == "document" else h.chunk.id for h in hits]
        )
        relevant = set(gold)
        rank = next((i for i, r in enumerate(retrieved, start=1) if r in relevant), None)
        results.append(
            QuestionResult(
                id=question.id,
                question=question.question,
                gold_ids=gold,
                retrieved_ids=retrieved[:k],
                first_relevant_rank=rank,
                answers=question.answers,
                is_impossible=question.is_impossible,
            )
        )
        if not question.is_impossible and relevant:
            scored += 1
            for cutoff in RETRIEVAL_CUTOFFS:
                sums[f"recall@{cutoff}"] = sums.get(f"recall@{cutoff}", 0.0) + recall_at_k(
                    retrieved, relevant, cutoff
                )
                sums[f"hit@{cutoff}"] = sums.get(f"hit@{cutoff}", 0.0) + hit_at_k(
                    retrieved, relevant, cutoff
                )
            sums["mrr@10"] = sums.get("mrr@10", 0.0) + mrr_at_k(retrieved, relevant, 10)
            sums["ndcg@10"] = sums.get("ndcg@10", 0.0) + ndcg_at_k(retrieved, relevant, 10)
        if progress is not None:
            progress("retrieval", position, len(questions))
    retrieval = {name: value / scored for name, value in sorted(sums.items())} if scored else {}
    retrieval["questions_scored"] = float(scored)

    generation: dict[str, float | None] | None = None
    if rag is not None:
        generation = _generate(rag, questions, results, batch_size, progress)

    answerable = sum(1 for q in questions if not q.is_impossible)
    failures = [
        r
        for r in results
        if (not r.is_impossible and r.gold_ids and r.first_relevant_rank is None)
        or (r.f1 is not None and r.f1 < 0.5)
    ]
    return EvalReport(
        dataset=dataset.name,
        retriever=str(getattr(retriever, "component_name", type(retriever).__name__)),
        k=k,
        questions=len(questions),
        answerable=answerable,
        unanswerable=len(questions) - answerable,
        retrieval=retrieval,
        generation=generation,
        seconds=time.perf_counter() - started,
        failures=failures,
    )


def _generate(
    rag: Any,
    questions: Sequence[EvalQuestion],
    results: list[QuestionResult],
    batch_size: int,
    progress: Progress | None,
) -> dict[str, float | None]:
    """Answer every question as ``rag`` would for ``ask`` and score it.

    With ``batch_size`` 1 each question is answered alone, exactly as ``ragkit ask`` does, and
    the latency percentiles are per question; larger batches report the batch time divided by
    its size. Citation precision: the share of cited answers whose every citation contains the
    answer it supports (the quote for grounded answers, the passage otherwise); gold citation:
    the share whose cited passages hold a gold answer.
    """
    em = f1 = ground = 0.0
    answerable = 0
    abstain_right = unanswerable = abstained_answerable = 0
    cited_answers = cited_support = cited_gold = 0
    latencies: list[float] = []
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        began = time.perf_counter()
        answers = (
            [rag.ask(batch[0].question)]
            if len(batch) == 1
            else rag.ask_batch([q.question for q in batch])
        )
        latencies.extend([(time.perf_counter() - began) / len(batch)] * len(batch))
        for offset, (question, answer) in enumerate(zip(batch, answers, strict=True)):
            result = results[start + offset]
            text = _MARKERS.sub("", answer.answer).strip()
            declined = bool(getattr(answer, "abstained", False)) or abstained(text)
            result.prediction = text
            if question.is_impossible:
                unanswerable += 1
                abstain_right += int(declined)
                continue
            answerable += 1
            abstained_answerable += int(declined)
            result.exact_match = 0.0 if declined else exact_match(text, question.answers)
            result.f1 = 0.0 if declined else token_f1(text, question.answers)
            em += result.exact_match
            f1 += result.f1
            if answer.citations and not declined:
                said = normalize_answer(text)
                golds = [normalize_answer(a) for a in question.answers]
                cited_answers += 1
                cited_support += int(
                    bool(said)
                    and all(said in normalize_answer(c.quote or c.text) for c in answer.citations)
                )
                cited_gold += int(
                    any(
                        g and g in normalize_answer(c.text) for c in answer.citations for g in golds
                    )
                )
            ground += groundedness(text, [c.text for c in answer.citations])
        if progress is not None:
            progress("answering", start + len(batch), len(questions))
    ordered = sorted(latencies)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def rate(count: float, total: int) -> float | None:
        # a rate over no questions is undefined, not 0: a dataset without unanswerable
        # questions must not read as "never abstains correctly"
        return count / total if total else None

    return {
        "exact_match": rate(em, answerable),
        "f1": rate(f1, answerable),
        "abstention_accuracy": rate(abstain_right, unanswerable),
        "abstained_on_answerable": rate(abstained_answerable, answerable),
        "citation_precision": rate(cited_support, cited_answers),
        "gold_citation": rate(cited_gold, cited_answers),
        "groundedness": rate(ground, answerable),
        "answered": float(answerable),
        "unanswerable": float(unanswerable),
        "latency_p50_s": percentile(0.5),
        "latency_p95_s": percentile(0.95),
    }


def write_failures(report: EvalReport, path: str | Path) -> Path:
    """Per-question JSONL of failures for inspection."""
    from ragkit.atomic import atomic_write_text

    lines = "".join(r.model_dump_json() + "\n" for r in report.failures)
    atomic_write_text(path, lines)
    return Path(path)
