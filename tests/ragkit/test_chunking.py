from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ragkit.chunking import ChunkingSettings, RecursiveSplitter, TokenSpans, split_sections
from ragkit.embedding import Embedder
from ragkit.schema import Document

WORDS = st.sampled_from(
    [
        "the",
        "capital",
        "of",
        "france",
        "is",
        "paris.",
        "river",
        "Rhine!",
        "a",
        "verylongwordwithoutbreaks",
        "x",
        "1990,",
    ]
)
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", "  ", "\t", ". "])


@st.composite
def texts(draw: Any) -> str:
    parts = draw(st.lists(st.tuples(WORDS, SEPARATORS), min_size=0, max_size=120))
    prefix = draw(st.sampled_from(["", "\n", "  "]))
    return prefix + "".join(w + s for w, s in parts)


def _check_invariants(doc: Document, splitter: RecursiveSplitter, tokenizer: Any | None) -> None:
    chunks = splitter.split(doc)
    spans = TokenSpans(doc.text, tokenizer) if tokenizer is not None else None
    covered = [False] * len(doc.text)
    for chunk in chunks:
        # offsets map back to the exact chunk text
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text
        for i in range(chunk.start, chunk.end):
            covered[i] = True
        s = splitter.settings
        if s.unit == "chars":
            assert len(chunk.text) <= s.chunk_size
        if spans is not None:
            limit = s.chunk_size if s.unit == "tokens" else splitter.max_tokens
            if limit is not None:
                assert spans.count(chunk.start, chunk.end) <= limit
    # no text lost: every non-whitespace character is in some chunk
    lost = [i for i, c in enumerate(doc.text) if not c.isspace() and not covered[i]]
    assert not lost, f"characters lost at {lost[:5]}"
    # chunks are in document order
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


@settings(max_examples=150, deadline=None)
@given(text=texts(), size=st.integers(min_value=5, max_value=120), overlap_frac=st.floats(0, 0.5))
def test_char_chunks_invariants(text: str, size: int, overlap_frac: float) -> None:
    cfg = ChunkingSettings(
        unit="chars", chunk_size=size, chunk_overlap=int(size * overlap_frac), heading_aware=False
    )
    _check_invariants(Document(id="d", text=text, source="s"), RecursiveSplitter(cfg), None)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=texts(), size=st.integers(min_value=3, max_value=40), overlap_frac=st.floats(0, 0.5))
def test_token_chunks_invariants(
    tiny_embedder: Embedder, text: str, size: int, overlap_frac: float
) -> None:
    cfg = ChunkingSettings(
        unit="tokens", chunk_size=size, chunk_overlap=int(size * overlap_frac), heading_aware=False
    )
    splitter = RecursiveSplitter(
        cfg, tokenizer=tiny_embedder.tokenizer, max_tokens=tiny_embedder.max_tokens
    )
    _check_invariants(Document(id="d", text=text, source="s"), splitter, tiny_embedder.tokenizer)


def test_words_are_not_cut_when_they_fit() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa " * 5
    cfg = ChunkingSettings(unit="chars", chunk_size=30, chunk_overlap=10, heading_aware=False)
    words = set(text.split())
    for chunk in RecursiveSplitter(cfg).split(Document(id="d", text=text, source="s")):
        assert set(chunk.text.split()) <= words


def test_overlap_shares_text_between_neighbours() -> None:
    text = " ".join(f"w{i}" for i in range(200))
    cfg = ChunkingSettings(unit="chars", chunk_size=60, chunk_overlap=20, heading_aware=False)
    chunks = RecursiveSplitter(cfg).split(Document(id="d", text=text, source="s"))
    assert len(chunks) > 3
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "neighbouring chunks should overlap"
        assert a.end - b.start <= 20


def test_char_mode_still_respects_embedder_max_tokens(tiny_embedder: Embedder) -> None:
    # every character is its own token for this vocabulary's punctuation: 300 chars ≫ 62 tokens
    text = "!" * 150 + " " + "?" * 150
    cfg = ChunkingSettings(unit="chars", chunk_size=1000, chunk_overlap=0, heading_aware=False)
    splitter = RecursiveSplitter(
        cfg, tokenizer=tiny_embedder.tokenizer, max_tokens=tiny_embedder.max_tokens
    )
    chunks = splitter.split(Document(id="d", text=text, source="s"))
    spans = TokenSpans(text, tiny_embedder.tokenizer)
    assert len(chunks) > 2
    assert all(spans.count(c.start, c.end) <= tiny_embedder.max_tokens for c in chunks)


def test_markdown_heading_aware_sections() -> None:
    text = "Intro line.\n\n# Install\n\npip install it.\n\n## From source\n\nclone it.\n\n```\n# not a heading\n```\n\n# Use\n\nrun it.\n"
    doc = Document(id="d", text=text, source="s", metadata={"format": "markdown"})
    cfg = ChunkingSettings(unit="chars", chunk_size=500, chunk_overlap=0)
    chunks = RecursiveSplitter(cfg).split(doc)
    sections = [c.metadata.get("section") for c in chunks]
    assert sections == [None, "Install", "From source", "Use"]
    assert chunks[2].metadata["headings"] == ["Install", "From source"]
    assert "# not a heading" in chunks[2].text


def test_rst_heading_levels() -> None:
    text = "=====\nTitle\n=====\n\nIntro.\n\nPart one\n--------\n\nBody one.\n\nPart two\n--------\n\nBody two.\n"
    sections = split_sections(text, "rst")
    assert [s.title for s in sections] == ["Title", "Part one", "Part two"]
    assert sections[2].headings == ["Title", "Part two"]


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match="smaller than chunk_size"):
        ChunkingSettings(chunk_size=10, chunk_overlap=10)
    with pytest.raises(ValueError, match="tokenizer"):
        RecursiveSplitter(ChunkingSettings(unit="tokens"))
    assert ChunkingSettings.for_unit("chars").chunk_size == 1000
