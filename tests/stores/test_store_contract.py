"""One suite, every store: what :class:`ragkit.index.VectorStore` promises, checked against the
index directory (FAISS + SQLite) and PostgreSQL + pgvector alike.

The ``pgvector`` parameter needs a PostgreSQL server with pgvector (tests/stores/conftest.py
starts one or uses ``RAGKIT_TEST_POSTGRES_URL``) and is skipped, with the reason, without one.
What only one store does (generations and FAISS files; concurrent writers, SQL plans) is tested
in tests/ragkit/test_index.py and tests/stores/test_pgvector.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sample_docs import numbered_docs

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.errors import IndexFormatError, InvalidQueryError, RagkitError
from ragkit.index import Index, VectorStore, index_paths
from ragkit.retrieval import BM25Retriever, DenseRetriever, HybridRetriever, MMRReranker
from ragkit.schema import Document, Hit
from ragkit.stores import PgVectorIndex, is_postgres_url, open_or_create_store, open_store

CHARS = ChunkingSettings(unit="chars", chunk_size=80, chunk_overlap=10)
WHOLE = ChunkingSettings(unit="chars", chunk_size=400, chunk_overlap=0)

STORES = ["index", "pgvector"]


@pytest.fixture(params=STORES)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh store goes: an index directory, or a PostgreSQL URL naming a new schema."""
    if request.param == "pgvector":
        return str(request.getfixturevalue("pg_url"))  # skips without PostgreSQL + pgvector
    return str(tmp_path / "idx")


@pytest.fixture()
def store(target: str, tiny_embedder: Embedder) -> Iterator[VectorStore]:
    with open_or_create_store(target, tiny_embedder, CHARS) as opened:
        yield opened


def doc_ids(hits: list[Hit]) -> set[str]:
    return {h.chunk.document_id for h in hits}


def committed(store: VectorStore, documents: list[Document]) -> VectorStore:
    store.add_documents(documents)
    store.commit()
    return store


def test_the_target_chooses_the_store(target: str, tiny_embedder: Embedder) -> None:
    with open_or_create_store(target, tiny_embedder, CHARS) as store:
        expected = PgVectorIndex if is_postgres_url(target) else Index
        assert type(store) is expected


