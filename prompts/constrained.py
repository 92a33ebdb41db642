"""Schema-guided decoding: a logits processor that lets a local model write only valid JSON.

:func:`prompts.parse_as` works with any generator by validating and re-prompting; a small
local model may still need several attempts, or never produce parseable JSON at all. With
the model's logits in hand we can do better: before each token is chosen, every token that
would take the text off the set of valid prefixes of a JSON document matching the schema is
masked, and once the document is complete only EOS is left. Even a random model then writes
JSON that parses and has the schema's shape.

The pieces, and why they look the way they do:

- :class:`JsonSchemaMachine` compiles a JSON schema (or a pydantic model's) into a small
  byte-level nondeterministic parser. A parser configuration is an immutable stack of frames,
  a state is a frozenset of configurations: unions (``anyOf``, ``Optional``), enum values that
  prefix each other and numbers that may end or go on are all just several configurations at
  once, no backtracking. Immutable states can be shared by the rows of a batch and advanced
  speculatively for every candidate token without copying. It works on UTF-8 bytes, not
  characters, because byte-level BPE tokens (SmolLM2, GPT-2, Llama 3) can split a character.
- :class:`TokenTable` holds each token's bytes, computed once per tokenizer (cached), and the
  vocabulary sorted by bytes so a full scan shares work between tokens with a common prefix
  and skips every token under a prefix that is already invalid.
- :class:`JsonSchemaLogitsProcessor` checks only the ``top_k`` candidates by score at each
  step (the model usually wants a valid token, and ~16 checks cost microseconds), falling back
  to the full scan when none of them is valid. Greedy decoding is therefore exact: the best
  valid token is found either way. With sampling, the draw is among the valid tokens of the
  top ``k`` (a top-k truncation).
- :class:`JsonSchemaConstraint` is what :meth:`ragkit.generation.Generator.generate` takes in
  ``logits_processors``: a factory making one processor per batch, told the batch's prompt
  width, so no processor guesses where the generated text starts or shares state.

What the grammar enforces: objects with their properties in schema order (every property
written, optional ones included — write ``null`` for an ``Optional`` one), strings (valid
escapes, well-formed UTF-8, ``minLength``/``maxLength``), integers and numbers (JSON syntax,
digit counts capped so a model cannot run forever), booleans, null, ``enum``/``const``,
arrays (``minItems``/``maxItems``), nested objects and ``$ref``, ``anyOf``/``oneOf`` and
type lists. Not enforced (left to validation and :func:`parse_as`'s retries): ``pattern``,
``format``, numeric bounds, ``uniqueItems``. Unsupported (``ValueError`` when compiled):
free-form ``dict`` objects (``additionalProperties``), tuples, recursive models and untyped
values. Whitespace between tokens is allowed but capped (``max_whitespace`` per gap).
Generation still stops at ``max_new_tokens``: bound strings and lists (``max_length``) when a
document must fit, because a truncated document fails validation like any other.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import weakref
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import torch
from pydantic import BaseModel
from transformers import LogitsProcessor

# ---------------------------------------------------------------- schema → grammar nodes


@dataclass(frozen=True, eq=False)
class _Str:
    min_len: int
    max_len: int | None


@dataclass(frozen=True, eq=False)
class _Num:
    integer: bool


@dataclass(frozen=True, eq=False)
class _Lit:
    """One of a fixed set of byte strings: enum/const values, true/false, null."""

    options: tuple[bytes, ...]


@dataclass(frozen=True, eq=False)
class _Arr:
    item: _Node
    min_items: int
    max_items: int | None


@dataclass(frozen=True, eq=False)
class _Obj:
    keys: tuple[tuple[bytes, ...], ...]
    """Per property, its accepted encodings (quotes included)."""
    values: tuple[_Node, ...]


@dataclass(frozen=True, eq=False)
class _Any:
    options: tuple[_Node, ...]


_Node: TypeAlias = _Str | _Num | _Lit | _Arr | _Obj | _Any


def _encodings(value: Any) -> tuple[bytes, ...]:
    """A JSON literal as a model may write it: ASCII-escaped or not (deduplicated)."""
    forms = {json.dumps(value, ensure_ascii=a).encode("utf-8") for a in (True, False)}
    return tuple(sorted(forms))


class _Compiler:
    """Resolves ``$ref``/``$defs`` and turns schema dicts into grammar nodes."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.active: set[str] = set()

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(target, Mapping):
            raise ValueError(f"$ref {ref!r} does not point at a schema")
        return target

    def node(self, schema: Mapping[str, Any], where: str = "(root)") -> _Node:
        if "$ref" in schema:
            ref = str(schema["$ref"])
            if ref in self.active:
                raise ValueError(f"{where}: recursive schemas are not supported ({ref})")
            self.active.add(ref)
            try:
                return self.node(self.resolve(ref), where)
            finally:
                self.active.discard(ref)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return _Any(tuple(self.node(s, where) for s in schema[key]))
        if "allOf" in schema:
            parts = schema["allOf"]
            if len(parts) != 1:
                raise ValueError(f"{where}: allOf with several schemas is not supported")
            return self.node(parts[0], where)
        if "const" in schema:
            return _Lit(_encodings(schema["const"]))
        if "enum" in schema:
            return _Lit(tuple(sorted({e for v in schema["enum"] for e in _encodings(v)})))
        kind = schema.get("type")
        if kind is None and "properties" in schema:
            kind = "object"
        if isinstance(kind, list):
            return _Any(tuple(self.node({**schema, "type": k}, where) for k in kind))
        if kind == "string":
            return _Str(int(schema.get("minLength", 0)), _opt_int(schema.get("maxLength")))
        if kind in ("integer", "number"):
            return _Num(integer=kind == "integer")
        if kind == "boolean":
            return _Lit((b"false", b"true"))
        if kind == "null":
            return _Lit((b"null",))
        if kind == "array":
            if "prefixItems" in schema or "items" not in schema:
                raise ValueError(f"{where}: arrays need a single 'items' schema (no tuples)")
            return _Arr(
                self.node(schema["items"], f"{where}[]"),
                int(schema.get("minItems", 0)),
                _opt_int(schema.get("maxItems")),
            )
        if kind == "object":
            properties = schema.get("properties")
            extra = schema.get("additionalProperties")
            if not properties and extra not in (None, False):
                raise ValueError(f"{where}: free-form objects (dict fields) are not supported")
            props = dict(properties or {})
            return _Obj(
                tuple(_encodings(name) for name in props),
                tuple(self.node(s, f"{where}.{name}") for name, s in props.items()),
            )
        raise ValueError(f"{where}: unsupported schema {dict(schema)!r}")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def schema_of(schema: Mapping[str, Any] | type[BaseModel]) -> dict[str, Any]:
    """A JSON schema from a schema mapping or a pydantic model class."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, Mapping):
        return dict(schema)
    raise TypeError(f"expected a JSON schema or a pydantic model, got {type(schema).__name__}")


# ---------------------------------------------------------------- the byte-level parser

# Frames are plain tuples (tag first): hashable, cheap to build, and shared between states.
_VAL, _STR, _LIT, _NUM, _ARR, _OBJ = range(6)
# object phases: after '{', in key, after key, in value, after value, after ',', after ':'
_O_OPEN, _O_KEY, _O_AFTER_KEY, _O_VALUE, _O_AFTER_VALUE, _O_COMMA, _O_COLON = range(7)
# array phases: after '[', after item, in item, after ','
_A_OPEN, _A_AFTER, _A_ITEM, _A_COMMA = range(4)
# number phases; accepting: int digits, lone zero, fraction digits, exponent digits
_N_START, _N_MINUS, _N_INT, _N_ZERO, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(9)
_N_ACCEPT = frozenset((_N_INT, _N_ZERO, _N_FRAC, _N_EXP))

_WS = frozenset(b" \t\n\r")
_DIGITS = frozenset(b"0123456789")
_HEX = {b: int(chr(b), 16) for b in b"0123456789abcdefABCDEF"}
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')


def _utf8_leads() -> dict[int, tuple[int, int]]:
    """Lead byte -> (continuation bytes, packed range of the first one; 0 = 0x80..0xBF).

    The narrowed first ranges exclude overlong forms, UTF-16 surrogates and code points
    above U+10FFFF, so every accepted string decodes as strict UTF-8.
    """
    leads = {b: (1, 0) for b in range(0xC2, 0xE0)}
    leads.update({b: (2, 0) for b in range(0xE0, 0xF0)})
    leads.update({b: (3, 0) for b in range(0xF0, 0xF5)})
    leads[0xE0] = (2, 0xA0BF)
    leads[0xED] = (2, 0x809F)
    leads[0xF0] = (3, 0x90BF)
    leads[0xF4] = (3, 0x808F)
    return leads


_UTF8_LEADS = _utf8_leads()
_QUOTE, _BACKSLASH = ord('"'), ord("\\")

Frame: TypeAlias = tuple[Any, ...]
Stack: TypeAlias = tuple[Frame, ...]
ParseState: TypeAlias = frozenset[Stack]
"""A set of parser configurations; empty means the text is not a valid prefix. The empty
stack ``()`` among them means the document may end here."""


class JsonSchemaMachine:
    """Incremental recogniser of the JSON documents that match a schema, byte by byte.

    ``advance(state, data)`` returns the state after ``data`` (empty: invalid prefix);
    :meth:`is_complete` says whether the document may end there. Digit caps bound numbers
    (a JSON float needs at most 17 significant digits; Python writes larger values with an
    exponent), so every document this accepts can be finished in bounded length when strings
    and arrays are bounded too.
    """

    def __init__(
        self,
        schema: Mapping[str, Any] | type[BaseModel],
        *,
        max_whitespace: int = 16,
        max_int_digits: int = 20,
        max_fraction_digits: int = 24,
        max_exponent_digits: int = 3,
    ) -> None:
        resolved = schema_of(schema)
        self.schema = resolved
        self.root = _Compiler(resolved).node(resolved)
        self.max_whitespace = max_whitespace
        self.max_int_digits = max_int_digits
        self.max_fraction_digits = max_fraction_digits
        self.max_exponent_digits = max_exponent_digits
        self.initial: ParseState = frozenset({((_VAL, self.root, 0),)})

    # -- public API

    def advance(self, state: ParseState, data: bytes) -> ParseState:
        """The state after feeding ``data``; empty when ``data`` leaves the valid prefixes."""
        for byte in data:
            if not state:
                break
            state = self.step(state, byte)
        return state

    def step(self, state: ParseState, byte: int) -> ParseState:
        """The state after one byte."""
        out: set[Stack] = set()
        for stack in state:
            out.update(self._step(stack, byte))
        return frozenset(out)

    @staticmethod
    def is_complete(state: ParseState) -> bool:
        """Whether the text so far is a whole document (EOS may follow)."""
        return () in state

    def accepts_prefix(self, text: str | bytes) -> bool:
        """Whether ``text`` can be extended to a matching document (or is one)."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return bool(self.advance(self.initial, data))

    def accepts(self, text: str | bytes) -> bool:
        """Whether ``text`` is a whole matching document."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return self.is_complete(self.advance(self.initial, data))

    # -- transitions (each returns the successor stacks of one configuration)

    def _step(self, stack: Stack, b: int) -> list[Stack]:
        if not stack:
            return []  # the document is complete: nothing may follow
        top, rest = stack[-1], stack[:-1]
        tag = top[0]
        if tag == _STR:
            return self._string(rest, top, b)
        if tag == _NUM:
            return self._number(rest, top[1], top[2], top[3], b)
        if tag == _LIT:
            return self._literal(rest, top[1], top[2], b)
        if tag == _OBJ:
            return self._object(rest, top, b)
        if tag == _ARR:
            return self._array(rest, top, b)
        # _VAL: the top-level value, whitespace before it allowed
        if b in _WS:
            return [(*rest, (_VAL, top[1], top[2] + 1))] if top[2] < self.max_whitespace else []
        return self._start(rest, top[1], b)

    def _start(self, rest: Stack, node: _Node, b: int) -> list[Stack]:
        """Begin a value of ``node`` with its first byte ``b``."""
        if isinstance(node, _Str):
            return [(*rest, (_STR, node, 0, 0, 0, 0, 0))] if b == _QUOTE else []
        if isinstance(node, _Lit):
            return self._literal(rest, node.options, 0, b)
        if isinstance(node, _Num):
            return self._number(rest, node, _N_START, 0, b)
        if isinstance(node, _Obj):
            return [(*rest, (_OBJ, node, 0, _O_OPEN, 0))] if b == ord("{") else []
        if isinstance(node, _Arr):
            return [(*rest, (_ARR, node, 0, _A_OPEN, 0))] if b == ord("[") else []
        out: list[Stack] = []
        for option in node.options:
            out.extend(self._start(rest, option, b))
        return out

    @staticmethod
    def _complete(rest: Stack) -> list[Stack]:
        """The value on top of ``rest`` just ended: move its container on."""
        if not rest:
            return [()]
        parent, up = rest[-1], rest[:-1]
        if parent[0] == _ARR:
            _, node, count, _phase, _ws = parent
            return [(*up, (_ARR, node, count + 1, _A_AFTER, 0))]
        if parent[0] == _OBJ:
            _, node, idx, phase, _ws = parent
            after = _O_AFTER_KEY if phase == _O_KEY else _O_AFTER_VALUE
            return [(*up, (_OBJ, node, idx, after, 0))]
        # only containers are ever below a value (the top-level _VAL frame is replaced)
        raise AssertionError(f"a value cannot end inside frame {parent[0]}")

    def _literal(self, rest: Stack, options: tuple[bytes, ...], pos: int, b: int) -> list[Stack]:
        keep = [o for o in options if len(o) > pos and o[pos] == b]
        out: list[Stack] = []
        if any(len(o) == pos + 1 for o in keep):
            out.extend(self._complete(rest))
        longer = tuple(o for o in keep if len(o) > pos + 1)
        if longer:
            out.append((*rest, (_LIT, longer, pos + 1)))
        return out

    def _string(self, rest: Stack, top: Frame, b: int) -> list[Stack]:
        _, node, count, escape, hex_left, value, cont = top
        if cont:  # inside a multi-byte UTF-8 character; ``value`` packs the next byte's range
            low, high = (value >> 8, value & 0xFF) if value else (0x80, 0xBF)
            if low <= b <= high:
                return [(*rest, (_STR, node, count, 0, 0, 0, cont - 1))]
            return []
        if hex_left:
            # escape 4 marks the \\u escape that must be the low half of a surrogate pair
            if b not in _HEX:
                return []
            value, left = value * 16 + _HEX[b], hex_left - 1
            if left == 2:  # the first two hex digits decide whether this is a surrogate
                low_half = 0xDC <= value <= 0xDF
                if low_half != (escape == 4):
                    return []  # a lone low surrogate, or a high one not followed by a low one
            if left:
                return [(*rest, (_STR, node, count, escape, left, value, 0))]
            if escape != 4 and 0xD800 <= value <= 0xDBFF:
                # half of one character: a \\u low surrogate must follow (escape 2, then 3)
                return [(*rest, (_STR, node, count, 2, 0, 0, 0))]
            return [(*rest, (_STR, node, count + 1, 0, 0, 0, 0))]
        if escape == 2:
            return [(*rest, (_STR, node, count, 3, 0, 0, 0))] if b == _BACKSLASH else []
        if escape == 3:
            return [(*rest, (_STR, node, count, 4, 4, 0, 0))] if b == ord("u") else []
        if escape:
            if b in _SIMPLE_ESCAPES:
                return [(*rest, (_STR, node, count + 1, 0, 0, 0, 0))]
            if b == ord("u"):
                return [(*rest, (_STR, node, count, 0, 4, 0, 0))]
            return []
        if b == _QUOTE:
            return self._complete(rest) if count >= node.min_len else []
        if node.max_len is not None and count >= node.max_len:
            return []  # no room for another character
        if b == _BACKSLASH:
            return [(*rest, (_STR, node, count, 1, 0, 0, 0))]
        if b < 0x20:
            return []  # raw control characters are not allowed in JSON strings
        if b < 0x80:
            return [(*rest, (_STR, node, count + 1, 0, 0, 0, 0))]
        lead = _UTF8_LEADS.get(b)
        if lead is None:
            return []
        need, first_range = lead
        return [(*rest, (_STR, node, count + 1, 0, 0, first_range, need))]

    def _number(self, rest: Stack, node: _Num, phase: int, digits: int, b: int) -> list[Stack]:
        nxt = self._number_phase(node, phase, digits, b)
        if nxt is None:
            return []
        stack = (*rest, (_NUM, node, *nxt))
        if nxt[0] in _N_ACCEPT:  # the number may also end here
            return [stack, *self._complete(rest)]
        return [stack]

    def _number_phase(self, node: _Num, phase: int, digits: int, b: int) -> tuple[int, int] | None:
        digit = b in _DIGITS
        if phase in (_N_START, _N_MINUS):
            if b == ord("-") and phase == _N_START:
                return _N_MINUS, 0
            if b == ord("0"):
                return _N_ZERO, 1
            return (_N_INT, 1) if digit else None
        if phase == _N_INT and digit:
            return (_N_INT, digits + 1) if digits < self.max_int_digits else None
        if phase in (_N_INT, _N_ZERO):
            if node.integer:
                return None
            if b == ord("."):
                return _N_DOT, 0
            return (_N_E, 0) if b in b"eE" else None
        if phase == _N_DOT:
            return (_N_FRAC, 1) if digit else None
        if phase == _N_FRAC:
            if digit:
                return (_N_FRAC, digits + 1) if digits < self.max_fraction_digits else None
            return (_N_E, 0) if b in b"eE" else None
        if phase == _N_E:
            if b in b"+-":
                return _N_ESIGN, 0
            return (_N_EXP, 1) if digit else None
        if phase == _N_ESIGN:
            return (_N_EXP, 1) if digit else None
        if phase == _N_EXP and digit:
            return (_N_EXP, digits + 1) if digits < self.max_exponent_digits else None
        return None

    def _array(self, rest: Stack, top: Frame, b: int) -> list[Stack]:
        _, node, count, phase, ws = top
        if b in _WS:
            return [(*rest, (_ARR, node, count, phase, ws + 1))] if ws < self.max_whitespace else []
        can_add = node.max_items is None or count < node.max_items
        if phase == _A_AFTER:
            if b == ord(","):
                return [(*rest, (_ARR, node, count, _A_COMMA, 0))] if can_add else []
            return self._complete(rest) if b == ord("]") and count >= node.min_items else []
        if phase == _A_OPEN and b == ord("]"):
            return self._complete(rest) if node.min_items == 0 else []
        if not can_add:
            return []
        return self._start((*rest, (_ARR, node, count, _A_ITEM, 0)), node.item, b)

    def _object(self, rest: Stack, top: Frame, b: int) -> list[Stack]:
        _, node, idx, phase, ws = top
        if b in _WS:
            return [(*rest, (_OBJ, node, idx, phase, ws + 1))] if ws < self.max_whitespace else []
        size = len(node.keys)
        if phase in (_O_OPEN, _O_COMMA):
            if phase == _O_OPEN and b == ord("}"):
                return self._complete(rest) if size == 0 else []
            if idx >= size:
                return []
            return self._literal((*rest, (_OBJ, node, idx, _O_KEY, 0)), node.keys[idx], 0, b)
        if phase == _O_AFTER_KEY:
            return [(*rest, (_OBJ, node, idx, _O_COLON, 0))] if b == ord(":") else []
        if phase == _O_COLON:
            return self._start((*rest, (_OBJ, node, idx, _O_VALUE, 0)), node.values[idx], b)
        if phase == _O_AFTER_VALUE:
            if b == ord(","):
                return [(*rest, (_OBJ, node, idx + 1, _O_COMMA, 0))] if idx + 1 < size else []
            return self._complete(rest) if b == ord("}") and idx + 1 == size else []
        return []


# ---------------------------------------------------------------- tokens as bytes


def _byte_level_alphabet() -> dict[str, int]:
    """The printable stand-ins byte-level BPE vocabularies use for raw bytes, inverted.

    Printable Latin-1 bytes stand for themselves; the other bytes are shifted to code points
    from 256 up, in byte order (the convention GPT-2 introduced and its successors kept).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


