"""Untrusted text (documents, model output, file names, messages quoting them) is never read as
terminal markup, and cannot drive or reorder the terminal; ``--json`` keeps it exact (issue 22)."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ragkit.cli import app
from ragkit.cli.answer import print_sources

runner = CliRunner()

IPA = "Strasbourg [stʁaz.buʁ, stʁas.buʁ] is the capital of Alsace."
MARKUP = "Paris closes [/bold] and opens [red]nothing[/red] :smile: here."
HOSTILE = "War began \x1b]0;pwned\x07 then \u202ereversed\u202c and \x7f\x9b\x1b[2J."
NUL = "Culture with a \x00 byte and \u2066isolates\u2069."  # NUL: text files are binary, JSONL
# what must never reach a terminal raw
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    tmp_path = tmp_path_factory.mktemp("hostile")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ipa.txt").write_text(IPA + "\n", encoding="utf-8")
    (corpus / "markup.txt").write_text(MARKUP + "\n", encoding="utf-8")
    (corpus / "hostile.txt").write_text(HOSTILE + "\n", encoding="utf-8")
    (corpus / "nul.jsonl").write_text(json.dumps({"text": NUL}) + "\n", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index",
            str(tmp_path / "idx"),
            "--embedder",
            str(tiny_model_path),
            "--chunk-unit",
            "chars",
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def _search(index: Path, query: str, *extra: str) -> object:
    return runner.invoke(
        app, ["search", query, "--index", str(index), "--retriever", "bm25", "-k", "1", *extra]
    )


def test_search_table_shows_brackets_and_closing_tags(hostile_index: Path) -> None:
    ipa = _search(hostile_index, "strasbourg alsace")
    assert ipa.exit_code == 0, ipa.output
    assert "[stʁaz.buʁ," in ipa.stdout and "stʁas.buʁ]" in ipa.stdout

    markup = _search(hostile_index, "paris")
    assert markup.exit_code == 0, markup.output  # was a rich.errors.MarkupError traceback
    for token in ("[/bold]", "[red]nothing[/red]", ":smile:"):
        assert token in markup.stdout


def test_search_table_neutralises_control_and_bidi_characters(hostile_index: Path) -> None:
    result = _search(hostile_index, "war")
    assert result.exit_code == 0, result.output
    assert not RAW.search(result.stdout)
    assert "␛]0;pwned␇" in result.stdout and "<U+202E>reversed" in result.stdout
    assert "␡<U+009B>␛[2J" in result.stdout
    nul = _search(hostile_index, "culture")
    assert nul.exit_code == 0, nul.output
    assert "␀ byte" in nul.stdout and "<U+2066>isolates<U+2069>" in nul.stdout
    assert not RAW.search(nul.stdout)


def test_search_json_keeps_the_exact_text(hostile_index: Path) -> None:
    result = _search(hostile_index, "war", "--json")
    assert result.exit_code == 0, result.output
    assert not RAW.search(result.stdout)  # escaped as \uXXXX, never raw
    (hit,) = json.loads(result.stdout)
    assert hit["text"] == HOSTILE
    with Path(hit["source"]).open(encoding="utf-8", newline="") as f:
        assert f.read()[hit["start"] : hit["end"]] == hit["text"]
    nul = _search(hostile_index, "culture", "--json")
    assert json.loads(nul.stdout)[0]["text"] == NUL and not RAW.search(nul.stdout)


def test_sources_after_an_answer_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    source = "docs/[/bold]\x1b[31m.txt"
    cited = {"start": 0, "end": len(IPA), "inferred": False, "text": IPA}
    quoted = {**cited, "quote": MARKUP, "quote_start": 3, "quote_end": 9}
    citations = [
        SimpleNamespace(n=1, source=source, quote=None, **cited),
        SimpleNamespace(n=2, source="[red]b\u2066.md", **quoted),
    ]
    note = "passage [3] dropped: [/i] \u202e"
    answer = SimpleNamespace(
        citations=citations, trace=SimpleNamespace(notes=[note]), abstained=False
    )
    print_sources(answer)
    captured = capsys.readouterr()
    assert f"[1] docs/[/bold]␛[31m.txt [0:{len(IPA)}]: {IPA}" in captured.out
    assert f"[2] [red]b<U+2066>.md [3:9] quotes: {MARKUP}" in captured.out
    assert "note: passage [3] dropped: [/i] <U+202E>" in captured.err
    assert not RAW.search(captured.out + captured.err)


def test_index_summary_and_errors_show_hostile_file_names(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("The Rhine river flows past Strasbourg.\n")
    (corpus / "[bold]\x1b[2Jevil\u202e.xyz").write_text("not a known format")
    args = ["--embedder", str(tiny_model_path), "--chunk-unit", "chars"]
    result = runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "idx"), *args])
    assert result.exit_code == 0, result.output
    assert "[bold]␛[2Jevil<U+202E>.xyz" in result.stderr and "skipped" in result.stderr
    assert not RAW.search(result.output)

    missing = str(tmp_path / "no[/red]\x1b]0;x\x07where")
    failed = runner.invoke(app, ["search", "x", "--index", missing])
    assert failed.exit_code == 1
    assert "no[/red]␛]0;x␇where" in failed.stderr and not RAW.search(failed.stderr)


def test_info_json_escapes_what_a_terminal_would_act_on(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    model = tmp_path / "models[/b]\u202e\x9b" / "st"
    shutil.copytree(tiny_model_path, model)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("The Rhine river flows past Strasbourg.\n")
    index = str(tmp_path / "idx")
    indexed = runner.invoke(
        app, ["index", str(tmp_path / "corpus"), "-i", index, "--embedder", str(model)]
    )
    assert indexed.exit_code == 0, indexed.output
    result = runner.invoke(app, ["info", "--index", index])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedder"] == str(model)  # exact once decoded
    assert "\\u202e\\u009b" in result.stdout and not RAW.search(result.stdout)


def test_server_log_lines_neutralise_control_characters() -> None:
    from ragkit.server.errors import log

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    try:
        try:
            raise ValueError("document says \x1b[2J\u202eevil")
        except ValueError:
            log.warning("could not use passage %s", "[/bold]\x1b]0;x\x07", exc_info=True)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "could not use passage [/bold]␛]0;x␇" in text
    assert "ValueError: document says ␛[2J<U+202E>evil" in text
    assert not RAW.search(text)


def test_chat_page_inserts_untrusted_text_as_text_only() -> None:
    static = Path(__file__).resolve().parents[2] / "ragkit" / "server" / "static"
    pages = sorted(static.glob("*.html"))
    assert pages
    for page in pages:
        script = page.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, f"{page.name} uses {sink}"
        # a file name's bidi controls must not reorder the text around it: it sits in a <bdi>
        for line in script.splitlines():
            if re.search(r"\w\.source\b", line) and not line.lstrip().startswith("//"):
                assert "isolated(" in line, f"{page.name}: source shown without isolation: {line}"
