"""Integration: the packaged all-MiniLM-L6-v2 on the shared Wikipedia texts and PDFs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragkit import Embedder, Index, index_paths
from ragkit.cli import app
from ragkit.models import DEFAULT_EMBEDDER, packaged_embedder_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    try:
        packaged_embedder_path()
    except Exception as exc:  # pragma: no cover - only without the package
        pytest.skip(str(exc))
    return Embedder(None, device="cpu").warm_up()


def test_packaged_embedder_defaults(minilm: Embedder) -> None:
    assert minilm.name == DEFAULT_EMBEDDER
    assert minilm.dimension == 384
    assert minilm.max_tokens == 254
    vectors = minilm.encode(["Strasbourg is in Alsace.", "Paris is the capital of France."])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5


def test_wiki_and_pdf_retrieval(tmp_path: Path, shared_data: Path, minilm: Embedder) -> None:
    with Index.create(tmp_path / "idx", minilm) as index:
        report = index_paths(index, [shared_data / "wiki", shared_data / "files"])
        assert report.files_indexed == 6 and not report.skipped
        assert report.chunks_total > 100
        hits = index.search("Which river flows through Strasbourg?", k=3)
        assert Path(hits[0].chunk.source).name == "Strasbourg.txt"
        assert "Rhine" in " ".join(h.chunk.text for h in hits)
        pdf_hits = index.search("sample pdf text", k=3, filters={"format": "pdf"})
        assert pdf_hits and all("page" in h.chunk.metadata for h in pdf_hits)
        # chunks never exceed the model's sequence length
        tokenizer = minilm.tokenizer
        for (text,) in index.store.conn.execute("SELECT text FROM chunks"):
            assert len(tokenizer(text, add_special_tokens=True)["input_ids"]) <= 256


def test_cli_default_embedder(tmp_path: Path, shared_data: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["index", str(shared_data / "wiki"), "--index", str(tmp_path / "idx")]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "search",
            "When did the war on terror start?",
            "--index",
            str(tmp_path / "idx"),
            "--json",
            "-k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert Path(hits[0]["source"]).name == "War_on_Terror.txt"
