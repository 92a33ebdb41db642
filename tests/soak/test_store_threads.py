"""The index store under threads: private snapshots, concurrent searches, a writer meanwhile.

A server answers searches from a thread pool over one :class:`~ragkit.index.Index`; its store
used to share one SQLite connection between those threads, so snapshots nested ("cannot start a
transaction within a transaction"), ended each other early and interleaved cursors.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from soak_load import run_clients
from soak_support import assert_clean, build_index, make_rag, serve, soak_documents

from ragkit import Index
from ragkit.embedding import Embedder
from ragkit.index.store import ChunkStore


def test_snapshots_of_two_threads_are_independent(tmp_path: Path, tiny_embedder: Embedder) -> None:
    """Thread B's snapshot must keep its state after thread A's snapshot ends and a writer
    commits (with one shared connection B's reads silently left its snapshot)."""
    directory = build_index(tmp_path / "idx", tiny_embedder, count=3)
    reader = ChunkStore(directory / "store.sqlite")
    a_inside, a_leave, a_done = threading.Event(), threading.Event(), threading.Event()
    b_inside, b_read_again = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def thread_a() -> None:
        with reader.snapshot():
            a_inside.set()
            assert a_leave.wait(30)
        a_done.set()

    def thread_b() -> None:
        assert a_inside.wait(30)
        try:
            with reader.snapshot():
                seen["before"] = (reader.generation, reader.counts())
                b_inside.set()
                assert b_read_again.wait(30)
                seen["after"] = (reader.generation, reader.counts())
        except Exception as exc:  # reported by the assertion below
            seen["error"] = exc

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    assert b_inside.wait(30)
    a_leave.set()
    assert a_done.wait(30)
    with Index.open(directory, tiny_embedder) as writer:
        writer.add_documents(soak_documents("new", 2))
        writer.commit()
    assert reader.generation == seen["before"][0] + 1  # outside a snapshot: the new state
    b_read_again.set()
    for t in threads:
        t.join(30)
    reader.close()
    assert "error" not in seen, seen.get("error")
    assert seen["after"] == seen["before"]


def test_concurrent_searches_in_threads(tmp_path: Path, tiny_embedder: Embedder) -> None:
    directory = build_index(tmp_path / "idx", tiny_embedder)
    errors: list[str] = []
    done = [0]
    stop = time.monotonic() + 2.0
    with Index.open(directory, tiny_embedder) as index:

        def work(n: int) -> None:
            filters = {"part": n % 3} if n % 2 else None
            while time.monotonic() < stop:
                try:
                    assert index.search("capital of france", 4, filters)
                    assert index.search_lexical("note river capital", 4, filters)
                    assert index.document("d1") is not None and index.counts().chunks >= 30
                except Exception as exc:
                    errors.append(repr(exc))
                done[0] += 1

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == [], errors[:5]
    assert done[0] > 16


def test_writer_commits_while_the_server_searches(
    tmp_path: Path, tiny_embedder: Embedder, soak_generator: Any
) -> None:
    """``ragkit index`` adding and deleting in a loop while a server answers searches: no
    error, and the server ends up seeing the writer's last generation."""
    directory = build_index(tmp_path / "idx", tiny_embedder, count=12)
    rag = make_rag(directory, soak_generator)
    stop = threading.Event()
    commits: list[int] = []
    failures: list[str] = []

    def writer() -> None:
        try:
            with Index.open(directory, tiny_embedder) as index:
                n = 0
                while not stop.is_set():
                    index.add_documents(soak_documents(f"w{n}-", 2))
                    if n >= 2:
                        index.delete_documents([f"w{n - 2}-0", f"w{n - 2}-1"])
                    commits.append(index.commit())
                    n += 1
        except Exception as exc:
            failures.append(repr(exc))

    with serve(rag, rate_limit_per_minute=None) as base:
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            result = run_clients(base, seconds=4.0, tag="r", seed=3, threads=8, search_only=True)
        finally:
            stop.set()
            thread.join(60)
    assert failures == []
    assert len(commits) >= 3, commits
    assert_clean(result, ("/v1/search",))
    index = rag.retriever.index
    assert index.store.generation == commits[-1]
    last = len(commits) - 1
    hits = index.search_lexical(f"w{last}", 10, {"document_id": f"w{last}-0"})
    assert [h.chunk.document_id for h in hits] == [f"w{last}-0"]
    with contextlib.closing(sqlite3.connect(directory / "store.sqlite")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