def test_staged_changes_are_invisible_until_commit(store: VectorStore) -> None:
    assert not store.has_pending_changes
    chunks = store.add_documents(numbered_docs("a", 3))
    assert store.has_pending_changes and len(chunks) > 3
    assert store.search("river", k=3) == [] and store.search_lexical("river", k=3) == []
    assert store.counts().documents == 0
    assert isinstance(store.commit(), int)
    assert not store.has_pending_changes
    counts = store.counts()
    assert (counts.files, counts.documents, counts.chunks) == (0, 3, len(chunks))
    store.commit()  # nothing staged: nothing changes
    assert store.counts() == counts
    hits = store.search("the river number 1", k=3)
    assert [h.rank for h in hits] == [0, 1, 2] and {h.retriever for h in hits} == {"dense"}
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_documents_chunks_and_vectors_read_back_after_reopening(
    target: str, tiny_embedder: Embedder
) -> None:
    with open_or_create_store(target, tiny_embedder, CHARS) as store:
        committed(store, numbered_docs("a", 3))
        location = str(store.directory)
    with open_store(target) as reopened:  # the recorded embedder by default
        assert str(reopened.directory) == location
        assert reopened.embedder.name == tiny_embedder.name
        assert reopened.manifest.dimension == reopened.embedder.dimension == 32
        assert reopened.manifest.chunking == CHARS
        assert reopened.counts().documents == 3
        hit = reopened.search("river number 2", k=1)[0]
        doc = reopened.document(hit.chunk.document_id)
        assert doc is not None and doc.metadata == {"group": "a", "n": int(doc.id[1:])}
        assert doc.text[hit.chunk.start : hit.chunk.end] == hit.chunk.text
        assert reopened.chunk(hit.chunk.id) == hit.chunk
        assert reopened.document("missing") is None and reopened.chunk("missing") is None
        vectors = reopened.vectors_of([hit.chunk.id, "missing"])
        assert list(vectors) == [hit.chunk.id]
        assert np.linalg.norm(vectors[hit.chunk.id]) == pytest.approx(1.0, abs=1e-4)
        chunks = reopened.store.chunks_of_document(hit.chunk.document_id)
        assert hit.chunk in chunks and [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_search_vector_is_search_by_the_query_embedding(store: VectorStore) -> None:
    committed(store, numbered_docs("a", 4) + numbered_docs("b", 4, topic="war"))
    query = store.embedder.encode_query("war number 2")
    by_vector = store.search_vector(query, k=4, filters={"group": "b"})
    by_text = store.search("war number 2", k=4, filters={"group": "b"})
    assert [h.chunk.id for h in by_vector] == [h.chunk.id for h in by_text]
    assert [h.score for h in by_vector] == pytest.approx([h.score for h in by_text], abs=1e-5)


def test_adding_a_document_again_replaces_it_and_delete_removes_it(store: VectorStore) -> None:
    committed(store, numbered_docs("a", 3))
    before = store.counts().chunks
    committed(store, [Document(id="a1", text="short replacement text", source="a1.txt")])
    assert store.counts().documents == 3 and store.counts().chunks < before
    assert [c.text for c in store.store.chunks_of_document("a1")] == ["short replacement text"]
    store.delete_documents(["a0"])
    store.commit()
    assert store.counts().documents == 2 and store.document("a0") is None
    assert "a0" not in doc_ids(store.search("river", k=50))


def test_replace_file_and_delete_file(store: VectorStore) -> None:
    store.replace_file("k", "k.txt", "h1", numbered_docs("a", 3))
    store.commit()
    assert store.store.file_hash("k") == "h1" and store.store.file_keys() == ["k"]
    assert store.store.documents_of_file("k") == ["a0", "a1", "a2"]
    assert store.counts().files == 1 and store.counts().documents == 3
    store.replace_file("k", "k.txt", "h2", [Document(id="a9", text="new text", source="k.txt")])
    store.commit()
    assert store.store.documents_of_file("k") == ["a9"] and store.store.file_hash("k") == "h2"
    assert store.counts().chunks == 1
    committed(store, numbered_docs("b", 2))
    store.delete_documents(["b0"])
    store.delete_file("k")
    store.commit()
    assert store.counts().files == 0 and store.store.file_hash("k") is None
    assert store.document("b0") is None and store.document("a9") is None
    assert doc_ids(store.search("river", k=10)) == {"b1"}


def test_staging_refuses_bad_input_and_stages_nothing_then(store: VectorStore) -> None:
    docs = numbered_docs("a", 2)
    chunks = store.splitter.split_many(docs)
    vectors = store.embedder.encode([c.text for c in chunks])
    with pytest.raises(RagkitError, match="chunks but"):
        store.add_documents(docs, chunks=chunks, vectors=vectors[:-1])
    with pytest.raises(IndexFormatError, match="dimension 16"):
        store.add_documents(docs, chunks=chunks, vectors=vectors[:, :16])
    with pytest.raises(RagkitError, match="duplicate document ids"):
        store.add_documents([docs[0], docs[0]])
    with pytest.raises(IndexFormatError, match="dimension 16"):
        store.replace_file("k", "k.txt", "h", docs, chunks=chunks, vectors=vectors[:, :16])
    assert not store.has_pending_changes
    store.add_documents(docs, chunks=chunks, vectors=vectors)
    with pytest.raises(RagkitError, match="already staged"):
        store.add_documents(docs[:1])
    store.commit()
    assert store.counts().documents == 2 and store.counts().files == 0


def test_queries_are_checked(store: VectorStore) -> None:
    committed(store, numbered_docs("a", 1))
    for search in (store.search, store.search_lexical):
        with pytest.raises(InvalidQueryError, match="empty"):
            search("   ")
        with pytest.raises(InvalidQueryError, match="k must be positive"):
            search("river", k=0)
    query = store.embedder.encode_query("river")
    with pytest.raises(InvalidQueryError, match="k must be positive"):
        store.search_vector(query, k=0)
    with pytest.raises(InvalidQueryError, match="dimension 16"):
        store.search_vector(query[:, :16], k=1)


FILTERED: list[tuple[dict[str, Any], set[str]]] = [
    ({"group": "b"}, {"b0", "b1", "b2", "b3"}),
    ({"n": [1, 2]}, {"a1", "a2", "b1", "b2"}),
    ({"n": {"$in": [1, 2.0]}}, {"a1", "a2", "b1", "b2"}),
    ({"group": {"$ne": "a"}, "n": {"$in": [3]}}, {"b3"}),
    ({"n": {"$nin": [0, 1]}}, {"a2", "a3", "b2", "b3"}),
    ({"group": "none"}, set()),
    ({"n": "1"}, set()),  # a string never equals a number
    ({"document_id": "a2"}, {"a2"}),
    ({"source": ["a1.txt", "b2.txt"]}, {"a1", "b2"}),
    ({"n": {"$in": []}}, set()),
]


def test_filters_select_the_same_documents_in_every_search(store: VectorStore) -> None:
    committed(store, numbered_docs("a", 4) + numbered_docs("b", 4, topic="war"))
    for filters, expected in FILTERED:
        assert doc_ids(store.search("river", k=200, filters=filters)) == expected, filters
        lexical = store.search_lexical("river war", k=200, filters=filters)
        assert doc_ids(lexical) == expected, filters
    chunk_id = store.search("river", k=1)[0].chunk.id
    assert [h.chunk.id for h in store.search("war", k=5, filters={"chunk_id": chunk_id})] == [
        chunk_id
    ]
    store.delete_documents(["b3"])
    store.commit()
    assert store.search("river", k=50, filters={"group": "b", "n": 3}) == []


def test_filters_on_odd_metadata_keys(store: VectorStore) -> None:
    # keys are data, never SQL or a JSON path: quotes, backslashes, dots, non-ASCII, controls
    odd_keys = ['say "hi"', "back\\slash", "a.b", "$[0]", "é", "名前", "tab\there", "x'); --"]
    docs = numbered_docs("a", len(odd_keys) + 1)
    for n, key in enumerate(odd_keys):
        docs[n].metadata[key] = n
        docs[n].metadata["flag"] = n % 2 == 0
    committed(store, docs)
    for n, key in enumerate(odd_keys):
        for filters in ({key: n}, {key: [n, 99]}):
            assert doc_ids(store.search("river", k=50, filters=filters)) == {f"a{n}"}, filters
        assert f"a{n}" not in doc_ids(store.search("river", k=50, filters={key: {"$ne": n}}))
        assert store.search("river", k=50, filters={key: n + 1}) == []
    flagged = doc_ids(store.search("river", k=50, filters={"flag": True}))
    assert flagged == {"a0", "a2", "a4", "a6"}  # JSON true reads as 1 in both stores
    assert doc_ids(store.search("river", k=50, filters={"flag": 1})) == flagged


def test_bad_filters_are_refused(store: VectorStore) -> None:
    committed(store, numbered_docs("a", 1))
    for search in (store.search, store.search_lexical):
        with pytest.raises(RagkitError, match="unknown filter operator"):
            search("x", filters={"group": {"$gt": 1}})
        with pytest.raises(RagkitError, match="needs a list"):
            search("x", filters={"group": {"$in": "a"}})


def test_lexical_search_stems_drops_stopwords_and_follows_updates(store: VectorStore) -> None:
    committed(
        store,
        [
            Document(id="r", text="The rivers were running quickly to the sea.", source="r", metadata={"lang": "en"}),
            Document(id="c", text="Cats sleep all day long.", source="c", metadata={"lang": "en"}),
            Document(id="f", text="Les rivières coulent vers la mer.", source="f", metadata={"lang": "fr"}),
        ],
    )  # fmt: skip
    hits = store.search_lexical("river runs", k=5)
    assert [h.chunk.document_id for h in hits] == ["r"]  # stemming: runs/running, river/rivers
    assert hits[0].retriever == "bm25" and hits[0].score > 0 and hits[0].rank == 0
    assert doc_ids(store.search_lexical("cats and rivers", k=5)) == {"r", "c"}  # any term
    assert store.search_lexical("the and of", k=5) == []  # stopwords only
    assert store.search_lexical("it's a \\ 'quote' & | ! <-> :*", k=5) == []  # never syntax
    assert store.search_lexical("cats", k=5, filters={"lang": "fr"}) == []
    store.add_documents(
        [Document(id="c", text="Dogs and rivers.", source="c", metadata={"lang": "en"})]
    )
    store.delete_documents(["f"])
    store.commit()
    assert store.search_lexical("cats", k=5) == []
    assert doc_ids(store.search_lexical("rivers", k=5)) == {"r", "c"}


def test_incremental_ingest(store: VectorStore, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("one", "two", "three"):
        (folder / f"{name}.txt").write_text(f"The {name} river flows to the city.\n" * 4)
    first = index_paths(store, [folder])
    assert first.files_indexed == 3 and first.chunks_total == store.counts().chunks > 0
    assert len(store.store.file_keys()) == 3
    second = index_paths(store, [folder])
    assert second.files_indexed == 0 and second.files_unchanged == 3
    (folder / "two.txt").write_text("Bread rises in a warm kitchen.")
    (folder / "three.txt").unlink()
    third = index_paths(store, [folder], prune=True)
    assert third.files_indexed == 1 and third.files_unchanged == 1
    assert third.files_removed == 1 and store.counts().files == 2
    hit = store.search_lexical("bread kitchen", k=1)[0]
    assert hit.chunk.source.endswith("two.txt")


def test_another_embedder_or_chunking_is_refused_on_reopening(
    target: str, tiny_embedder: Embedder
) -> None:
    open_or_create_store(target, tiny_embedder, CHARS).close()
    with pytest.raises(IndexFormatError, match="built with embedder"):
        open_store(target, Embedder("some/other-model"))
    with pytest.raises(IndexFormatError, match="built with chunking"):
        open_or_create_store(target, tiny_embedder, WHOLE)
    with open_or_create_store(target, tiny_embedder) as reopened:  # no chunking: the recorded
        assert reopened.manifest.chunking == CHARS


RETRIEVERS: list[Callable[[VectorStore], Any]] = [
    lambda s: DenseRetriever(s, k=3),
    lambda s: BM25Retriever(s, k=3),
    lambda s: HybridRetriever(s, k=3),
    lambda s: HybridRetriever(s, k=3, mode="weighted"),
]


def test_retrievers_and_mmr_work_on_every_store(store: VectorStore) -> None:
    committed(store, numbered_docs("a", 4) + numbered_docs("b", 4, topic="war"))
    for build in RETRIEVERS:
        retriever = build(store)
        hits = retriever.search("war number 2", filters={"group": "b"})
        assert hits and doc_ids(hits) <= {"b0", "b1", "b2", "b3"}
        assert [h.rank for h in hits] == list(range(len(hits)))
        assert retriever.to_config()["index"] == str(store.directory)
    candidates = store.search("river", k=8)
    reranked = MMRReranker(store, k=4, diversity=0.5).rerank("river", candidates)
    assert len(reranked) == 4 and {h.chunk.id for h in reranked} <= {h.chunk.id for h in candidates}


def test_the_server_reports_the_counts_of_either_store(store: VectorStore) -> None:
    from types import SimpleNamespace

    from ragkit.server.service import RAGService

    committed(store, numbered_docs("a", 3))
    service = RAGService(SimpleNamespace(retriever=DenseRetriever(store, k=2)))  # type: ignore[arg-type]
    stats = service.index_stats()
    assert stats["counts"] == store.counts().model_dump() and stats["counts"]["documents"] == 3
    assert stats["embedder"] == store.embedder.name and stats["retriever"] == "DenseRetriever"
