"""Splitting documents into chunks that fit the embedder.

The recursive splitter works on character spans of the original text, so every chunk carries
exact offsets (``document.text[chunk.start:chunk.end] == chunk.text``). It splits on
paragraphs, then lines, then sentences, then words, and merges the pieces back into chunks of
at most ``chunk_size`` units with ``chunk_overlap`` units shared between neighbours. Sizes are
counted in tokens of the embedder's tokenizer by default (one tokenisation per document, then
a binary search per span), or in characters. Whatever the unit, a chunk never exceeds the
embedder's maximum sequence length, so nothing is silently truncated at embedding time.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragkit.schema import Chunk, Document

# Paragraph breaks, line breaks, sentence ends, then any whitespace: the split hierarchy.
_SEPARATORS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n\s*"),
    re.compile(r"(?<=[.!?;:])\s+"),
    re.compile(r"\s+"),
)

DEFAULT_TOKEN_CHUNK_SIZE = 200
DEFAULT_TOKEN_OVERLAP = 32
DEFAULT_CHAR_CHUNK_SIZE = 1000
DEFAULT_CHAR_OVERLAP = 100

# What chunk sizes count: tokens of the embedder's tokenizer, or characters.
ChunkUnit = Literal["tokens", "chars"]


class ChunkingSettings(BaseModel):
    """How documents are split; stored in the index manifest so re-indexing stays consistent."""

    model_config = ConfigDict(extra="forbid")

    unit: ChunkUnit = "tokens"
    chunk_size: int = Field(default=DEFAULT_TOKEN_CHUNK_SIZE, gt=0)
    chunk_overlap: int = Field(default=DEFAULT_TOKEN_OVERLAP, ge=0)
    heading_aware: bool = True

    @model_validator(mode="after")
    def _overlap_smaller_than_size(self) -> ChunkingSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self

    @classmethod
    def for_unit(
        cls,
        unit: ChunkUnit = "tokens",
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        heading_aware: bool = True,
    ) -> ChunkingSettings:
        """Settings with unit-appropriate defaults for whatever is not given."""
        if unit == "tokens":
            size, overlap = DEFAULT_TOKEN_CHUNK_SIZE, DEFAULT_TOKEN_OVERLAP
        else:
            size, overlap = DEFAULT_CHAR_CHUNK_SIZE, DEFAULT_CHAR_OVERLAP
        size = chunk_size if chunk_size is not None else size
        overlap = min(overlap, max(size // 5, 0)) if chunk_overlap is None else chunk_overlap
        return cls(unit=unit, chunk_size=size, chunk_overlap=overlap, heading_aware=heading_aware)


class Tokenizer(Protocol):
    """The part of a Hugging Face fast tokenizer the splitter uses."""

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


SpanMeasure = Callable[[int, int], int]


class TokenSpans:
    """Token counts of arbitrary character spans of one text, from a single tokenisation."""

    def __init__(self, text: str, tokenizer: Tokenizer) -> None:
        encoding = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        offsets = [(s, e) for s, e in encoding["offset_mapping"] if e > s]
        self.starts = [s for s, _ in offsets]
        self.ends = [e for _, e in offsets]

    def count(self, start: int, end: int) -> int:
        """Tokens lying entirely inside ``[start, end)``."""
        return max(0, bisect.bisect_right(self.ends, end) - bisect.bisect_left(self.starts, start))

    def cut_points(self, start: int, end: int, size: int) -> list[int]:
        """Character positions splitting ``[start, end)`` into runs of at most ``size`` tokens."""
        first = bisect.bisect_left(self.starts, start)
        last = bisect.bisect_right(self.ends, end)
        return [self.starts[i] for i in range(first + size, last, size)]


class Section(BaseModel):
    """A heading-delimited span of a Markdown or reST document."""

    start: int
    end: int
    title: str | None = None
    headings: list[str] = Field(default_factory=list)


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_MD_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_RST_ADORNMENT = "=-`:'\"~^_*+#<>."
_RST_HEADING = re.compile(
    r"^(?:(?P<over>[" + re.escape(_RST_ADORNMENT) + r"])(?P=over){2,}[ \t]*\n)?"
    r"(?P<title>[^\s][^\n]*)\n"
    r"(?P<under>[" + re.escape(_RST_ADORNMENT) + r"])(?P=under){2,}[ \t]*$",
    re.MULTILINE,
)


def _markdown_headings(text: str) -> list[tuple[int, int, str]]:
    fenced: list[tuple[int, int]] = []
    marks = [m.start() for m in _MD_FENCE.finditer(text)]
    for open_at, close_at in zip(marks[::2], marks[1::2], strict=False):
        fenced.append((open_at, close_at))
    headings = []
    for m in _MD_HEADING.finditer(text):
        if any(a <= m.start() < b for a, b in fenced):
            continue
        headings.append((m.start(), len(m.group(1)), m.group(2).strip()))
    return headings


def _rst_headings(text: str) -> list[tuple[int, int, str]]:
    levels: dict[tuple[str, bool], int] = {}
    headings = []
    for m in _RST_HEADING.finditer(text):
        title = m.group("title").rstrip()
        underline_len = len(text[m.start("under") : m.end()].rstrip())
        if underline_len < len(title):
            continue
        style = (m.group("under"), m.group("over") is not None)
        level = levels.setdefault(style, len(levels) + 1)
        headings.append((m.start(), level, title.strip()))
    return headings


def split_sections(text: str, text_format: str) -> list[Section]:
    """Sections of a Markdown/reST text; other formats are a single untitled section."""
    if text_format == "markdown":
        headings = _markdown_headings(text)
    elif text_format == "rst":
        headings = _rst_headings(text)
    else:
        headings = []
    if not headings:
        return [Section(start=0, end=len(text))]
    sections: list[Section] = []
    if headings[0][0] > 0:
        sections.append(Section(start=0, end=headings[0][0]))
    stack: list[tuple[int, str]] = []
    for i, (start, level, title) in enumerate(headings):
        end = headings[i + 1][0] if i + 1 < len(headings) else len(text)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        sections.append(Section(start=start, end=end, title=title, headings=[t for _, t in stack]))
    return sections


class RecursiveSplitter:
    """Recursive paragraph → line → sentence → word splitter with exact character offsets.

    ``tokenizer`` is the embedder's tokenizer; ``max_tokens`` the most tokens a chunk may have
    (the embedder's maximum sequence length minus its special tokens). Without a tokenizer only
    the character unit is available.
    """

    def __init__(
        self,
        settings: ChunkingSettings | None = None,
        tokenizer: Tokenizer | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.settings = settings or ChunkingSettings()
        if self.settings.unit == "tokens" and tokenizer is None:
            raise ValueError(
                "token-sized chunks need the embedder's tokenizer; pass tokenizer= or use unit='chars'"
            )
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    # -- public -----------------------------------------------------------------------------
    def split(self, document: Document) -> list[Chunk]:
        text = document.text
        tokens = TokenSpans(text, self.tokenizer) if self.tokenizer is not None else None
        text_format = str(document.metadata.get("format", "text"))
        if self.settings.heading_aware:
            sections = split_sections(text, text_format)
        else:
            sections = [Section(start=0, end=len(text))]
        chunks: list[Chunk] = []
        for section in sections:
            for start, end in self.split_span(text, section.start, section.end, tokens):
                metadata = dict(document.metadata)
                if section.title is not None:
                    metadata["section"] = section.title
                    metadata["headings"] = section.headings
                chunks.append(
                    Chunk(
                        id=f"{document.id}:{len(chunks)}",
                        document_id=document.id,
                        text=text[start:end],
                        start=start,
                        end=end,
                        source=document.source,
                        metadata=metadata,
                    )
                )
        return chunks

    def split_many(self, documents: Sequence[Document]) -> list[Chunk]:
        return [chunk for document in documents for chunk in self.split(document)]

    def split_span(
        self, text: str, start: int, end: int, tokens: TokenSpans | None = None
    ) -> list[tuple[int, int]]:
        """Chunk spans of ``text[start:end]``, whitespace trimmed, empty spans dropped."""
        if tokens is None and self.tokenizer is not None:
            tokens = TokenSpans(text, self.tokenizer)
        measure, fits = self._measures(tokens)
        pieces = self._pieces(text, start, end, 0, fits, tokens)
        spans: list[tuple[int, int]] = []
        for a, b in self._merge(pieces, measure, fits):
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if b > a:
                spans.append((a, b))
        return spans

    # -- internals ----------------------------------------------------------------------------
    def _measures(
        self, tokens: TokenSpans | None
    ) -> tuple[SpanMeasure, Callable[[int, int], bool]]:
        size = self.settings.chunk_size
        max_tokens = self.max_tokens
        if self.settings.unit == "tokens":
            assert tokens is not None
            limit = min(size, max_tokens) if max_tokens else size

            def count(a: int, b: int) -> int:
                return tokens.count(a, b)

            return count, lambda a, b: tokens.count(a, b) <= limit

        def chars(a: int, b: int) -> int:
            return b - a

        if tokens is not None and max_tokens:
            return chars, lambda a, b: b - a <= size and tokens.count(a, b) <= max_tokens
        return chars, lambda a, b: b - a <= size

    def _pieces(
        self,
        text: str,
        start: int,
        end: int,
        level: int,
        fits: Callable[[int, int], bool],
        tokens: TokenSpans | None,
    ) -> list[tuple[int, int]]:
        if fits(start, end):
            return [(start, end)]
        if level >= len(_SEPARATORS):
            return self._hard_split(start, end, fits, tokens)
        cuts = [
            m.end() for m in _SEPARATORS[level].finditer(text, start, end) if start < m.end() < end
        ]
        if not cuts:
            return self._pieces(text, start, end, level + 1, fits, tokens)
        bounds = [start, *cuts, end]
        pieces: list[tuple[int, int]] = []
        for a, b in itertools.pairwise(bounds):
            if fits(a, b):
                pieces.append((a, b))
            else:
                pieces.extend(self._pieces(text, a, b, level + 1, fits, tokens))
        return pieces

    def _hard_split(
        self, start: int, end: int, fits: Callable[[int, int], bool], tokens: TokenSpans | None
    ) -> list[tuple[int, int]]:
        """Last resort for a single 'word' longer than a chunk (a URL, a base64 blob)."""
        if self.settings.unit == "tokens" and tokens is not None:
            limit = min(self.settings.chunk_size, self.max_tokens or self.settings.chunk_size)
            bounds = [
                start,
                *[c for c in tokens.cut_points(start, end, limit) if start < c < end],
                end,
            ]
        else:
            step = self.settings.chunk_size
            bounds = [*list(range(start, end, step)), end]
        pieces: list[tuple[int, int]] = []
        for a, b in itertools.pairwise(bounds):
            if fits(a, b) or b - a <= 1:
                pieces.append((a, b))
            else:
                middle = (a + b) // 2
                pieces.extend(self._hard_split(a, middle, fits, tokens))
                pieces.extend(self._hard_split(middle, b, fits, tokens))
        return pieces

    def _merge(
        self, pieces: list[tuple[int, int]], measure: SpanMeasure, fits: Callable[[int, int], bool]
    ) -> list[tuple[int, int]]:
        overlap = self.settings.chunk_overlap
        merged: list[tuple[int, int]] = []
        i, n = 0, len(pieces)
        while i < n:
            j = i
            while j + 1 < n and fits(pieces[i][0], pieces[j + 1][1]):
                j += 1
            merged.append((pieces[i][0], pieces[j][1]))
            if j + 1 >= n:
                break
            # Start the next chunk far enough back to share ``overlap`` units, but never so far
            # that it could not also take the next new piece.
            k = j + 1
            while k - 1 > i and measure(pieces[k - 1][0], pieces[j][1]) <= overlap:
                k -= 1
            while k <= j and not fits(pieces[k][0], pieces[j + 1][1]):
                k += 1
            i = k
        return merged