class TokenTable:
    """Every token's bytes (None for special or empty tokens), sorted for prefix scans.

    Byte-level BPE vocabularies map back to exact bytes through their alphabet (a token may
    hold part of a UTF-8 character, which decoding it alone would turn into U+FFFD);
    SentencePiece pieces (``▁`` for a space, ``<0xNN>`` byte fallbacks) are read directly;
    anything else falls back to decoding each token alone. The reading is checked on a probe
    text: the tokens' bytes joined must decode to what the tokenizer itself decodes.
    """

    _cache: ClassVar[weakref.WeakKeyDictionary[Any, TokenTable]] = weakref.WeakKeyDictionary()

    def __init__(self, token_bytes: list[bytes | None]) -> None:
        self.token_bytes = token_bytes
        entries = sorted((b, i) for i, b in enumerate(token_bytes) if b)
        self.sorted_bytes = [b for b, _ in entries]
        self.sorted_ids = [i for _, i in entries]

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> TokenTable:
        """The table of a (transformers) tokenizer, built once per tokenizer object."""
        with contextlib.suppress(KeyError, TypeError):
            return cls._cache[tokenizer]
        table = cls(_token_bytes(tokenizer))
        with contextlib.suppress(TypeError):  # not weak-referenceable: just do not cache
            cls._cache[tokenizer] = table
        return table

    def __len__(self) -> int:
        return len(self.token_bytes)


