from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sample_docs import numbered_docs as _docs

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.errors import IndexFormatError
from ragkit.index import Index, index_paths
from ragkit.index.store import ChunkStore
from ragkit.schema import Document

CHARS = ChunkingSettings(unit="chars", chunk_size=80, chunk_overlap=10)


def _consistent(index: Index) -> None:
    vectors = index._ensure_vectors()
    assert vectors.ntotal == index.counts().chunks


def test_create_add_search_reopen(tmp_path: Path, tiny_embedder: Embedder) -> None:
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS) as index:
        index.add_documents(_docs("a", 3))
        index.commit()
        hits = index.search("the river number 1", k=3)
        assert len(hits) == 3
        assert [h.rank for h in hits] == [0, 1, 2]
        assert hits[0].score >= hits[1].score >= hits[2].score
        _consistent(index)
    with Index.open(tmp_path / "idx", tiny_embedder) as reopened:
        assert reopened.counts().documents == 3
        hit = reopened.search("river", k=1)[0]
        doc = reopened.document(hit.chunk.document_id)
        assert doc is not None and doc.text[hit.chunk.start : hit.chunk.end] == hit.chunk.text
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["dimension"] == 32
    assert manifest["counts"]["documents"] == 3 and manifest["embedder"] == tiny_embedder.name


def test_uncommitted_changes_are_invisible_and_exact_search(
    tmp_path: Path, tiny_embedder: Embedder
) -> None:
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS) as index:
        index.add_documents(_docs("a", 2))
        assert index.search("river", k=3) == []
        index.commit()
        # exact inner product: the best hit's score equals the brute-force maximum
        query = tiny_embedder.encode_query("city 1 flows")
        vectors = np.stack(
            [
                np.frombuffer(v, dtype=np.float32)
                for (v,) in index.store.conn.execute("SELECT vector FROM chunks")
            ]
        )
        best = float((vectors @ query[0]).max())
        assert index.search_vector(query, k=1)[0].score == pytest.approx(best, rel=1e-5)


def test_update_and_delete_by_document_id(tmp_path: Path, tiny_embedder: Embedder) -> None:
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS) as index:
        index.add_documents(_docs("a", 3))
        index.commit()
        before = index.counts().chunks
        index.add_documents([Document(id="a1", text="short replacement text", source="a1.txt")])
        index.commit()
        assert index.counts().documents == 3
        assert index.counts().chunks < before
        assert [c.text for c in index.store.chunks_of_document("a1")] == ["short replacement text"]
        index.delete_documents(["a0"])
        index.commit()
        assert index.counts().documents == 2
        assert all(h.chunk.document_id != "a0" for h in index.search("river", k=50))
        _consistent(index)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_filters_equality_and_in(tmp_path: Path, tiny_embedder: Embedder, index_type: str) -> None:
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS, index_type=index_type) as index:  # type: ignore[arg-type]
        index.add_documents(_docs("a", 4) + _docs("b", 4, topic="war"))
        index.commit()
        hits = index.search("river", k=50, filters={"group": "b"})
        assert hits and {h.chunk.metadata["group"] for h in hits} == {"b"}
        hits = index.search("river", k=50, filters={"n": [1, 2]})
        assert hits and {h.chunk.metadata["n"] for h in hits} == {1, 2}
        hits = index.search("river", k=50, filters={"group": {"$ne": "a"}, "n": {"$in": [3]}})
        assert {(h.chunk.metadata["group"], h.chunk.metadata["n"]) for h in hits} == {("b", 3)}
        assert index.search("river", k=5, filters={"group": "none"}) == []
        assert {
            h.chunk.document_id for h in index.search("river", k=50, filters={"document_id": "a2"})
        } == {"a2"}
        index.delete_documents(["b3"])
        index.commit()
        assert index.search("river", k=50, filters={"group": "b", "n": 3}) == []
        _consistent(index)


def test_manifest_of_another_embedder_is_refused(tmp_path: Path, tiny_embedder: Embedder) -> None:
    Index.create(tmp_path / "idx", tiny_embedder, CHARS).close()
    with pytest.raises(IndexFormatError, match="built with embedder"):
        Index.open(tmp_path / "idx", Embedder("some/other-model"))
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format version 99"):
        Index.open(tmp_path / "idx", tiny_embedder)
    for bad in ("2", -7, True, None):  # "2" read as "version 2; this ragkit reads version 2"
        manifest["format_version"] = bad
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(IndexFormatError, match="is not a positive integer"):
            Index.open(tmp_path / "idx", tiny_embedder)


