"""Mapping ``[n]`` markers in an answer back to the passages they cite."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragkit.pipeline import component
from ragkit.rag.schema import Citation, Grounding, Passage

_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_STOPWORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "to",
        "in",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "for",
        "on",
        "with",
        "as",
        "by",
        "at",
        "from",
        "that",
        "this",
        "it",
        "its",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "why",
        "not",
        "no",
        "yes",
    ]
)
ABSTENTION = "the context does not say"
ABSTENTION_ANSWER = "The passages do not contain the answer."
"""What a grounded answer that abstained says to the user."""


def _content_words(text: str) -> set[str]:
    return {
        w
        for w in (m.group(0).lower() for m in _WORD.finditer(text))
        if len(w) > 2 and w not in _STOPWORDS
    }


def attribute(answer: str, passages: list[Passage]) -> Passage | None:
    """The highest-ranked passage that contains every content word and number of the answer.

    Small models often answer correctly without writing ``[n]``; rather than returning an
    uncheckable answer, a passage that holds the whole answer is cited and marked ``inferred``.
    Partial overlap is not enough (decision): "768,868" must not be credited to a passage that
    shares the answer's other words but says 275,718 — a citation that does not contain what it
    supports is worse than none.
    """
    words = _content_words(answer) | set(_NUMBER.findall(answer))
    if not words or ABSTENTION in answer.lower():
        return None
    for passage in passages:
        text = passage.text
        if words <= (_content_words(text) | set(_NUMBER.findall(text))):
            return passage
    return None


class CitedAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str
    citations: list[Citation]
    invalid_markers: list[int] = Field(default_factory=list)
    abstained: bool = False
    notes: list[str] = Field(default_factory=list)
    answerability: float | None = None


def map_citations(text: str, passages: list[Passage], infer: bool = True) -> CitedAnswer:
    """Citations for every valid marker, in order of first use; invalid markers are removed from the text.

    With ``infer`` and no valid marker at all, a passage holding the whole answer is cited
    (:func:`attribute`) and that citation is flagged ``inferred``.
    """
    by_number = {p.n: p for p in passages}
    cited: dict[int, Citation] = {}
    invalid: list[int] = []

    def replace(match: re.Match[str]) -> str:
        numbers = [int(x) for x in re.split(r"\s*,\s*", match.group(1))]
        valid = [n for n in numbers if n in by_number]
        for n in numbers:
            if n not in by_number and n not in invalid:
                invalid.append(n)
        for n in valid:
            cited.setdefault(n, Citation.from_passage(by_number[n]))
        return "[" + ", ".join(str(n) for n in valid) + "]" if valid else ""

    cleaned = _MARKER.sub(replace, text)
    if invalid:
        cleaned = re.sub(r"[ \t]+([,.;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip()
    notes = [f"dropped citation marker(s) pointing at no passage: {invalid}"] if invalid else []
    cleaned = cleaned.strip()
    if infer and not cited and cleaned:
        passage = attribute(cleaned, passages)
        if passage is not None:
            cited[passage.n] = Citation.from_passage(passage, inferred=True)
            notes.append(
                f"the model wrote no citation marker; passage [{passage.n}] contains every word "
                "of the answer and is cited as inferred"
            )
        elif ABSTENTION not in cleaned.lower():
            notes.append(
                "the model wrote no citation marker and no passage contains the whole answer: "
                "the answer is uncited"
            )
    return CitedAnswer(
        answer=cleaned, citations=list(cited.values()), invalid_markers=invalid, notes=notes
    )


def map_grounded(text: str, passages: list[Passage], grounding: Grounding) -> CitedAnswer:
    """The answer of grounded decoding: the exact span, cited by its offsets, or an abstention."""
    by_number = {p.n: p for p in passages}
    if grounding.abstained or grounding.passage not in by_number:
        reason = grounding.reason or "the passages do not contain the answer"
        return CitedAnswer(
            answer=ABSTENTION_ANSWER,
            citations=[],
            abstained=True,
            notes=[f"abstained: {reason}"],
            answerability=grounding.answerability,
        )
    passage = by_number[grounding.passage]
    citation = Citation.quoting(passage, grounding.start, grounding.end)
    return CitedAnswer(
        answer=citation.quote or text, citations=[citation], answerability=grounding.answerability
    )


@component(trace_outputs={"notes": "notes"})
class CitationStep:
    """Pipeline step: generated text + the numbered passages → answer with citations."""

    component_name = "citations"

    def run(
        self, text: str, passages: list[Passage], grounding: Grounding | None = None
    ) -> CitedAnswer:
        if grounding is not None:
            return map_grounded(text, passages, grounding)
        return map_citations(text, passages)

    def to_config(self) -> dict[str, object]:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> CitationStep:
        return cls(**config)
