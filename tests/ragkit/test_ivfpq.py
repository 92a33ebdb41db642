"""IVF-PQ vector indexes: recall, filters, memory-mapped loading, relocation, use through Index."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.errors import IndexFormatError
from ragkit.index import Index
from ragkit.index.vectors import VectorIndex, ivfpq_nprobe, ivfpq_shape
from ragkit.schema import Document

DIM = 32
N = 4000


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    """Unit vectors around cluster centres (random high-d vectors have no meaningful neighbours)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered(N, seed=1)
    ids = np.arange(N, dtype=np.int64) * 7 + 3  # ids are not positions
    queries = clustered(50, seed=2)
    return ids, vectors, queries


@pytest.fixture(scope="module")
def built(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> VectorIndex:
    ids, vectors, _ = data
    index = VectorIndex(DIM, "ivfpq")
    index.rebuild(ids, vectors)
    return index


def exact_top(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    ids, vectors, queries = data
    scores = queries @ vectors.T
    if allowed is not None:
        scores[:, ~np.isin(ids, allowed)] = -np.inf
    return ids[np.argsort(-scores, axis=1)[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def stored(data: tuple[np.ndarray, np.ndarray, np.ndarray]):  # type: ignore[no-untyped-def]
    ids, vectors, _ = data
    row = {int(i): r for r, i in enumerate(ids)}
    return lambda vids: vectors[[row[int(v)] for v in vids]]


def test_shape_follows_corpus_size() -> None:
    assert ivfpq_shape(384, 100_000_000) == (8192, 96, 8)  # capped
    assert ivfpq_shape(384, 10_000_000) == (8192, 96, 8)
    assert ivfpq_shape(384, 1_000_000) == (4096, 96, 8)
    assert ivfpq_shape(384, 100_000) == (1024, 96, 8)
    # a fixed share of the lists is probed; small and pre-cap (2048-list) indexes probe 32
    assert [ivfpq_nprobe(n) for n in (1, 16, 1024, 2048, 4096, 8192)] == [1, 16, 32, 32, 64, 128]
    assert VectorIndex.training_size(10_000_000) == 40 * 8192
    assert VectorIndex.training_size(1_000_000) == 40 * 4096
    nlist, m, nbits = ivfpq_shape(DIM, N)
    assert (m, DIM % m) == (8, 0) and nbits < 8 and nlist * 39 <= N
    assert ivfpq_shape(384, 1) == (1, 96, 1)
    assert 384 % ivfpq_shape(384, 5000)[1] == 0 and 100 % ivfpq_shape(100, 5000)[1] == 0


def test_recall_against_exact_search(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], built: VectorIndex
) -> None:
    _, _, queries = data
    truth = exact_top(data, 10)
    _, approximate = built.search(queries, 10)
    _, reranked = built.search(queries, 10, exact=stored(data))
    assert built.kind == "ivfpq" and built.ntotal == N
    assert recall(approximate, truth) > 0.3  # 6-bit codes at this size: PQ alone is coarse
    assert recall(reranked, truth) > 0.8  # 0.85 measured; PQ alone 0.40
    # the exact re-ranking returns exact inner products, best first
    scores, found = built.search(queries[:1], 5, exact=stored(data))
    ids, vectors, _ = data
    expected = vectors[np.searchsorted(ids, found[0])] @ queries[0]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5)
    assert list(scores[0]) == sorted(scores[0], reverse=True)


def test_filters_restrict_results(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], built: VectorIndex
) -> None:
    ids, _, queries = data
    allowed = ids[::5]
    for exact in (None, stored(data)):
        _, found = built.search(queries, 10, allowed, exact=exact)
        assert np.isin(found[found >= 0], allowed).all()
        assert (found >= 0).mean() > 0.9
    _, found = built.search(queries, 10, allowed, exact=stored(data))
    assert recall(found, exact_top(data, 10, allowed)) > 0.8
    scores, found = built.search(queries[:2], 10, np.zeros(0, dtype=np.int64))
    assert (found == -1).all() and np.isinf(scores).all()


def test_save_and_load_in_memory_and_memory_mapped(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray, np.ndarray], built: VectorIndex
) -> None:
    import faiss

    _, _, queries = data
    path = tmp_path / "vectors-1.faiss"
    built.save(path)
    expected = built.search(queries, 10)
    in_memory = VectorIndex.load(path, DIM, "ivfpq", mmap=False)
    mapped = VectorIndex.load(path, DIM, "ivfpq")  # ivfpq maps by default
    assert in_memory.mmap_source is None and mapped.mmap_source == path
    lists = faiss.downcast_InvertedLists(mapped._index.invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)
    assert not isinstance(faiss.downcast_InvertedLists(in_memory._index.invlists), type(lists))
    for loaded in (in_memory, mapped):
        assert loaded.kind == "ivfpq" and loaded.ntotal == N
        scores, found = loaded.search(queries, 10)
        np.testing.assert_array_equal(found, expected[1])
        np.testing.assert_allclose(scores, expected[0], rtol=1e-6)
    # a mapped index is read-only, and saving it copies its file (no absolute paths inside)
    with pytest.raises(IndexFormatError, match="read-only"):
        mapped.add(np.array([1], dtype=np.int64), queries[:1])
    copy = tmp_path / "copy" / "vectors-2.faiss"
    mapped.save(copy)
    assert copy.read_bytes() == path.read_bytes()
    # the temporary file of the atomic write is gone
    assert sorted(p.name for p in copy.parent.iterdir()) == ["vectors-2.faiss"]