def test_directories_that_are_not_indexes(tmp_path: Path, tiny_embedder: Embedder) -> None:
    with pytest.raises(IndexFormatError, match="index not found"):
        Index.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(IndexFormatError, match="not a ragkit index"):
        Index.open(tmp_path / "other")
    with pytest.raises(IndexFormatError, match="non-empty"):
        Index.create(tmp_path / "other", tiny_embedder, CHARS)
    (tmp_path / "other" / "manifest.json").write_text("{broken")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        Index.open(tmp_path / "other")


def test_opening_a_broken_store_changes_nothing(tmp_path: Path, tiny_embedder: Embedder) -> None:
    """From a new-user probe: a search on an index whose store file was empty wrote a SQLite
    header into it (the journal pragma ran before the check)."""
    directory = tmp_path / "idx"
    Index.create(directory, tiny_embedder, CHARS).close()
    store = directory / "store.sqlite"
    for leftover in directory.glob("store.sqlite-*"):
        leftover.unlink()
    store.write_bytes(b"")
    with pytest.raises(IndexFormatError, match="not a valid ragkit store"):
        Index.open(directory)
    assert store.read_bytes() == b""


def test_no_pickle_on_disk(tmp_path: Path, tiny_embedder: Embedder) -> None:
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS) as index:
        index.add_documents(_docs("a", 2))
        index.commit()
    files = [p for p in (tmp_path / "idx").rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in files), "the BM25 index is persisted"
    for path in files:
        assert path.suffix in {
            ".json",
            ".sqlite",
            ".faiss",
            ".lock",
            ".sqlite-wal",
            ".sqlite-shm",
            ".npy",
        }, path
        assert not path.read_bytes()[:2].startswith(b"\x80"), f"{path} looks like a pickle"
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # raises if the array needs pickle


def test_reader_sees_writer_commits(tmp_path: Path, tiny_embedder: Embedder) -> None:
    writer = Index.create(tmp_path / "idx", tiny_embedder, CHARS)
    writer.add_documents(_docs("a", 1))
    writer.commit()
    reader = Index.open(tmp_path / "idx", tiny_embedder)
    assert {h.chunk.document_id for h in reader.search("river", k=50)} == {"a0"}
    writer.add_documents(_docs("b", 1, topic="war"))
    writer.delete_documents(["a0"])
    writer.commit()
    assert {h.chunk.document_id for h in reader.search("river", k=50)} == {"b0"}
    writer.close()
    reader.close()


def test_failed_commit_keeps_previous_generation(
    tmp_path: Path, tiny_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = Index.create(tmp_path / "idx", tiny_embedder, CHARS)
    index.add_documents(_docs("a", 2))
    index.commit()
    generation = index.store.generation

    def boom(self: ChunkStore) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ChunkStore, "commit", boom)
    index.add_documents(_docs("b", 2))
    with pytest.raises(OSError, match="disk full"):
        index.commit()
    monkeypatch.undo()
    index.close()
    with Index.open(tmp_path / "idx", tiny_embedder) as reopened:
        assert reopened.store.generation == generation
        assert {h.chunk.document_id for h in reopened.search("river", k=50)} == {"a0", "a1"}
        _consistent(reopened)
    assert not (tmp_path / "idx" / f"vectors-{generation + 1}.faiss").exists()


_WRITER = textwrap.dedent(
    """
    import sys
    from ragkit.chunking import ChunkingSettings
    from ragkit.embedding import Embedder
    from ragkit.index import Index
    from ragkit.schema import Document

    index = Index.open(sys.argv[1], Embedder(sys.argv[2], device="cpu").warm_up())
    index.embedder.encode(["warm"])
    index.search("warm")
    print("ready", flush=True)
    i = 0
    while True:
        docs = [Document(id=f"w{i}-{j}", text=f"river text {i} {j} " * 20, source="w") for j in range(20)]
        index.add_documents(docs)
        if i % 3 == 0:
            index.delete_documents([f"w{i-1}-{j}" for j in range(10)])
        index.commit()
        print("committed", flush=True)
        i += 1
    """
)


