"""`ragkit serve` and `ragkit feedback export` (arguments only) and the official `openai`
client against a live server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from live_server import live_server
from typer.testing import CliRunner

from alignment import read_preference_jsonl
from ragkit.cli import app
from ragkit.feedback import FeedbackStore


def test_serve_refuses_public_host_without_key(
    server_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAGKIT_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--index", str(server_index), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "requires an API key" in result.stderr and result.stderr.startswith("error: ")
    assert result.stderr.strip().count("\n") == 0


def test_serve_reports_missing_key_file(server_index: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--index", str(server_index), "--api-key-file", str(tmp_path / "nope")]
    )
    assert result.exit_code == 1
    assert "cannot read API key file" in result.stderr


def test_feedback_export_command(tmp_path: Path) -> None:
    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        store.record_answer("a", "Q?", "good", [], "m")
        store.record_answer("b", "Q?", "bad", [], "m")
        store.choose("a", "b")
    out = tmp_path / "pairs.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        app, ["feedback", "export", str(db), "-o", str(out), "--prompt", "question"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 preference pairs" in result.output
    [pair] = read_preference_jsonl(out).records
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Q?", "good", "bad")
    bad = runner.invoke(app, ["feedback", "export", str(db), "-o", str(out), "--format", "csv"])
    assert bad.exit_code == 2 and "'--format': 'csv' is not one of 'jsonl'" in bad.stderr
    missing = runner.invoke(app, ["feedback", "export", str(tmp_path / "none.db"), "-o", str(out)])
    assert missing.exit_code == 1 and missing.stderr.startswith("error: ")


def test_feedback_export_never_writes_what_it_reads_or_a_file_that_is_not_a_store(
    tmp_path: Path,
) -> None:
    """Exporting a store over itself emptied it; exporting an empty file or an index's SQLite
    store turned it into a feedback store; a folder as the output failed with a traceback."""
    import sqlite3

    db = tmp_path / "fb.db"
    with FeedbackStore(db) as store:
        store.record_answer("a", "Q?", "good", [], "m")
    before = db.read_bytes()
    runner = CliRunner()

    def one_line_error(args: list[str], message: str) -> None:
        result = runner.invoke(app, ["feedback", "export", *args])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0
        assert message in result.stderr, result.stderr

    one_line_error([str(db), "-o", str(db)], "is the feedback store itself")
    assert db.read_bytes() == before
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_error([str(empty), "-o", str(tmp_path / "o.jsonl")], "is not a ragkit feedback store")
    assert empty.read_bytes() == b""
    other = tmp_path / "store.sqlite"  # some other SQLite database, e.g. an index's store
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE chunks (id TEXT)")
    other_bytes = other.read_bytes()
    one_line_error([str(other), "-o", str(tmp_path / "o.jsonl")], "is not a ragkit feedback store")
    assert other.read_bytes() == other_bytes and not Path(f"{other}-wal").exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    one_line_error([str(folder), "-o", str(tmp_path / "o.jsonl")], "is a folder, not a feedback")
    one_line_error([str(db), "-o", str(folder)], "it is a folder, not a file")
    assert not (tmp_path / "o.jsonl").exists()


def test_openai_client_against_live_server(server_rag: Any) -> None:
    openai = pytest.importorskip("openai")
    from pydantic import SecretStr

    from ragkit.server import ServerSettings, create_app

    app = create_app(server_rag, ServerSettings(port=0, api_keys=(SecretStr("k-123"),)))
    with live_server(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="k-123", max_retries=0, timeout=30)
        question = [{"role": "user", "content": "What is the capital of France?"}]
        done = client.chat.completions.create(model="ragkit", messages=question, max_tokens=5)
        text = done.choices[0].message.content
        assert text
        assert done.usage is not None and 0 < done.usage.completion_tokens <= 5
        assert isinstance(done.model_extra.get("citations"), list)
        pieces = [
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="ragkit", messages=question, max_tokens=5, stream=True
            )
            if chunk.choices
        ]
        assert "".join(pieces).strip() == text
        wrong = openai.OpenAI(base_url=base + "/v1", api_key="nope", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="ragkit", messages=question)
