"""Grounded span decoding: the answer is a verbatim span of one passage, or an explicit abstention.

A small model asked to "copy a phrase from the context" still invents years and names. Here the
model cannot: at every step only tokens that continue a span of some passage are allowed, so the
answer is checkable by construction and its citation is the exact span, not a guess by word
overlap.

How the automaton works, and why it is byte-level: a tokenizer cuts a passage differently from an
answer that starts mid-sentence (" 1992" vs "1992", "▁Paris" vs "Paris", a word split into other
pieces). Instead of tokenizing the passages, the automaton keeps the set of byte positions the
answer so far can end at, and allows every vocabulary token whose bytes occur next at one of them.
So any tokenization of any span is reachable, including characters a tokenizer only spells as
byte tokens. Spans start at word starts (never mid-word); the first token may carry the leading
space the prompt's ``Answer:`` calls for. A span may end only at a word boundary, by EOS or a
newline token, and at most ``max_tokens`` tokens long.

Abstention is a path of the same automaton: the phrase :data:`ABSTAIN_PHRASE` is a pseudo-passage
that must be completed whole, and a first token that writes part of it commits the answer to
it (a span that begins with the same bytes, "now" after "no", is not open after it; a bare
space, which begins every span, commits to nothing). That first token gets an
additive logit bias, ``abstain_bias``,
calibrated on held-out questions (benchmarks/answer_quality.py), so "not in the passages" is a
choice the model weighs against the best span rather than a string it may or may not write.
When the generator has an answerability probe (:mod:`ragkit.generation.answerability`) and
``abstain_below`` is set, a probe estimate below it leaves the abstention as the only path.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.generation.constraints import AllowedTokens

ABSTAIN_PHRASE = "not in the passages"
"""What the model writes to abstain in grounded mode (also what the completion prompt teaches)."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte ↔ printable-character table used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


_BYTE_LEVEL_DECODE = {c: b for b, c in _bytes_to_unicode().items()}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


def _piece_bytes(piece: str, byte_level: bool) -> bytes | None:
    if byte_level:
        try:
            return bytes(_BYTE_LEVEL_DECODE[c] for c in piece)
        except KeyError:
            return None
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            return None
    return piece.replace("▁", " ").encode("utf-8")


@dataclass(frozen=True)
class TokenTable:
    """Every ordinary vocabulary token as the bytes it writes, and the reverse lookup."""

    by_bytes: dict[bytes, tuple[int, ...]]
    by_id: dict[int, bytes]
    max_len: int
    end_ids: frozenset[int]
    """Tokens that end a span: those starting with a newline (EOS is added by the caller)."""


_TABLES: weakref.WeakKeyDictionary[Any, TokenTable] = weakref.WeakKeyDictionary()


