"""BM25 lexical search (bm25s) persisted beside the FAISS index, one folder per generation.

Stemming (Snowball, English) and English stopwords, so "running rivers" finds "river runs".
bm25s stores sparse matrices as ``.npy`` and its vocabulary as JSON, loaded with
``allow_pickle=False``. The index is rebuilt from the stored chunk texts on each commit:
tokenising tens of thousands of chunks takes seconds, far less than embedding them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragkit.atomic import atomic_directory
from ragkit.errors import IndexFormatError

_LOAD_LOCK = threading.Lock()

Ids = npt.NDArray[np.int64]
IDS_NAME = "ids.npy"
META_NAME = "ragkit-lexical.json"
LEXICAL_FORMAT_VERSION = 1


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str], return_ids: bool) -> Any:
    import bm25s

    return bm25s.tokenize(
        list(texts), stopwords="en", stemmer=_stemmer(), return_ids=return_ids, show_progress=False
    )


class LexicalIndex:
    """BM25 over chunk texts; positions map to the same int64 ids as the vector index."""

    def __init__(self, model: Any, ids: Ids) -> None:
        self.model = model
        self.ids = ids

    @classmethod
    def build(cls, ids: Ids, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)
        model = bm25s.BM25()
        if len(texts):
            tokenized = tokenize(texts, return_ids=True)
            if not tokenized.vocab:
                # No chunk holds a word (only punctuation, stopwords...): bm25s cannot index an
                # empty vocabulary, so give it one unused token; every score is then 0.
                tokenized = bm25s.tokenization.Tokenized(ids=tokenized.ids, vocab={"": 0})
            with np.errstate(divide="ignore", invalid="ignore"):  # average length 0
                model.index(tokenized, show_progress=False)
        return cls(model, np.asarray(ids, dtype=np.int64))

    @property
    def size(self) -> int:
        return len(self.ids)

    def search(
        self, query: str, k: int, allowed: Ids | None = None
    ) -> tuple[npt.NDArray[np.float32], Ids]:
        """Top-``k`` (scores, ids) with a positive score, best first; ``allowed`` restricts ids."""
        if self.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        tokens = tokenize([query], return_ids=False)[0]
        if not tokens:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = np.asarray(self.model.get_scores(tokens), dtype=np.float32)
        if allowed is not None:
            scores = np.where(np.isin(self.ids, allowed), scores, 0.0).astype(np.float32)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return scores[order], self.ids[order]

    def save(self, directory: Path) -> None:
        def fill(tmp: Path) -> None:
            if self.size:
                self.model.save(str(tmp), show_progress=False)
            np.save(tmp / IDS_NAME, self.ids, allow_pickle=False)
            (tmp / META_NAME).write_text(
                json.dumps({"format_version": LEXICAL_FORMAT_VERSION, "size": self.size})
            )

        atomic_directory(directory, fill)

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        # one load at a time: reading a .npy header runs ast.literal_eval, and CPython 3.11's
        # parser is not safe in parallel threads ("AST constructor recursion depth mismatch",
        # seen when a server's search threads all reopened a just-committed index at once)
        with _LOAD_LOCK:
            return cls._load(directory)

    @classmethod
    def _load(cls, directory: Path) -> LexicalIndex:
        import bm25s

        try:
            meta = json.loads((directory / META_NAME).read_text())
            ids = np.load(directory / IDS_NAME, allow_pickle=False).astype(np.int64)
            if meta.get("format_version") != LEXICAL_FORMAT_VERSION:
                raise IndexFormatError(
                    f"lexical index {directory} has format {meta.get('format_version')}"
                )
            model = (
                bm25s.BM25.load(str(directory), allow_pickle=False, show_progress=False)
                if len(ids)
                else bm25s.BM25()
            )
        except (OSError, ValueError, KeyError) as exc:
            raise IndexFormatError(f"cannot read lexical index {directory}: {exc}") from None
        return cls(model, ids)
