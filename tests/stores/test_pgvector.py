"""The PostgreSQL + pgvector store against a real server (tests/stores/conftest.py)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sample_docs import numbered_docs as _docs

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.errors import IndexFormatError, InvalidQueryError, RagkitError
from ragkit.index import Index
from ragkit.schema import Document
from ragkit.stores import (
    PgVectorIndex,
    PgVectorMissingError,
    PostgresConnectionError,
    PostgresUnavailableError,
    open_or_create_store,
    open_store,
)
from ragkit.stores.pgvector import redact, split_target

CHARS = ChunkingSettings(unit="chars", chunk_size=80, chunk_overlap=10)
WHOLE = ChunkingSettings(unit="chars", chunk_size=400, chunk_overlap=0)

TOPICS = [
    Document(
        id="rhine",
        text="The Rhine river flows past Strasbourg on its way to the North Sea.",
        source="rhine.txt",
        metadata={"kind": "river"},
    ),
    Document(
        id="cathedral",
        text="Strasbourg cathedral is a gothic church built of pink sandstone.",
        source="cathedral.txt",
        metadata={"kind": "building"},
    ),
    Document(
        id="python",
        text="Python lists are mutable sequences; append adds an item at the end.",
        source="python.txt",
        metadata={"kind": "code"},
    ),
    Document(
        id="bread",
        text="Knead the dough for ten minutes, then let the bread rise for an hour.",
        source="bread.txt",
        metadata={"kind": "recipe"},
    ),
]


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The packaged all-MiniLM-L6-v2: real semantics, loads offline."""
    return Embedder(device="cpu").warm_up()


def _ids(hits: list[Any]) -> list[str]:
    return [h.chunk.document_id for h in hits]


def test_create_add_search_reopen(pg_url: str, minilm: Embedder) -> None:
    with PgVectorIndex.create(pg_url, minilm, WHOLE) as store:
        store.add_documents(TOPICS)
        assert store.search("sandstone church", k=2) == []  # staged, not committed
        assert store.commit() == len(TOPICS)
        assert _ids(store.search("Which church is made of pink stone?", k=2))[0] == "cathedral"
        assert _ids(store.search("how do I add an element to a list", k=1)) == ["python"]
        hits = store.search("bake a loaf", k=3)
        assert hits[0].chunk.document_id == "bread" and hits[0].retriever == "dense"
        assert [h.rank for h in hits] == [0, 1, 2]
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert store.counts().documents == 4 and store.counts().chunks == 4
        assert "password" not in store.directory and "schema=" in store.directory
    with PgVectorIndex.open(pg_url, minilm) as reopened:
        assert reopened.manifest.embedder == minilm.name and reopened.manifest.dimension == 384
        hit = reopened.search("North Sea", k=1)[0]
        doc = reopened.document(hit.chunk.document_id)
        assert doc is not None and doc.text[hit.chunk.start : hit.chunk.end] == hit.chunk.text
        assert doc.metadata == {"kind": "river"}
        assert reopened.chunk(hit.chunk.id) == hit.chunk
        vectors = reopened.vectors_of([hit.chunk.id])
        assert np.linalg.norm(vectors[hit.chunk.id]) == pytest.approx(1.0, abs=1e-4)
        with pytest.raises(InvalidQueryError, match="empty"):
            reopened.search("  ")


def test_hybrid_and_dense_retrievers_work_unchanged(pg_url: str, minilm: Embedder) -> None:
    from ragkit.retrieval import BM25Retriever, DenseRetriever, HybridRetriever, make_retriever

    with PgVectorIndex.create(pg_url, minilm, WHOLE) as store:
        store.add_documents(TOPICS)
        store.commit()
        assert _ids(BM25Retriever(store, k=2).search("Rhine Strasbourg"))[0] == "rhine"
        assert _ids(DenseRetriever(store, k=1).search("a gothic church")) == ["cathedral"]
        hybrid = HybridRetriever(store, k=3).search("Rhine Strasbourg")
        assert _ids(hybrid)[0] == "rhine" and {h.retriever for h in hybrid} == {"hybrid"}
        assert "cathedral" in _ids(hybrid)
        for kind in ("dense", "bm25", "hybrid"):
            hits = make_retriever(store, kind, k=10).search(  # type: ignore[arg-type]
                "Strasbourg river", filters={"kind": "building"}
            )
            assert set(_ids(hits)) == {"cathedral"}, kind
        assert HybridRetriever(store, k=3).to_config()["index"] == store.directory