_PROBE = 'Probe: {"name": "Zoë", "n": [1, -2.5e3], "ok": true}\n\t  end'


def _token_bytes(tokenizer: Any) -> list[bytes | None]:
    size = len(tokenizer)
    pieces: list[str | None] = list(tokenizer.convert_ids_to_tokens(list(range(size))))
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {int(i) for i, t in added.items() if getattr(t, "special", False)}
    plain_added = {int(i) for i in added} - special  # added tokens decode to their own text
    alphabet = _byte_level_alphabet()
    excluded = special | plain_added
    normal = [p for i, p in enumerate(pieces) if p and i not in excluded]

    def byte_level(i: int, piece: str) -> bytes:
        if i in plain_added or not all(ch in alphabet for ch in piece):
            return piece.encode("utf-8")
        return bytes(alphabet[ch] for ch in piece)

    def sentencepiece(i: int, piece: str) -> bytes:
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("▁", " ").encode("utf-8")

    def decoded(i: int, piece: str) -> bytes:
        return str(tokenizer.decode([i])).encode("utf-8")

    readers = []
    in_alphabet = sum(all(ch in alphabet for ch in p) for p in normal)
    if normal and in_alphabet >= 0.95 * len(normal):
        readers.append(byte_level)
    if any(p.startswith("▁") for p in normal):
        readers.append(sentencepiece)
    readers.append(decoded)
    probe_ids = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    expected = str(tokenizer.decode(probe_ids, skip_special_tokens=True)).encode("utf-8")
    for reader in readers:
        out = [
            None if i in special or not piece else reader(i, piece) or None
            for i, piece in enumerate(pieces)
        ]
        joined = b"".join(out[i] or b"" for i in probe_ids)
        # SentencePiece decoders drop the space of the first piece; JSON ignores it anyway
        if joined in (expected, b" " + expected) or reader is decoded:
            return out
    raise AssertionError("unreachable: the decode reader is always accepted")


