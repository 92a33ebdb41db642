"""The CLI on a PostgreSQL store: the same commands, with a postgresql:// URL as --index."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ragkit.cli import app

runner = CliRunner()


def test_index_search_info_delete_through_a_url(
    pg_url: str, tmp_path: Path, tiny_model_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "rivers.txt").write_text("The Rhine river flows through Strasbourg.\n")
    (corpus / "war.md").write_text("# War\n\nThe war on terror began in 2001.\n")
    common = ["--embedder", str(tiny_model_path), "--chunk-unit", "chars", "--chunk-size", "200"]
    result = runner.invoke(app, ["index", str(corpus), "--index", pg_url, *common])
    assert result.exit_code == 0, result.output
    assert "indexed 2 file(s)" in result.stdout
    again = runner.invoke(app, ["index", str(corpus), "--index", pg_url])
    assert again.exit_code == 0 and "2 unchanged" in again.stdout, again.output

    found = runner.invoke(
        app,
        ["search", "Rhine river", "--index", pg_url, "-k", "1", "--retriever", "bm25", "--json"],
    )
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["source"].endswith("rivers.txt")

    info = runner.invoke(app, ["info", "--index", pg_url])
    assert info.exit_code == 0, info.output
    manifest = json.loads(info.stdout)
    assert manifest["counts"] == {"files": 2, "documents": 2, "chunks": 2}

    deleted = runner.invoke(app, ["delete", hits[0]["document_id"], "--index", pg_url])
    assert deleted.exit_code == 0 and "deleted 1 document" in deleted.stdout, deleted.output
    missing = runner.invoke(app, ["delete", hits[0]["document_id"], "--index", pg_url])
    assert missing.exit_code == 1 and "no such document" in missing.output


def test_url_only_options_are_refused_in_one_line(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text")
    flat = runner.invoke(app, ["index", str(tmp_path), "--index", pg_url, "--index-type", "flat"])
    assert flat.exit_code == 1 and "HNSW" in flat.output and "Traceback" not in flat.output
    ray = runner.invoke(app, ["index", str(tmp_path), "--index", pg_url, "--backend", "ray"])
    assert ray.exit_code != 0 and "PostgreSQL store is indexed locally" in ray.output