def test_relocated_directory_still_loads(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray, np.ndarray], built: VectorIndex
) -> None:
    _, _, queries = data
    first = tmp_path / "first"
    built.save(first / "vectors-1.faiss")
    expected = built.search(queries, 10)[1]
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    assert not first.exists()
    loaded = VectorIndex.load(moved / "vectors-1.faiss", DIM, "ivfpq", mmap=True)
    assert loaded.mmap_source == moved / "vectors-1.faiss"
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], expected)


def test_bad_input_gives_clear_errors(tmp_path: Path, built: VectorIndex) -> None:
    with pytest.raises(IndexFormatError, match="dimension"):
        built.search(np.zeros((1, DIM + 1), dtype=np.float32), 3)
    index = VectorIndex(DIM, "ivfpq")
    with pytest.raises(IndexFormatError, match="ids but"):
        index.rebuild(np.arange(3, dtype=np.int64), np.zeros((2, DIM), dtype=np.float32))
    path = tmp_path / "vectors-1.faiss"
    built.save(path)
    with pytest.raises(IndexFormatError, match="dimension"):
        VectorIndex.load(path, DIM * 2, "ivfpq")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(IndexFormatError, match="cannot read"):
        VectorIndex.load(path, DIM, "ivfpq")


def test_tiny_corpora_work(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, vectors, queries = data
    for n in (1, 3, 30):  # fewer vectors than 2**8 PQ centroids: fewer bits, still searchable
        index = VectorIndex(DIM, "ivfpq")
        index.rebuild(ids[:n], vectors[:n])
        _, found = index.search(queries[:3], 10, exact=stored(data))
        assert found.shape == (3, min(n, 10))
        # every vector is a re-ranking candidate here, so the answer is the exact one
        best = ids[:n][np.argsort(-(vectors[:n] @ queries[0]))[: min(n, 10)]]
        assert list(found[0]) == list(best)


def test_index_with_ivfpq_ingests_searches_and_reloads(
    tmp_path: Path, tiny_embedder: Embedder
) -> None:
    chunking = ChunkingSettings(unit="chars", chunk_size=80, chunk_overlap=10)
    topics = ["river", "mountain", "castle", "music", "war", "paris"]
    docs = [
        Document(
            id=f"d{i}",
            text=f"the {topics[i % 6]} number {i} is near the city {i}.",
            source=f"d{i}.txt",
            metadata={"group": topics[i % 6]},
        )
        for i in range(60)
    ]
    with Index.create(tmp_path / "flat", tiny_embedder, chunking, index_type="flat") as flat:
        flat.add_documents(docs)
        flat.commit()
        expected = [h.score for h in flat.search("the castle number 2", k=5)]
    with Index.create(tmp_path / "pq", tiny_embedder, chunking, index_type="ivfpq") as index:
        index.add_documents(docs)
        index.commit()
        assert index._ensure_vectors().kind == "ivfpq"
        hits = index.search("the castle number 2", k=5)
        # 36 chunks < 40 re-ranking candidates: the result is the exact one
        # (compared by score: the tiny test embedder gives some chunks equal vectors)
        np.testing.assert_allclose([h.score for h in hits], expected, rtol=1e-5)
        filtered = index.search("the castle number 2", k=5, filters={"group": "music"})
        assert filtered and all(h.chunk.metadata["group"] == "music" for h in filtered)
        index.delete_documents(["d2"])
        index.commit()
        assert all(h.chunk.document_id != "d2" for h in index.search("castle number 2", k=10))
        after_delete = [h.chunk.id for h in index.search("the castle number 2", k=4)]
    with Index.open(tmp_path / "pq", tiny_embedder) as reopened:
        assert reopened.manifest.index_type == "ivfpq"
        vectors = reopened._ensure_vectors()
        assert vectors.mmap_source is not None and vectors.ntotal == reopened.counts().chunks
        assert [h.chunk.id for h in reopened.search("the castle number 2", k=4)] == after_delete
        # a commit on an index whose current vectors are memory-mapped rebuilds a new file
        reopened.add_documents(docs[:1])
        reopened.commit()
        assert reopened._ensure_vectors().ntotal == reopened.counts().chunks
    shutil.move(str(tmp_path / "pq"), str(tmp_path / "pq-moved"))
    with Index.open(tmp_path / "pq-moved", tiny_embedder) as moved:
        assert len(moved.search("the river number 1", k=3)) == 3


def test_streaming_rebuild_equals_the_in_memory_rebuild_and_reads_twice() -> None:
    """More vectors than the training sample: the stream picks the same sample rows."""
    dim, n = 16, 60_000
    vectors = clustered(n, seed=5, dim=dim)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    queries = clustered(20, seed=6, dim=dim)
    assert VectorIndex.training_size(n) < n  # the sampling path is exercised

    reads: list[int] = []

    def batches():  # type: ignore[no-untyped-def]
        reads.append(1)
        for start in range(0, n, 7000):
            yield ids[start : start + 7000], vectors[start : start + 7000]

    streamed = VectorIndex(dim, "ivfpq")
    streamed.rebuild_streaming(n, batches)
    in_memory = VectorIndex(dim, "ivfpq")
    in_memory.rebuild(ids, vectors)
    assert len(reads) == 2 and streamed.ntotal == n
    got_scores, got_ids = streamed.search(queries, 10)
    want_scores, want_ids = in_memory.search(queries, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)

    with pytest.raises(IndexFormatError, match="expected 60001 vectors"):
        VectorIndex(dim, "ivfpq").rebuild_streaming(n + 1, batches)
