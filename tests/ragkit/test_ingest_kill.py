"""A build killed with SIGKILL keeps what it committed, and a re-run indexes only the rest.

Each trial runs ``index_paths`` in a child process over many small files with a tiny embedder
(slowed a little so that the build spans many commits), kills it at a random moment after one of
its commits, checks the index on disk, then re-runs the build here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder
from ragkit.index import Index, index_paths
from ragkit.index.manifest import IndexManifest

CHARS = ChunkingSettings(unit="chars", chunk_size=80, chunk_overlap=10)

# Importing torch and sentence-transformers takes seconds, so one helper process imports them
# once and forks a fresh builder for each trial; the test SIGKILLs the builder by its pid.
_FORKING_BUILDER = textwrap.dedent(
    """
    import os, sys, time
    import sentence_transformers  # noqa: F401  (the slow imports, before any fork)
    from ragkit.chunking import ChunkingSettings
    from ragkit.embedding import Embedder
    from ragkit.index import Index, index_paths

    def build(directory, model, corpus):
        print("start", os.getpid(), flush=True)
        embedder = Embedder(model, device="cpu", batch_size=2).warm_up()
        encode = embedder.encode

        def slow(texts, batch_size=None):  # a real model's pace: the build spans many commits
            time.sleep(0.05 * len(texts))
            return encode(texts, batch_size)

        embedder.encode = slow
        chunking = ChunkingSettings(unit="chars", chunk_size=80, chunk_overlap=10)
        index = Index.open_or_create(directory, embedder, chunking)
        commit = index.commit

        def reporting_commit():
            generation = commit()
            print("committed", index.counts().files, flush=True)
            return generation

        index.commit = reporting_commit
        index_paths(index, [corpus], commit_seconds=0.0)
        print("done", flush=True)

    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                build(*line.rstrip("\\n").split("\\t"))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        print("exited", flush=True)
    """
)


@pytest.fixture(scope="module")
def forking_builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path_factory.mktemp("builder") / "builder.py"
    script.write_text(_FORKING_BUILDER)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def _text(i: int, version: int) -> str:
    return f"the river {i} flows to the city {i} in version {version}. " * (1 + i % 3)


def _write_corpus(corpus: Path, names: range, version: int) -> None:
    corpus.mkdir(exist_ok=True)
    for i in names:
        (corpus / f"f{i:03d}.txt").write_text(_text(i, version))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()  # as the loaders hash a file


def _current_hashes(corpus: Path) -> dict[str, str]:
    return {p.resolve().as_posix(): _hash(p.read_text()) for p in sorted(corpus.glob("*.txt"))}


def _check_integrity(directory: Path, embedder: Embedder) -> dict[str, str]:
    """The index opens and is whole; returns the committed files' content hashes."""
    with contextlib.closing(sqlite3.connect(directory / "store.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # files, documents and chunks were committed together: no row without its parent/child
        assert not db.execute(
            "SELECT 1 FROM files f WHERE NOT EXISTS"
            " (SELECT 1 FROM documents d WHERE d.file_key = f.key)"
        ).fetchone()
        assert not db.execute(
            "SELECT 1 FROM documents d WHERE NOT EXISTS"
            " (SELECT 1 FROM files f WHERE f.key = d.file_key)"
        ).fetchone()
        assert not db.execute(
            "SELECT 1 FROM chunks c WHERE NOT EXISTS"
            " (SELECT 1 FROM documents d WHERE d.id = c.document_id)"
        ).fetchone()
        hashes = dict(db.execute("SELECT key, content_hash FROM files").fetchall())
    with Index.open(directory, embedder) as index:
        counts = index.counts()
        assert counts.files == len(hashes)
        assert index._ensure_vectors().ntotal == counts.chunks
        assert index._ensure_lexical().size == counts.chunks
        if counts.chunks:
            assert len(index.search("the river flows", k=10_000)) == counts.chunks
            assert index.search_lexical("river", k=3)
        for key in hashes:  # each committed file holds the text of the version it was hashed at
            (document_id,) = index.store.documents_of_file(key)
            document = index.document(document_id)
            assert document is not None
            i = int(Path(key).stem[1:])
            versions = [v for v in (1, 2) if _hash(_text(i, v)) == hashes[key]]
            assert versions and document.text == _text(i, versions[0])
    return hashes


def _killed_build(
    builder: subprocess.Popen[bytes],
    directory: Path,
    corpus: Path,
    model: Path,
    rng: random.Random,
) -> int:
    """Build in a forked child and SIGKILL it after a random number of commits plus a random
    delay; returns how many files its last commit before the kill had reported."""
    assert builder.stdin is not None and builder.stdout is not None
    builder.stdin.write(f"{directory}\t{model}\t{corpus}\n".encode())
    builder.stdin.flush()
    first = builder.stdout.readline().split()
    assert first[0] == b"start", first
    pid = int(first[1])
    try:
        reported = 0
        for _ in range(rng.randint(1, 2)):
            line = builder.stdout.readline().split()
            assert line and line[0] == b"committed", "the build must commit before it ends"
            reported = int(line[1])
        time.sleep(rng.uniform(0.0, 0.2))  # then anywhere: loading, embedding, mid-commit
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: the check below says why
            os.kill(pid, signal.SIGKILL)
    rest = []
    while (line := builder.stdout.readline().strip()) != b"exited":
        assert line, "the builder process died"
        rest.append(line)
    assert b"done" not in rest, "the build finished before the kill: make the corpus larger"
    return reported


@pytest.mark.parametrize("incremental", [False, True], ids=["first-build", "incremental"])
def test_killed_build_keeps_its_commits_and_resumes(
    tmp_path: Path,
    tiny_model_path: Path,
    tiny_embedder: Embedder,
    forking_builder: subprocess.Popen[bytes],
    incremental: bool,
) -> None:
    rng = random.Random(22 + incremental)
    for trial in range(3):
        directory = tmp_path / f"idx{trial}"
        corpus = tmp_path / f"corpus{trial}"
        if incremental:
            # a complete index of version 1; then a third of the files change and 60 are new
            _write_corpus(corpus, range(120), version=1)
            with Index.create(directory, tiny_embedder, CHARS) as index:
                index_paths(index, [corpus])
            _write_corpus(corpus, range(0, 120, 3), version=2)
            _write_corpus(corpus, range(120, 180), version=2)
        else:
            _write_corpus(corpus, range(150), version=1)
        before = _check_integrity(directory, tiny_embedder) if incremental else {}
        current = _current_hashes(corpus)
        missing_before = sum(current[k] != before.get(k) for k in current)

        reported = _killed_build(forking_builder, directory, corpus, tiny_model_path, rng)

        committed = _check_integrity(directory, tiny_embedder)
        assert len(committed) >= reported  # nothing the build had committed was lost
        missing = [k for k in current if committed.get(k) != current[k]]
        assert 0 < len(missing) < missing_before, "killed mid-build, after keeping some work"

        with Index.open(directory, tiny_embedder) as index:
            report = index_paths(index, [corpus])
        assert report.files_indexed == len(missing)  # only what was missing is embedded
        assert report.files_unchanged == len(current) - len(missing)
        assert _check_integrity(directory, tiny_embedder) == current


def test_a_create_killed_before_its_manifest_is_started_again(
    tmp_path: Path, tiny_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill inside Index.create (store and vector file written, manifest not yet) must not
    leave a directory that can neither be opened nor created."""
    directory = tmp_path / "idx"

    def killed(self: IndexManifest, directory: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(IndexManifest, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        Index.create(directory, tiny_embedder, CHARS)
    monkeypatch.undo()
    assert (directory / "store.sqlite").exists() and not (directory / "manifest.json").exists()
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, range(3), version=1)
    with Index.open_or_create(directory, tiny_embedder, CHARS) as index:
        assert index_paths(index, [corpus]).files_indexed == 3
    _check_integrity(directory, tiny_embedder)


def test_a_directory_that_is_not_an_interrupted_create_is_refused(
    tmp_path: Path, tiny_embedder: Embedder
) -> None:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, range(2), version=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    built = tmp_path / "built"  # an index whose manifest was lost: its rows are not ours to drop
    with Index.create(built, tiny_embedder, CHARS) as index:
        index_paths(index, [corpus])
    (built / "manifest.json").unlink()
    for directory in (foreign, built):
        with pytest.raises(Exception, match="non-empty directory"):
            Index.create(directory, tiny_embedder, CHARS)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert (built / "store.sqlite").exists()


def test_commit_policy_waits_for_time_and_for_its_own_cost() -> None:
    from ragkit.index.ingest import CommitPolicy

    now = [0.0]
    policy = CommitPolicy(seconds=30.0, max_chunks=100, clock=lambda: now[0])
    assert not policy.due()  # nothing staged
    policy.staged = 10
    now[0] = 29.0
    assert not policy.due()
    now[0] = 30.0
    assert policy.due()

    class SlowCommit:
        def commit(self) -> int:
            now[0] += 5.0  # a commit that takes 5 s (a large HNSW rebuild)
            return 1

    policy.commit(SlowCommit())  # type: ignore[arg-type]
    assert policy.cost == 5.0 and policy.staged == 0 and policy.interval == 50.0
    policy.staged = 10
    now[0] += 49.0
    assert not policy.due()  # commits stay under a tenth of the build's time
    now[0] += 1.0
    assert policy.due()
    policy.staged = 100
    now[0] = policy.last
    assert policy.due()  # commit_every staged chunks force a commit
