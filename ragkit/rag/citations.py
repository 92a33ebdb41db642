"""Mapping ``[n]`` markers in an answer back to the passages they cite."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from ragkit.rag.schema import Citation, Passage

_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w+")
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
ATTRIBUTION_THRESHOLD = 0.6
ABSTENTION = "the context does not say"


def _content_words(text: str) -> set[str]:
    return {
        w
        for w in (m.group(0).lower() for m in _WORD.finditer(text))
        if len(w) > 2 and w not in _STOPWORDS
    }


def attribute(answer: str, passages: list[Passage]) -> Passage | None:
    """The passage containing most of the answer's content words, if it holds enough of them.

    Small models often answer correctly without writing ``[n]``; rather than returning an
    uncheckable answer, the best-supported passage is cited and marked ``inferred``.
    """
    words = _content_words(answer)
    if not words or ABSTENTION in answer.lower():
        return None
    best, best_score = None, 0.0
    for passage in passages:
        score = len(words & _content_words(passage.text)) / len(words)
        if score > best_score:
            best, best_score = passage, score
    return best if best_score >= ATTRIBUTION_THRESHOLD else None


class CitedAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str
    citations: list[Citation]
    invalid_markers: list[int] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def map_citations(text: str, passages: list[Passage], infer: bool = True) -> CitedAnswer:
    """Citations for every valid marker, in order of first use; invalid markers are removed from the text.

    With ``infer`` and no valid marker at all, the answer is attributed by word overlap
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
    if infer and not cited:
        passage = attribute(cleaned, passages)
        if passage is not None:
            p = passage
            cited[p.n] = Citation.from_passage(p, inferred=True)
            cleaned = f"{cleaned} [{p.n}]"
            notes.append(
                f"the model cited nothing; attributed the answer to passage [{p.n}] by word overlap"
            )
    return CitedAnswer(
        answer=cleaned, citations=list(cited.values()), invalid_markers=invalid, notes=notes
    )


class CitationStep:
    """Pipeline step: generated text + the numbered passages → answer with citations."""

    component_name = "citations"

    def run(self, text: str, passages: list[Passage]) -> CitedAnswer:
        return map_citations(text, passages)

    def to_config(self) -> dict[str, object]:
        return {}
