"""Ray ingestion (issue 9): the same index as the single-process path, on a local Ray instance.

Ray starts once for the module (several seconds); every pipeline run then starts its own
embedding actors, so the corpus is tiny and the runs are few.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.embedding import Embedder
from ragkit.errors import RagkitError
from ragkit.index import Index, index_paths
from ragkit.index.ingest import IngestReport
from ragkit.index.ray_ingest import index_paths_ray

QUERIES = ("the river flows to the city", "war in europe", "cathedral of strasbourg")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ragkit[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is needed: pip install 'ragkit[ray]'")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 << 20,
        log_to_driver=False,
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    )
    yield ray
    ray.shutdown()


def _write_corpus(folder: Path) -> Path:
    folder.mkdir()
    words = ["river", "city", "war", "europe", "culture", "music", "bridge", "cathedral", "paris"]
    for i in range(7):
        topic = " ".join(words[(i + j) % len(words)] for j in range(4))
        body = "\n\n".join(
            f"the {topic} number {i} part {p} is in the {words[p % 9]}." * 3 for p in range(4)
        )
        (folder / f"f{i}.txt").write_text(body, encoding="utf-8")
    (folder / "notes.md").write_text(
        "# Strasbourg\n\nthe cathedral of strasbourg.\n\n## History\n\nthe war in europe.\n"
    )
    (folder / "sub").mkdir()
    (folder / "sub" / "g.txt").write_text("the parliament bridge over the river. " * 20)
    (folder / "bad.txt").write_bytes(b"\x00\x01binary")  # loader error: reported as skipped
    (folder / "blank.txt").write_text("   \n\n  ")  # no extractable text: skipped
    (folder / "c.png").write_bytes(b"\x89PNG")  # unsupported: skipped before any loading
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("ray-corpus") / "corpus")


def _contents(index: Index) -> tuple[list[tuple[Any, ...]], np.ndarray, list[tuple[Any, ...]]]:
    """Chunk rows in vid order, their vectors, and the file/document rows of an index."""
    conn = index.store.conn
    rows = conn.execute(
        "SELECT vid, id, document_id, text, start, end, source, metadata FROM chunks ORDER BY vid"
    ).fetchall()
    vectors = np.stack(
        [
            np.frombuffer(v, np.float32)
            for (v,) in conn.execute("SELECT vector FROM chunks ORDER BY vid")
        ]
    )
    files = conn.execute("SELECT key, source, content_hash FROM files ORDER BY key").fetchall()
    documents = conn.execute(
        "SELECT id, file_key, text, metadata FROM documents ORDER BY id"
    ).fetchall()
    return rows, vectors, files + documents


def _comparable(report: IngestReport) -> dict[str, Any]:
    data = report.model_dump(exclude={"seconds", "skipped"})
    data["skipped"] = sorted((Path(s.source).name, s.reason) for s in report.skipped)
    return data


@pytest.fixture(scope="module")
def plain_index(
    tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_embedder: Embedder
) -> Iterator[tuple[Index, IngestReport]]:
    with Index.create(tmp_path_factory.mktemp("plain") / "idx", tiny_embedder) as index:
        yield index, index_paths(index, [corpus])


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_builds_the_same_index_as_the_plain_path(
    ray_instance: Any,
    tmp_path: Path,
    corpus: Path,
    tiny_embedder: Embedder,
    plain_index: tuple[Index, IngestReport],
    workers: int,
) -> None:
    plain, plain_report = plain_index
    with Index.create(tmp_path / "idx", tiny_embedder) as index:
        report = index_paths_ray(index, [corpus], workers=workers, files_per_batch=3)
        assert _comparable(report) == _comparable(plain_report)
        assert report.files_indexed == 9 and report.chunks_added > 9
        assert {Path(s.source).name for s in report.skipped} == {"bad.txt", "blank.txt", "c.png"}
        rows, vectors, other = _contents(index)
        plain_rows, plain_vectors, plain_other = _contents(plain)
        assert rows == plain_rows  # same chunks, ids, offsets, metadata, in the same order
        assert other == plain_other
        np.testing.assert_allclose(vectors, plain_vectors, atol=1e-5)
        assert index.manifest.embed_backend == plain.manifest.embed_backend == "torch"
        for query in QUERIES:
            for search in ("search", "search_lexical"):
                got = getattr(index, search)(query, k=5)
                want = getattr(plain, search)(query, k=5)
                assert [h.chunk_id for h in got] == [h.chunk_id for h in want]
                assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


def test_rerun_skips_unchanged_replaces_changed_and_prunes(
    ray_instance: Any, tmp_path: Path, tiny_embedder: Embedder
) -> None:
    """The content hashes are the index's own: a plain-built index is up to date for Ray too."""
    corpus = _write_corpus(tmp_path / "corpus")
    with Index.create(tmp_path / "idx", tiny_embedder) as index:
        first = index_paths(index, [corpus])
        generation = index.store.generation
        second = index_paths_ray(index, [corpus], workers=2)
        # nothing changed: no pipeline ran and no commit happened
        assert second.files_unchanged == first.files_indexed and second.files_indexed == 0
        assert index.store.generation == generation
        (corpus / "notes.md").write_text("# Paris\n\nthe art and music of paris.\n")
        (corpus / "f0.txt").unlink()
        third = index_paths_ray(index, [corpus], workers=2, prune=True)
        assert third.files_indexed == 1 and third.files_unchanged == first.files_indexed - 2
        assert third.files_removed == 1
        key = (corpus / "notes.md").resolve().as_posix()
        texts = [c.text for c in index.store.chunks_of_document(key)]
        assert texts and all("strasbourg" not in t for t in texts)
        assert index.search("music of paris", k=1)[0].chunk.document_id == key
        assert index.counts().files == first.files_indexed - 1