@contextlib.contextmanager
def store_and_flat_index(
    pg_url: str, embedder: Embedder, tmp_path: Path, docs: list[Document]
) -> Iterator[tuple[PgVectorIndex, Index]]:
    """The same documents in a PostgreSQL store and an exact file index, to compare the two."""
    with (
        PgVectorIndex.create(pg_url, embedder, CHARS) as store,
        Index.create(tmp_path / "idx", embedder, CHARS, index_type="flat") as index,
    ):
        for target in (store, index):
            target.add_documents(docs)
            target.commit()
        yield store, index


FILTER_CASES: list[dict[str, Any]] = [
    {"group": "b"},
    {"n": [1, 2]},
    {"n": {"$in": [1, 2.0]}},
    {"group": {"$ne": "a"}, "n": {"$in": [3]}},
    {"group": "none"},
    {"document_id": "a2"},
    {"source": ["a1.txt", "b2.txt"]},
    {"chunk_id": {"$nin": []}},
    {"n": {"$in": []}},
    {"n": {"$nin": [0, 1]}},
    {"n": {"$nin": [0, None]}},  # NOT IN with a NULL: nothing
    {"n": {"$in": [0, None]}},
    {"n": None},
    {"n": {"$ne": None}},
    {"flag": True},  # JSON true reads as 1, as in SQLite's json_extract
    {"flag": 1},
    {"flag": False},
    {"flag": {"$ne": True}},  # chunks without the key match $ne
    {"n": "1"},  # a string never equals a number
    {"tag": "x"},
    {"tag": {"$nin": ["x"]}},
    {"nested": {"$ne": 1}},
    {"odd key \"'); --": 7},  # keys are parameters, never SQL
    {"odd key \"'); --": {"$ne": 7}},
    {"clé": "v"},  # a non-ASCII key, stored escaped in SQLite's JSON text
    {"clé": {"$in": ["v", "w"]}},
]


def _filter_docs() -> list[Document]:
    docs = _docs("a", 4) + _docs("b", 4, topic="war")
    docs[0].metadata["flag"] = True
    docs[1].metadata["flag"] = False
    docs[2].metadata["flag"] = 1
    docs[3].metadata["tag"] = None
    docs[4].metadata["tag"] = "x"
    docs[5].metadata["nested"] = {"a": 1}
    docs[6].metadata["odd key \"'); --"] = 7
    docs[7].metadata["clé"] = "v"
    return docs


def test_filters_select_the_same_chunks_as_the_file_index(
    pg_url: str, tiny_embedder: Embedder, tmp_path: Path
) -> None:
    with store_and_flat_index(pg_url, tiny_embedder, tmp_path, _filter_docs()) as (store, index):
        for filters in FILTER_CASES:
            want = {h.chunk.id for h in index.search("river", k=200, filters=filters)}
            got = {h.chunk.id for h in store.search("river", k=200, filters=filters)}
            assert got == want, filters
            lexical = {
                h.chunk.id for h in store.search_lexical("river war", k=200, filters=filters)
            }
            assert lexical == want, filters
        odd = store.search("river", k=200, filters={"odd key \"'); --": 7})
        assert {h.chunk.document_id for h in odd} == {"b2"}
        # the file index's own test cases, as there
        hits = store.search("river", k=50, filters={"group": "b"})
        assert hits and {h.chunk.metadata["group"] for h in hits} == {"b"}
        hits = store.search("river", k=50, filters={"group": {"$ne": "a"}, "n": {"$in": [3]}})
        assert {(h.chunk.metadata["group"], h.chunk.metadata["n"]) for h in hits} == {("b", 3)}
        store.delete_documents(["b3"])
        store.commit()
        assert store.search("river", k=50, filters={"group": "b", "n": 3}) == []
        with pytest.raises(RagkitError, match="unknown filter operator"):
            store.search("x", filters={"group": {"$gt": 1}})
        with pytest.raises(RagkitError, match="needs a list"):
            store.search("x", filters={"group": {"$in": "a"}})


