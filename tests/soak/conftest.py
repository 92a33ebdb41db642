"""Soak and fault fixtures: a tiny index and a tiny random Llama behind a real loopback server.

Everything is tiny (a 2-layer BERT embedder, a 1-layer Llama answering 3 tokens), so what the
tests load is the HTTP layer, the stores and their concurrency, not the models.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import build_tiny_llama

from ragkit.embedding import Embedder

sys.path.append(str(Path(__file__).resolve().parent))  # soak_support, soak_load

from soak_support import SENTENCES, build_index, make_rag


@pytest.fixture(scope="session")
def soak_index(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> Path:
    return build_index(tmp_path_factory.mktemp("soak-index") / "idx", tiny_embedder)


@pytest.fixture(scope="session")
def soak_generator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ragkit.generation import Generator

    folder = build_tiny_llama(
        tmp_path_factory.mktemp("soak-llama"),
        SENTENCES,
        hidden_size=32,
        layers=1,
        heads=2,
        kv_heads=1,
        max_positions=2048,
    )
    return Generator(str(folder), device="cpu").warm_up()


@pytest.fixture(scope="session")
def soak_rag(soak_index: Path, soak_generator: Any) -> Any:
    return make_rag(soak_index, soak_generator)
