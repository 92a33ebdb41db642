"""The quality guard of the fast embedding backends, on real data (issue 10).

Every backend that ``auto`` may choose must give vectors within 0.99 mean cosine of fp32 torch
on the shared Wikipedia texts, and SQuAD recall@5 within 0.01 of fp32. The int8 export is the
one at risk (quantising every Linear of MiniLM naively drops to ~0.91 cosine); bf16 is checked
where the CPU has native bf16, because only then is it offered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragkit import Embedder
from ragkit.chunking import ChunkingSettings, RecursiveSplitter
from ragkit.embedding.backends.torch_backend import cpu_has_bf16
from ragkit.embedding.selection import MIN_MEAN_COSINE
from ragkit.models import packaged_embedder_path
from ragkit.schema import Document

pytestmark = pytest.mark.integration

# the backends ``auto`` may choose on a CPU (fp32 ONNX is checked exactly on a tiny model)
FAST_BACKENDS = ["onnx-int8"] + (["torch-bf16"] if cpu_has_bf16() else [])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed-cache")


@pytest.fixture(scope="module")
def embedders(cache: Path) -> dict[str, Embedder]:
    try:
        packaged_embedder_path()
    except Exception as exc:  # pragma: no cover - only without the package
        pytest.skip(str(exc))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGKIT_CACHE_DIR", str(cache))
        return {
            name: Embedder(None, device="cpu", backend=name).warm_up()
            for name in ["torch", *FAST_BACKENDS]
        }


@pytest.fixture(scope="module")
def wiki_chunks(shared_data: Path, embedders: dict[str, Embedder]) -> list[str]:
    reference = embedders["torch"]
    splitter = RecursiveSplitter(
        ChunkingSettings.for_unit("chars", 1000, 100),
        tokenizer=reference.tokenizer,
        max_tokens=reference.max_tokens,
    )
    documents = [
        Document(id=p.stem, source=str(p), text=p.read_text(encoding="utf-8"))
        for p in sorted((shared_data / "wiki").glob("*.txt"))
    ]
    return [c.text for c in splitter.split_many(documents)]


@pytest.fixture(scope="module")
def wiki_reference(embedders: dict[str, Embedder], wiki_chunks: list[str]) -> np.ndarray:
    return embedders["torch"].encode(wiki_chunks)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_wiki_vectors_stay_close_to_fp32(
    backend: str, embedders: dict[str, Embedder], wiki_chunks: list[str], wiki_reference: np.ndarray
) -> None:
    assert len(wiki_chunks) > 50
    expected = wiki_reference
    got = embedders[backend].encode(wiki_chunks)
    cosine = np.sum(expected * got, axis=1)
    assert float(cosine.mean()) >= MIN_MEAN_COSINE, (backend, float(cosine.mean()))


def _squad(shared_data: Path) -> tuple[list[str], list[tuple[str, int]]]:
    data = json.loads((shared_data / "squad_small.json").read_text(encoding="utf-8"))
    paragraphs: list[str] = []
    questions: list[tuple[str, int]] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            paragraphs.append(paragraph["context"])
            for qa in paragraph["qas"]:
                if not qa.get("is_impossible"):
                    questions.append((qa["question"], len(paragraphs) - 1))
    return paragraphs, questions


def _recall_at_5(
    embedder: Embedder, paragraphs: list[str], questions: list[tuple[str, int]]
) -> float:
    corpus = embedder.encode(paragraphs)
    queries = np.vstack([embedder.encode_query(q) for q, _ in questions])
    top = np.argsort(-(queries @ corpus.T), axis=1)[:, :5]
    return float(np.mean([gold in top[i] for i, (_, gold) in enumerate(questions)]))


@pytest.fixture(scope="module")
def squad_reference(embedders: dict[str, Embedder], shared_data: Path) -> float:
    return _recall_at_5(embedders["torch"], *_squad(shared_data))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_squad_recall_within_a_point_of_fp32(
    backend: str, embedders: dict[str, Embedder], shared_data: Path, squad_reference: float
) -> None:
    paragraphs, questions = _squad(shared_data)
    assert len(questions) > 200
    reference = squad_reference
    got = _recall_at_5(embedders[backend], paragraphs, questions)
    assert got >= reference - 0.01, (backend, reference, got)