def token_table(tokenizer: Any) -> TokenTable:
    """The :class:`TokenTable` of ``tokenizer`` (built once per tokenizer object, ~0.3 s at 262k)."""
    try:
        return _TABLES[tokenizer]
    except (KeyError, TypeError):
        pass
    byte_level = _is_byte_level(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.update(int(i) for i in (getattr(tokenizer, "added_tokens_decoder", {}) or {}))
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    table = table_from_pieces(
        None if token_id in special or not piece else _piece_bytes(piece, byte_level)
        for token_id, piece in enumerate(pieces)
    )
    with contextlib.suppress(TypeError):  # not weak-referenceable: rebuilt next time
        _TABLES[tokenizer] = table
    return table


def table_from_pieces(pieces: Iterable[bytes | None]) -> TokenTable:
    """A :class:`TokenTable` from each token's bytes in id order (None: never text, e.g. EOS).

    The one construction every backend shares: transformers derives the bytes from its
    tokenizer's pieces, llama.cpp reads them from the GGUF vocabulary.
    """
    # one pass that builds tuples directly: ~0.13 s at Gemma's 262k tokens instead of ~0.35 s,
    # and this runs on every cold `ragkit ask` (before the first token)
    by_id = {token_id: data for token_id, data in enumerate(pieces) if data}
    by_bytes: dict[bytes, tuple[int, ...]] = {}
    seen = by_bytes.get
    for token_id, data in by_id.items():
        earlier = seen(data)
        by_bytes[data] = (token_id,) if earlier is None else (*earlier, token_id)
    return TokenTable(
        by_bytes=by_bytes,
        by_id=by_id,
        max_len=max(map(len, by_bytes), default=1),
        end_ids=frozenset(i for i, data in by_id.items() if data[:1] == b"\n"),
    )


def _wordlike(byte: int) -> bool:
    """Letters, digits and every non-ASCII byte (UTF-8 letters) belong to words."""
    return byte >= 0x80 or chr(byte).isalnum()


def is_word_start(data: bytes, pos: int) -> bool:
    if pos >= len(data) or data[pos] in b" \t\r\n":
        return False
    if 0x80 <= data[pos] < 0xC0:  # a UTF-8 continuation byte: inside a character
        return False
    return pos == 0 or not (_wordlike(data[pos - 1]) and _wordlike(data[pos]))


def is_word_end(data: bytes, pos: int) -> bool:
    if pos <= 0:
        return False
    if pos >= len(data):
        return True
    if 0x80 <= data[pos] < 0xC0:
        return False
    return not (_wordlike(data[pos - 1]) and _wordlike(data[pos]))


_State = frozenset[tuple[int, int]]
NOT_AN_ANSWER = frozenset({b"a", b"an", b"the"})


def holds_answer_word(text: bytes) -> bool:
    """A span must hold a word that is not an article: "a" or "the" alone answers nothing."""
    words = text.lower().split()
    return any(w not in NOT_AN_ANSWER and any(_wordlike(c) for c in w) for w in words)


class SpanAutomaton:
    """The grounded constraint of one prompt: spans of ``sources`` or the abstention phrase.

    Implements :class:`~ragkit.generation.constraints.TokenConstraint`. States are sets of
    ``(source index, byte position)``; the abstention phrase is source ``len(sources)``.
    """

    def __init__(
        self,
        sources: Sequence[str],
        table: TokenTable,
        eos_ids: Iterable[int],
        *,
        max_tokens: int = 32,
        abstain: str | None = ABSTAIN_PHRASE,
        abstain_bias: float = 0.0,
        abstain_below: float | None = None,
    ) -> None:
        self.table = table
        self.sources = [s.encode("utf-8") for s in sources]
        self.abstain_index = len(self.sources) if abstain else -1
        if abstain:
            self.sources.append(abstain.encode("utf-8"))
        self.eos_ids = tuple(sorted(set(eos_ids)))
        self.end_ids = tuple(sorted(set(self.eos_ids) | table.end_ids))
        self.max_tokens = max_tokens
        self.abstain_bias = abstain_bias
        self.abstain_below = abstain_below
        self.answerability: float | None = None
        """P(answerable) from the generator's probe, once it has read the prompt (else None)."""
        self._memo: dict[tuple[int, ...], _State | None] = {}
        self._steps: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._start_cache: list[tuple[int, int, int, int]] | None = None
        self._abstain_first: frozenset[int] | None = None
        self._abstain_commit: frozenset[int] | None = None

    # -- transitions ----------------------------------------------------------------------------
    def _tokens_at(self, src: int, pos: int) -> list[tuple[int, int]]:
        """(token id, bytes consumed) for every token whose bytes occur at ``pos`` of ``src``."""
        key = (src, pos)
        found = self._steps.get(key)
        if found is None:
            data = self.sources[src]
            found = []
            for length in range(1, min(self.table.max_len, len(data) - pos) + 1):
                for token_id in self.table.by_bytes.get(data[pos : pos + length], ()):
                    found.append((token_id, length))
            self._steps[key] = found
        return found

    def _start_moves(self) -> list[tuple[int, int, int, int]]:
        """(token, src, start, end) for a first token: a word start, optionally after a space."""
        moves = []
        for src, data in enumerate(self.sources):
            starts = [0] if src == self.abstain_index else range(len(data))
            for pos in starts:
                if src != self.abstain_index and not is_word_start(data, pos):
                    continue
                for token_id, length in self._tokens_at(src, pos):
                    moves.append((token_id, src, pos, pos + length))
                # the same span with the leading space the prompt's "Answer:" calls for
                for length in range(0, min(self.table.max_len - 1, len(data) - pos) + 1):
                    for token_id in self.table.by_bytes.get(b" " + data[pos : pos + length], ()):
                        moves.append((token_id, src, pos, pos + length))
        return moves

    def _state(self, generated: tuple[int, ...]) -> _State | None:
        """Positions reachable after ``generated`` (None: ended, or no longer a span)."""
        if generated in self._memo:
            return self._memo[generated]
        state: _State | None
        if not generated:
            state = frozenset()  # the start: handled by _start_moves
        else:
            previous = self._state(generated[:-1])
            token = generated[-1]
            if previous is None:
                state = None
            elif not generated[:-1]:
                # a first token that writes part of the phrase commits to it, even where a span
                # starts with the same bytes ("no" of "now"), so a gated row or a strongly biased
                # one cannot slip into a span that begins like the phrase
                committed = self.gated or token in self._abstain_commit_ids()
                state = frozenset(
                    (src, end)
                    for t, src, _start, end in self._start_index()
                    if t == token and (not committed or src == self.abstain_index)
                )
            else:
                state = frozenset(
                    (src, pos + length)
                    for src, pos in previous
                    for t, length in self._tokens_at(src, pos)
                    if t == token
                )
            if not state:
                state = None
        self._memo[generated] = state
        return state

    def _start_index(self) -> list[tuple[int, int, int, int]]:
        if self._start_cache is None:
            self._start_cache = self._start_moves()
        return self._start_cache

    def _abstain_first_ids(self) -> frozenset[int]:
        """The tokens that can begin the abstention phrase (the bare leading space too)."""
        if self._abstain_first is None:
            self._abstain_first = frozenset(
                t for t, src, *_ in self._start_index() if src == self.abstain_index
            )
        return self._abstain_first

    def _abstain_commit_ids(self) -> frozenset[int]:
        """First tokens that write part of the phrase itself: choosing one means abstaining.

        Not the bare space, which begins every span too (Gemma writes " 1988" as " ", "1",
        "9", ...): it leaves both paths open.
        """
        if self._abstain_commit is None:
            self._abstain_commit = frozenset(
                t
                for t, src, start, end in self._start_index()
                if src == self.abstain_index and end > start
            )
        return self._abstain_commit

    def _is_answer(self, generated: Sequence[int]) -> bool:
        return holds_answer_word(b"".join(self.table.by_id.get(t, b"") for t in generated))

    def _can_end(self, state: _State) -> bool:
        for src, pos in state:
            data = self.sources[src]
            if src == self.abstain_index:
                if pos == len(data):
                    return True
            elif is_word_end(data, pos):
                return True
        return False

    def observe_answerability(self, probability: float) -> None:
        self.answerability = probability

    @property
    def gated(self) -> bool:
        """Whether the probe ruled the passages answerless: only the abstention may be written."""
        return (
            self.abstain_below is not None
            and self.answerability is not None
            and self.abstain_index >= 0
            and self.answerability < self.abstain_below
        )

    def allowed(self, generated: Sequence[int]) -> AllowedTokens | None:
        tokens = tuple(generated)
        if tokens and (tokens[-1] in self.end_ids):
            # the span ended (a newline the stop string cuts): finish the row
            return AllowedTokens(ids=self.eos_ids) if self.eos_ids else None
        if not tokens:
            moves = self._start_index()
            if self.gated:
                return AllowedTokens(ids=sorted(self._abstain_first_ids()))
            ids = sorted({t for t, *_ in moves})
            bias: dict[int, float] = {}
            if self.abstain_bias and self.abstain_index >= 0:
                bias = dict.fromkeys(self._abstain_first_ids(), self.abstain_bias)
            return AllowedTokens(ids=ids, bias=bias)
        state = self._state(tokens)
        if state is None:
            return None  # cannot happen under this constraint; leave the row alone
        ids_set = {t for src, pos in state for t, _ in self._tokens_at(src, pos)}
        can_end = self._can_end(state) and self._is_answer(tokens)
        # a dead end (a vocabulary with no token for the next bytes, e.g. a word-level one that
        # has no space): end the row rather than mask every token; a span that holds no answer
        # word is then read as an abstention (ragkit.rag.generate_step)
        if can_end or len(tokens) >= self.max_tokens or not ids_set:
            if len(tokens) >= self.max_tokens:
                ids_set = set()
            ids_set.update(self.end_ids)
        return AllowedTokens(ids=sorted(ids_set))


@dataclass(frozen=True)
class SpanLocation:
    """Where a grounded answer sits: source index and character offsets into that source."""

    source: int
    start: int
    end: int


_TRAILING = " \t\r\n,;:."


def span_text(answer: str) -> str:
    """The answer without surrounding whitespace and trailing separators (not part of a span)."""
    return answer.strip().rstrip(_TRAILING)


def locate_span(answer: str, sources: Sequence[str]) -> SpanLocation | None:
    """The first source (in order) holding ``answer`` at a word start, with character offsets."""
    text = span_text(answer)
    if not text:
        return None
    for index, source in enumerate(sources):
        data = source.encode("utf-8")
        needle = text.encode("utf-8")
        pos = data.find(needle)
        while pos >= 0:
            if is_word_start(data, pos):
                start = len(data[:pos].decode("utf-8", "ignore"))
                end = start + len(text)
                if source[start:end] == text:
                    return SpanLocation(index, start, end)
            pos = data.find(needle, pos + 1)
    return None


def is_abstention(answer: str) -> bool:
    return answer.strip().rstrip(".").lower() == ABSTAIN_PHRASE