def test_worker_failure_leaves_the_index_at_its_last_commit(
    ray_instance: Any, tmp_path: Path, tiny_model_path: Path, corpus: Path
) -> None:
    """The embedding actors cannot load the model: a one-line RagkitError, nothing half-written."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    embedder = Embedder(str(model), device="cpu", backend="torch").warm_up()
    with Index.create(tmp_path / "idx", embedder) as index:
        _ = index.splitter  # the driver has what it needs; only the workers will miss the model
        shutil.rmtree(model)
        with pytest.raises(RagkitError, match="embedder"):
            index_paths_ray(index, [corpus], workers=1)
        assert index.store.generation == 0 and index.counts().chunks == 0


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a None entry in sys.modules makes any import of that name fail, as if not installed
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(RagkitError, match=r"pip install 'ragkit\[ray\]'"):
        index_paths_ray(None, [tmp_path])  # type: ignore[arg-type]


def test_cli_backend_ray_builds_the_same_index(
    ray_instance: Any, corpus: Path, tmp_path: Path, tiny_model_path: Path
) -> None:
    from typer.testing import CliRunner

    from ragkit.cli import app

    runner = CliRunner()
    common = ["--embedder", str(tiny_model_path), "--chunk-unit", "chars", "--chunk-size", "300"]
    plain = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "a"), *common])
    assert plain.exit_code == 0, plain.output
    ray_options = ["--backend", "ray", "--workers", "1"]
    ray = runner.invoke(
        app, ["index", str(corpus), "--index", str(tmp_path / "b"), *common, *ray_options]
    )
    assert ray.exit_code == 0, ray.output
    summary = plain.stdout.split(";")[0]
    assert summary == ray.stdout.split(";")[0] and "indexed" in summary
    with Index.open(tmp_path / "a") as a, Index.open(tmp_path / "b") as b:
        assert _contents(a)[0] == _contents(b)[0]


def test_cli_ray_options_are_checked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragkit.cli import app

    runner = CliRunner()
    (tmp_path / "a.txt").write_text("text")
    target = str(tmp_path / "idx")
    bad = runner.invoke(app, ["index", str(tmp_path), "--index", target, "--backend", "spark"])
    assert bad.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in bad.output
    local = runner.invoke(app, ["index", str(tmp_path), "--index", target, "--workers", "2"])
    assert local.exit_code != 0 and "apply to --backend ray only" in local.output