# ---------------------------------------------------------------- the logits processor


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks every token that would break the schema; forces EOS once the JSON is complete.

    One instance serves one ``model.generate`` call whose generated tokens start at column
    ``prompt_width`` of ``input_ids``. States are cached by the generated ids of each row, so
    beam search (which reorders rows) and rows that already finished are handled alike.
    A row whose text became invalid (a token forced by something else) or reached a dead end
    (no token of the vocabulary continues it) is only allowed EOS: its output will then fail
    validation, which :func:`prompts.parse_as` reports or retries.
    """

    def __init__(
        self,
        machine: JsonSchemaMachine,
        table: TokenTable,
        eos_token_ids: Collection[int],
        prompt_width: int,
        top_k: int = 16,
    ) -> None:
        if not eos_token_ids:
            raise ValueError("schema-guided decoding needs at least one EOS token id")
        self.machine = machine
        self.table = table
        self.eos = sorted({int(i) for i in eos_token_ids})
        self.prompt_width = prompt_width
        self.top_k = top_k
        self._states: dict[tuple[int, ...], ParseState | None] = {(): machine.initial}
        self._scans: dict[ParseState, list[int]] = {}
        self.full_scans = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        rows = input_ids[:, self.prompt_width :].tolist()
        allowed: list[list[int] | None] = []
        states: dict[tuple[int, ...], ParseState | None] = {}
        for row in rows:
            key = tuple(row)
            state = self._state(key)
            states[key] = state
            allowed.append(None if state is None else self._allowed(state, scores, len(allowed)))
        self._states = states  # the next step only needs this step's states as parents
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for r, ids in enumerate(allowed):
            if ids is None:
                mask[r] = True  # a finished row: leave it alone
            else:
                mask[r, ids] = True
        constrained = scores.masked_fill(~mask, float("-inf"))
        for r, ids in enumerate(allowed):  # others (min_new_tokens ...) masked all we allow
            if ids is not None and not torch.isfinite(constrained[r, ids]).any():
                constrained[r, ids] = 0.0
        return constrained

    def _state(self, key: tuple[int, ...]) -> ParseState | None:
        """The parse state after the generated ids ``key``; None once the row emitted EOS."""
        if key in self._states:
            return self._states[key]
        parent = self._state(key[:-1])
        last = key[-1]
        if parent is None or last in self.eos:
            state: ParseState | None = None
        else:
            data = self.table.token_bytes[last] if last < len(self.table) else None
            state = self.machine.advance(parent, data) if data else frozenset()
        self._states[key] = state
        return state

    def _valid(self, state: ParseState, token: int) -> bool:
        if token in self.eos:
            return self.machine.is_complete(state)
        data = self.table.token_bytes[token] if token < len(self.table) else None
        return data is not None and bool(self.machine.advance(state, data))

    def _allowed(self, state: ParseState, scores: torch.Tensor, row: int) -> list[int]:
        if not state:
            return self.eos  # the text already left the grammar: end it
        if state == frozenset({()}):
            return self.eos  # complete, and nothing can extend it
        k = min(self.top_k, scores.shape[-1])
        if k > 0:
            top = torch.topk(scores[row], k).indices.tolist()
            ok = [t for t in top if self._valid(state, t)]
            if ok:
                return ok
        ids = self._scan(state)
        if self.machine.is_complete(state):
            ids = [*ids, *self.eos]
        return ids or self.eos

    def _scan(self, state: ParseState) -> list[int]:
        """Every token that keeps ``state`` valid: a walk of the byte-sorted vocabulary.

        Consecutive tokens share prefixes, so the parse states of the shared prefix are
        reused; a byte that kills the parse skips every token under that prefix at once.
        """
        cached = self._scans.get(state)
        if cached is not None:
            return cached
        self.full_scans += 1
        keys, ids = self.table.sorted_bytes, self.table.sorted_ids
        valid: list[int] = []
        prefix_states = [state]  # prefix_states[j]: the state after prev[:j]
        prev = b""
        i, n = 0, len(keys)
        while i < n:
            token = keys[i]
            common = 0
            limit = min(len(prev), len(token), len(prefix_states) - 1)
            while common < limit and prev[common] == token[common]:
                common += 1
            del prefix_states[common + 1 :]
            current = prefix_states[common]
            dead_at = -1
            for j in range(common, len(token)):
                current = self.machine.step(current, token[j])
                if not current:
                    dead_at = j
                    break
                prefix_states.append(current)
            if dead_at < 0:
                valid.append(ids[i])
                prev = token
                i += 1
                continue
            i = _after_prefix(keys, token[: dead_at + 1], i + 1)
            prev = token[:dead_at]
        if len(self._scans) < 256:
            self._scans[state] = valid
        return valid


def _after_prefix(keys: list[bytes], prefix: bytes, start: int) -> int:
    """Index of the first key at or after ``start`` that does not begin with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return len(keys)
    successor = stripped[:-1] + bytes([stripped[-1] + 1])
    return bisect.bisect_left(keys, successor, lo=start)