def test_kill_during_save_leaves_a_loadable_index(
    tmp_path: Path, tiny_embedder: Embedder, tiny_model_path: Path
) -> None:
    directory = tmp_path / "idx"
    with Index.create(directory, tiny_embedder, CHARS) as index:
        index.add_documents(_docs("a", 3))
        index.commit()
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(1234)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    generations = []
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(directory), str(tiny_model_path)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        assert proc.stdout.readline().strip() == b"committed"
        time.sleep(rng.uniform(0.0, 0.5))  # then kill at an arbitrary point of the next commits
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Index.open(directory, tiny_embedder) as reopened:
            _consistent(reopened)
            ids = {h.chunk.document_id for h in reopened.search("river", k=10_000)}
            assert {"a0", "a1", "a2"} <= ids
            # every chunk the store lists is searchable, and nothing half-written is visible
            assert len(reopened.search("river", k=10_000)) == reopened.counts().chunks
            generations.append(reopened.store.generation)
    # the writer really was committing between kills
    assert generations == sorted(set(generations)) and generations[0] > 1


def test_index_paths_reembeds_only_changed_files(tmp_path: Path, tiny_embedder: Embedder) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the river flows to the city. " * 10)
    (corpus / "b.md").write_text("# Title\n\nthe war in europe.\n")
    (corpus / "bad.txt").write_bytes(b"\x00\x01binary")
    (corpus / "c.png").write_bytes(b"\x89PNG")
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS) as index:
        first = index_paths(index, [corpus])
        assert first.files_indexed == 2 and first.files_unchanged == 0
        assert sorted(Path(s.source).name for s in first.skipped) == ["bad.txt", "c.png"]
        calls: list[int] = []
        original = tiny_embedder.encode

        def counting(texts, batch_size=None):  # type: ignore[no-untyped-def]
            calls.append(len(texts))
            return original(texts, batch_size)

        tiny_embedder.encode = counting  # type: ignore[method-assign]
        try:
            second = index_paths(index, [corpus])
            assert second.files_unchanged == 2 and second.files_indexed == 0 and calls == []
            (corpus / "b.md").write_text("# Title\n\nthe war in europe ended.\n")
            third = index_paths(index, [corpus])
            assert third.files_indexed == 1 and third.files_unchanged == 1
            assert sum(calls) == third.chunks_added
        finally:
            del tiny_embedder.encode
        assert index.counts().files == 2
        (corpus / "a.txt").unlink()
        pruned = index_paths(index, [corpus], prune=True)
        assert pruned.files_removed == 1 and index.counts().files == 1
        _consistent(index)


_READER = textwrap.dedent(
    """
    import sys, time
    from ragkit.embedding import Embedder
    from ragkit.index import Index

    embedder = Embedder(sys.argv[2], device="cpu").warm_up()
    expected = int(sys.argv[4])
    seen = set()
    print("ready", flush=True)
    deadline = time.time() + float(sys.argv[3])
    while time.time() < deadline:
        with Index.open(sys.argv[1], embedder) as index:
            for _ in range(5):
                hits = index.search("river", k=1000)
                # the writer keeps the number of chunks constant: a mixed or partial state
                # (vectors of one generation, rows of another) would change the count
                assert len(hits) == expected, (len(hits), expected)
                assert all(hit.chunk.text for hit in hits)
                seen.add(index._vectors_at[0] if index._vectors_at else -1)
    print(len(seen), flush=True)
    """
)


