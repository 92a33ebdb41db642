"""The llama.cpp vocabulary cache: exact round trip, keyed by the file, never trusted if damaged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragkit.generation.backends.llamacpp_vocab import (
    Vocabulary,
    cached_vocabulary,
    decode_vocabulary,
    encode_vocabulary,
    save_vocabulary,
    vocabulary_cache_path,
)

VOCAB = Vocabulary(
    pieces=(None, None, b" Paris", b"", "é".encode(), b"\xe2\x82", b"\n"),
    eos_ids=frozenset({0, 6}),
    bos_id=1,
    add_bos=True,
    bos_text="<bos>",
    eos_text="<eos>",
)


@pytest.fixture
def gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake")
    return path


def test_round_trip_keeps_every_piece_and_field() -> None:
    assert decode_vocabulary(encode_vocabulary(VOCAB)) == VOCAB


def test_the_cache_is_read_back_and_keyed_by_the_file(gguf: Path) -> None:
    assert cached_vocabulary(gguf) is None
    save_vocabulary(gguf, VOCAB)
    assert cached_vocabulary(gguf) == VOCAB
    os.utime(gguf, ns=(1, 1))  # a replaced model file: another key, so no stale vocabulary
    assert cached_vocabulary(gguf) is None


def test_a_damaged_cache_is_ignored(gguf: Path) -> None:
    save_vocabulary(gguf, VOCAB)
    path = vocabulary_cache_path(gguf)
    data = path.read_bytes()
    for broken in (
        data[:-1],
        data + b"x",
        b"not a cache",
        data.replace(b'"format": 1', b'"format": 9'),
    ):
        path.write_bytes(broken)
        assert cached_vocabulary(gguf) is None