class JsonSchemaConstraint:
    """Schema-guided decoding for :meth:`Generator.generate(logits_processors=[...])`.

    Called with a batch's prompt width it returns a fresh :class:`JsonSchemaLogitsProcessor`;
    the compiled schema and the token table are built once here and shared by every batch.

    >>> constraint = JsonSchemaConstraint.for_generator(City, generator)
    >>> generator.generate([prompt], logits_processors=[constraint], max_new_tokens=64)
    """

    def __init__(
        self,
        schema: Mapping[str, Any] | type[BaseModel],
        tokenizer: Any,
        eos_token_ids: Iterable[int],
        *,
        top_k: int = 16,
        max_whitespace: int = 16,
    ) -> None:
        self.machine = JsonSchemaMachine(schema, max_whitespace=max_whitespace)
        self.table = TokenTable.for_tokenizer(tokenizer)
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        if not self.eos_token_ids:
            raise ValueError("schema-guided decoding needs at least one EOS token id")
        self.top_k = top_k

    @classmethod
    def for_generator(
        cls, schema: Mapping[str, Any] | type[BaseModel], generator: Any, **kwargs: Any
    ) -> JsonSchemaConstraint:
        """Build from a local generator exposing ``tokenizer`` (and ``eos_token_ids``)."""
        tokenizer = getattr(generator, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(
                f"constrained decoding needs a local generator with a tokenizer "
                f"(ragkit's Generator); {type(generator).__name__} has none"
            )
        eos = getattr(generator, "eos_token_ids", None)
        if not eos:
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return cls(schema, tokenizer, eos, **kwargs)

    def __call__(self, prompt_width: int) -> JsonSchemaLogitsProcessor:
        return JsonSchemaLogitsProcessor(
            self.machine, self.table, self.eos_token_ids, prompt_width, self.top_k
        )
