"""``ragkit index`` reports bad JSONL lines and fails when nothing could be indexed (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ragkit.cli import app

runner = CliRunner()


def _index(paths: list[Path], index: Path, model: Path, *extra: str) -> object:
    return runner.invoke(
        app,
        [
            "index",
            *map(str, paths),
            "--index",
            str(index),
            "--embedder",
            str(model),
            "--chunk-unit",
            "chars",
            *extra,
        ],
    )


def test_jsonl_bad_lines_are_skipped_and_reported(tmp_path: Path, tiny_model_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_bytes(
        b'{"text": "The Rhine flows past Strasbourg."}\n'
        b"{broken\n"
        b'{"text": "Paris is the capital of France.", "lang": "en"}\n'
        b'["not", "an", "object"]\n'
        b'{"text": "bad byte \xff here"}\n'
        b"\n"
        b'{"text": "line separators \xe2\x80\xa8 stay inside one record"}\n'
    )
    result = _index([data], tmp_path / "idx", tiny_model_path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_indexed"] == 1 and report["documents"] == 3 and not report["skipped"]
    (warning,) = report["warnings"]
    assert "skipped 3 bad line(s) of 6" in warning
    for line in ("line 2: invalid JSON", "line 4: expected a JSON object", "line 5: not UTF-8"):
        assert line in warning

    search = runner.invoke(
        app, ["search", "capital", "-i", str(tmp_path / "idx"), "--retriever", "dense", "--json"]
    )
    hits = json.loads(search.stdout)
    assert {h["metadata"]["line"] for h in hits} == {1, 3, 7}
    assert any(h["text"] == "line separators \u2028 stay inside one record" for h in hits)

    data.write_bytes(data.read_bytes() + b"{also broken\n")  # text output names the lines too
    text = _index([data], tmp_path / "idx", tiny_model_path)
    assert text.exit_code == 0, text.output
    assert "warning:" in text.stderr and "line 8: invalid JSON" in text.stderr


def test_nothing_indexed_is_an_error_but_up_to_date_is_not(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (bad / "rows.jsonl").write_text("{nope\n")
    (bad / "data.bin").write_bytes(b"\x00\x01")
    result = _index([bad], tmp_path / "idx", tiny_model_path)
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nothing was indexed: all 3 files were skipped")
    assert "Traceback" not in result.output

    single = _index([bad / "broken.pdf"], tmp_path / "idx", tiny_model_path, "--json")
    assert single.exit_code == 1
    assert json.loads(single.stdout)["skipped"][0]["source"].endswith("broken.pdf")
    assert "nothing was indexed" in single.stderr and "not a readable PDF" in single.stderr

    good = tmp_path / "good.txt"
    good.write_text("The Rhine flows past Strasbourg.\n")
    assert _index([good], tmp_path / "idx", tiny_model_path).exit_code == 0
    again = _index([good], tmp_path / "idx", tiny_model_path)  # indexes 0 files: all unchanged
    assert again.exit_code == 0, again.output
    assert "1 unchanged" in again.stdout
    mixed = _index([good, bad / "broken.pdf"], tmp_path / "idx", tiny_model_path)
    assert mixed.exit_code == 0, mixed.output  # unchanged + skipped: not "nothing indexed"