def test_readers_in_other_processes_never_see_a_partial_index(
    tmp_path: Path, tiny_embedder: Embedder, tiny_model_path: Path
) -> None:
    directory = tmp_path / "idx"
    writer = Index.create(directory, tiny_embedder, CHARS)
    writer.add_documents(_docs("a", 3) + _docs("w0-", 5))
    writer.commit()
    expected = writer.counts().chunks
    script = tmp_path / "reader.py"
    script.write_text(_READER)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    reader = subprocess.Popen(
        [sys.executable, str(script), str(directory), str(tiny_model_path), "4", str(expected)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == b"ready"
    i = 1
    while reader.poll() is None:
        # same texts under new ids: every commit replaces 5 documents, the chunk count stays put
        writer.add_documents(_docs(f"w{i}-", 5))
        writer.delete_documents([f"w{i - 1}-{j}" for j in range(5)])
        writer.commit()
        assert writer.counts().chunks == expected
        i += 1
    out, err = reader.communicate()
    writer.close()
    assert reader.returncode == 0, err.decode()[-2000:]
    assert int(out.strip()) > 1, "the reader should have seen several generations"
    # old generations are pruned: the current one and a few before it stay on disk
    assert len(list(directory.glob("vectors-*.faiss"))) <= 4
    assert len(list(directory.glob("bm25-*"))) <= 4


def test_bm25_index_is_persisted_per_generation(tmp_path: Path, tiny_embedder: Embedder) -> None:
    # what BM25 finds, with filters and after updates, is the store contract's
    # (tests/stores/test_store_contract.py); here: where the file index keeps it
    directory = tmp_path / "idx"
    with Index.create(directory, tiny_embedder, CHARS) as index:
        index.add_documents(
            [
                Document(id="r", text="The rivers were running quickly to the sea.", source="r"),
                Document(id="c", text="Cats sleep all day long.", source="c"),
                Document(id="f", text="Les rivières coulent vers la mer.", source="f"),
            ]
        )
        index.commit()
        index.add_documents([Document(id="c", text="Dogs and rivers.", source="c")])
        index.delete_documents(["f"])
        index.commit()
        assert {h.chunk.document_id for h in index.search_lexical("rivers", k=5)} == {"r", "c"}
    # persisted next to the FAISS file, loaded back without re-tokenising
    with Index.open(directory, tiny_embedder) as reopened:
        assert (directory / f"bm25-{reopened.store.generation}").is_dir()
        assert {h.chunk.document_id for h in reopened.search_lexical("rivers", k=5)} == {"r", "c"}
        assert (
            len(list(directory.glob("bm25-*"))) <= 4
        )  # the current generation and three before it


def test_auto_index_switches_to_hnsw_above_the_threshold(
    tmp_path: Path, tiny_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragkit.index import vectors as vectors_module

    monkeypatch.setattr(vectors_module, "AUTO_HNSW_THRESHOLD", 8)
    with Index.create(tmp_path / "idx", tiny_embedder, CHARS) as index:
        assert index.manifest.index_type == "auto"
        index.add_documents(_docs("a", 2))
        index.commit()
        assert index._ensure_vectors().kind == "flat"
        small = index.counts().chunks
        index.add_documents(_docs("b", 6))
        index.commit()
        assert index.counts().chunks > 8 > small
        assert index._ensure_vectors().kind == "hnsw"
        _consistent(index)
        assert index.search("river", k=3)
    with Index.open(tmp_path / "idx", tiny_embedder) as reopened:
        assert reopened._ensure_vectors().kind == "hnsw"  # read back from the FAISS file itself
        reopened.delete_documents([f"b{i}" for i in range(6)])
        reopened.commit()
        assert reopened._ensure_vectors().kind == "flat"
        _consistent(reopened)


def test_embedding_failure_in_the_worker_keeps_finished_groups(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """Groups are embedded in a worker thread; its error surfaces here and earlier groups stay."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"f{i}.txt").write_text(f"the river {i} flows through the city " * 3)
    embedder = Embedder(str(tiny_model_path), device="cpu", backend="torch").warm_up()
    calls = {"n": 0}
    original = embedder.encode

    def flaky(texts: list[str], batch_size: int | None = None) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("embedding backend crashed")
        return original(texts, batch_size)

    embedder.encode = flaky  # type: ignore[method-assign]
    with Index.create(tmp_path / "idx", embedder) as index:
        with pytest.raises(RuntimeError, match="embedding backend crashed"):
            index_paths(index, [corpus], commit_every=1)
        # groups embedded before the failure were committed, consistently
        assert index.counts().files == 2
        _consistent(index)
    with Index.open(tmp_path / "idx", embedder) as index:
        embedder.encode = original  # type: ignore[method-assign]
        report = index_paths(index, [corpus], commit_every=1)  # a re-run finishes the rest
        assert report.files_unchanged == 2 and report.files_indexed == 4
        assert index.counts().files == 6