def test_two_concurrent_writers(pg_url: str, tiny_embedder: Embedder) -> None:
    PgVectorIndex.create(pg_url, tiny_embedder, CHARS).close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            with PgVectorIndex.open(pg_url, tiny_embedder) as store:
                barrier.wait()
                for round_ in range(8):
                    store.add_documents(_docs(f"{name}{round_}-", 2))
                    # both replace the same file each round: one wins, nothing is duplicated
                    store.replace_file(
                        "shared", "shared.txt", f"{name}{round_}", _docs(f"shared-{name}", 2)
                    )
                    store.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with PgVectorIndex.open(pg_url, tiny_embedder) as store:
        shared = store.store.documents_of_file("shared")
        assert shared in (["shared-x0", "shared-x1"], ["shared-y0", "shared-y1"])
        assert store.counts().documents == 2 * 8 * 2 + 2
        assert store.store.file_hash("shared") in ("x7", "y7")
        per_doc = {h.chunk.document_id for h in store.search("river", k=500)}
        assert len(per_doc) == store.counts().documents


def test_a_failed_commit_changes_nothing_and_others_see_only_commits(
    pg_url: str, tiny_embedder: Embedder
) -> None:
    with (
        PgVectorIndex.create(pg_url, tiny_embedder, CHARS) as writer,
        PgVectorIndex.open(pg_url, tiny_embedder) as reader,
    ):
        writer.add_documents(_docs("a", 2))
        assert reader.counts().documents == 0
        writer.commit()
        assert reader.counts().documents == 2
        docs = _docs("b", 2)
        chunks = writer.splitter.split_many(docs)
        clash = chunks[0].model_copy(update={"id": chunks[-1].id})  # duplicate chunk id
        writer.delete_documents(["a0"])
        writer.add_documents(docs, chunks=[clash, *chunks[1:]])
        with pytest.raises(Exception, match=r"duplicate key|unique"):
            writer.commit()
        assert reader.counts().documents == 2 and reader.document("a0") is not None


def test_wrong_embedder_missing_store_and_double_create_are_refused(
    pg_url: str, tiny_embedder: Embedder, minilm: Embedder
) -> None:
    with pytest.raises(IndexFormatError, match="no ragkit store"):
        PgVectorIndex.open(pg_url, tiny_embedder)
    PgVectorIndex.create(pg_url, tiny_embedder, CHARS).close()
    with PgVectorIndex.open(pg_url) as reopened:  # the recorded embedder by default
        assert reopened.embedder.name == tiny_embedder.name
        assert reopened.embedder.dimension == reopened.manifest.dimension == 32
    with pytest.raises(IndexFormatError, match="built with embedder"):
        PgVectorIndex.open(pg_url, minilm)
    with pytest.raises(IndexFormatError, match="built with embedder"):
        open_store(pg_url, Embedder("some/other-model"))
    with pytest.raises(IndexFormatError, match="already exists"):
        PgVectorIndex.create(pg_url, tiny_embedder, CHARS)
    with pytest.raises(RagkitError, match="plain identifier"):
        PgVectorIndex.open(pg_url.split("?")[0] + "?schema=bad-name")
    with pytest.raises(RagkitError, match="HNSW"):
        open_or_create_store(pg_url, tiny_embedder, CHARS, index_type="ivf")
    assert PgVectorIndex.drop(pg_url) is True
    assert PgVectorIndex.drop(pg_url) is False


def test_connection_errors_never_show_the_password(pg_server: str) -> None:
    with pytest.raises(PostgresConnectionError) as info:
        open_store("postgresql://alice:s3cret-pw@127.0.0.1:1/db")
    assert "s3cret-pw" not in str(info.value) and "127.0.0.1:1/db" in str(info.value)
    with pytest.raises(
        PostgresConnectionError, match="invalid PostgreSQL connection string"
    ) as info:
        PgVectorIndex.open("host=h password=s3cret-pw bogus")
    assert "s3cret-pw" not in str(info.value)
    wrong_user = pg_server.replace("ragkit@", "nobody_here:s3cret-pw@")
    with pytest.raises(PostgresConnectionError) as info:
        PgVectorIndex.open(wrong_user)
    assert "s3cret-pw" not in str(info.value)
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u@h:5/db"
    assert split_target("postgresql://h/db?sslmode=disable&schema=docs") == (
        "postgresql://h/db?sslmode=disable",
        "docs",
    )


