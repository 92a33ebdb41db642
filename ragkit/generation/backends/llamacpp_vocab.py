"""A GGUF's vocabulary as bytes per token, and its on-disk cache.

Why a cache: reading 262,144 token pieces through llama.cpp's C API costs about a second per
process, a sixth of a cold ``ragkit ask``. The pieces never change for a given file, so they are
written once beside ragkit's other caches, keyed by the file's path, size and modification time
(as converted checkpoints are), in a plain format — a JSON header line, little-endian int16
lengths, then the concatenated bytes — never pickle. A cache file that does not parse is ignored
and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ragkit.atomic import atomic_write_bytes

VOCAB_FORMAT = 1
"""Bump when the cache layout changes: old files are then ignored."""


@dataclass(frozen=True)
class Vocabulary:
    """Every token's bytes and role, read once from the GGUF's tokenizer."""

    pieces: tuple[bytes | None, ...]
    """The bytes each token writes; None for control/unknown/unused tokens (never text)."""
    eos_ids: frozenset[int]
    """Tokens that end generation (llama.cpp's end-of-generation set: EOS, end-of-turn...)."""
    bos_id: int | None
    add_bos: bool
    bos_text: str = ""
    """How the chat template spells BOS / EOS (``bos_token`` / ``eos_token`` in Jinja)."""
    eos_text: str = ""


def vocabulary_cache_path(gguf: Path) -> Path:
    """Where the vocabulary of ``gguf`` is cached (the file need not exist yet)."""
    from ragkit.generation.checkpoints import cache_dir, file_identity

    material = f"{file_identity(gguf)}|v{VOCAB_FORMAT}"
    key = hashlib.sha256(material.encode()).hexdigest()[:16]
    return cache_dir() / "llamacpp-vocab" / f"{gguf.stem}-{key}.vocab"


def encode_vocabulary(vocab: Vocabulary) -> bytes:
    header = {
        "format": VOCAB_FORMAT,
        "size": len(vocab.pieces),
        **{k: v for k, v in asdict(vocab).items() if k != "pieces"},
        "eos_ids": sorted(vocab.eos_ids),
    }
    lengths = np.array([-1 if p is None else len(p) for p in vocab.pieces], dtype="<i2")
    blob = b"".join(p for p in vocab.pieces if p)
    return json.dumps(header).encode("utf-8") + b"\n" + lengths.tobytes() + blob


def decode_vocabulary(data: bytes) -> Vocabulary:
    """The vocabulary in ``data``; ValueError when it is not a complete cache of this format."""
    line_end = data.index(b"\n")
    header = json.loads(data[:line_end])
    if header.get("format") != VOCAB_FORMAT:
        raise ValueError("another vocabulary cache format")
    size = int(header["size"])
    start = line_end + 1
    lengths = np.frombuffer(data, dtype="<i2", count=size, offset=start)
    offset = start + 2 * size
    if offset + int(lengths[lengths > 0].sum()) != len(data):
        raise ValueError("truncated vocabulary cache")
    pieces: list[bytes | None] = []
    for length in lengths.tolist():
        if length < 0:
            pieces.append(None)
        else:
            pieces.append(data[offset : offset + length])
            offset += length
    return Vocabulary(
        pieces=tuple(pieces),
        eos_ids=frozenset(int(i) for i in header["eos_ids"]),
        bos_id=header["bos_id"],
        add_bos=bool(header["add_bos"]),
        bos_text=str(header["bos_text"]),
        eos_text=str(header["eos_text"]),
    )


def cached_vocabulary(gguf: Path) -> Vocabulary | None:
    """The cached vocabulary of ``gguf``, or None (no cache yet, or an unreadable one)."""
    try:
        return decode_vocabulary(vocabulary_cache_path(gguf).read_bytes())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_vocabulary(gguf: Path, vocab: Vocabulary) -> None:
    """Cache ``vocab`` for ``gguf``; a read-only cache directory just means no cache."""
    with contextlib.suppress(OSError):
        atomic_write_bytes(vocabulary_cache_path(gguf), encode_vocabulary(vocab))


__all__ = [
    "VOCAB_FORMAT",
    "Vocabulary",
    "cached_vocabulary",
    "decode_vocabulary",
    "encode_vocabulary",
    "save_vocabulary",
    "vocabulary_cache_path",
]