def test_missing_client_and_missing_extension_give_clear_errors(
    pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from psycopg import sql

    database = "no_vector_db"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        admin.execute("DROP ROLE IF EXISTS plain_user")
        admin.execute("CREATE ROLE plain_user LOGIN")
    url = pg_server.replace("ragkit@", "plain_user@").rsplit("/", 1)[0] + f"/{database}"
    with pytest.raises(PgVectorMissingError, match="CREATE EXTENSION vector"):
        PgVectorIndex.open(url)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
        with pytest.raises(PostgresUnavailableError, match=r"ragkit\[postgres\]"):
            open_store(pg_server)


def test_agrees_with_the_faiss_file_index(pg_url: str, minilm: Embedder, tmp_path: Path) -> None:
    docs = [
        *TOPICS,
        Document(id="alps", text="The Alps are the highest mountain range in Europe.", source="a"),
        Document(id="jazz", text="Jazz music began in New Orleans in the early 1900s.", source="j"),
        Document(id="tea", text="Green tea is brewed at about eighty degrees Celsius.", source="t"),
    ]
    queries = [
        "mountains in Europe",
        "where did jazz start",
        "water temperature for tea",
        "gothic church",
        "river to the North Sea",
        "append to a list",
        "letting dough rise",
    ]
    with (
        PgVectorIndex.create(pg_url, minilm, WHOLE) as store,
        Index.create(tmp_path / "idx", minilm, WHOLE, index_type="flat") as index,
    ):
        chunks = store.splitter.split_many(docs)
        vectors = minilm.encode([c.text for c in chunks])  # embedded once, loaded into both
        store.add_documents(docs, chunks=chunks, vectors=vectors)
        store.commit()
        index.add_documents(docs, chunks=chunks, vectors=vectors)
        index.commit()
        for query in queries:
            ours, theirs = store.search(query, k=3), index.search(query, k=3)
            assert ours[0].chunk.id == theirs[0].chunk.id, query
            assert ours[0].score == pytest.approx(theirs[0].score, abs=1e-4), query
        assert {c.id for c, _ in store.iter_chunks(batch=2)} == {c.id for c in chunks}


def test_exact_search_scans_every_chunk_and_matches_the_flat_index(
    pg_url: str, tiny_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _docs("a", 6) + _docs("b", 6, topic="war")
    with store_and_flat_index(pg_url, tiny_embedder, tmp_path, docs) as (store, index):
        statements: list[tuple[Any, Any]] = []
        execute = store.conn.execute

        def recording(statement: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append((statement, params))
            return execute(statement, params, **kwargs)

        monkeypatch.setattr(store.conn, "execute", recording)

        def plan_of_last_search() -> str:
            from psycopg import sql

            statement, params = statements[-1]
            # with sequential scans priced out, only a statement that cannot use the HNSW
            # index still scans the table
            execute("SET enable_seqscan = off")
            try:
                rows = execute(sql.SQL("EXPLAIN ") + statement, params).fetchall()
            finally:
                execute("RESET enable_seqscan")
            return "\n".join(str(r[0]) for r in rows)

        for exact in (False, True):
            store.exact_search = exact
            for query, filters in [("river city", None), ("war", {"group": "b"})]:
                ours = store.search(query, k=4, filters=filters)
                plan = plan_of_last_search()
                assert ("Seq Scan" in plan) == exact, plan
                assert ("hnsw" in plan.lower() or "Index Scan" in plan) != exact, plan
                if exact:
                    theirs = index.search(query, k=4, filters=filters)
                    assert [h.score for h in ours] == pytest.approx(
                        [h.score for h in theirs], abs=1e-5
                    )
                    # the same chunks, up to ties with the last score
                    last = theirs[-1].score + 1e-5
                    assert {h.chunk.id for h in ours if h.score > last} == {
                        h.chunk.id for h in theirs if h.score > last
                    }
