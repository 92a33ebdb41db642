from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragkit.cli import app

runner = CliRunner()


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "rivers.txt").write_text(
        "The Rhine river flows through Strasbourg.\n\nParis is the capital of France.\n"
    )
    (folder / "notes.md").write_text("# War\n\nThe war on terror began in 2001.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    return folder


def _index(corpus: Path, index: Path, model: Path, *extra: str) -> object:
    return runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index",
            str(index),
            "--embedder",
            str(model),
            "--chunk-unit",
            "chars",
            "--chunk-size",
            "200",
            *extra,
        ],
    )


def test_index_then_search_json(tmp_path: Path, corpus: Path, tiny_model_path: Path) -> None:
    result = _index(corpus, tmp_path / "idx", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert "indexed 2 file(s)" in result.stdout
    assert "broken.pdf" in result.stderr and "not a readable PDF" in result.stderr

    result = runner.invoke(
        app, ["search", "capital of France", "--index", str(tmp_path / "idx"), "-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert set(hits[0]) >= {"chunk_id", "document_id", "source", "score", "text", "start", "end"}
    source_text = Path(hits[0]["source"]).read_text()
    assert source_text[hits[0]["start"] : hits[0]["end"]] == hits[0]["text"]

    again = _index(corpus, tmp_path / "idx", tiny_model_path)
    assert again.exit_code == 0 and "2 unchanged" in again.stdout

    table = runner.invoke(
        app, ["search", "war", "--index", str(tmp_path / "idx"), "--filter", "format=markdown"]
    )
    assert table.exit_code == 0 and "2001" in table.stdout and "Rhine" not in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "", "--index", "IDX"], "query is empty"),
        (["search", "x", "--index", "MISSING"], "index not found"),
        (["search", "x", "--index", "OTHER"], "not a ragkit index"),
        (["search", "x", "--index", "IDX", "--filter", "novalue"], "key=value"),
        (["index", "MISSING", "--index", "NEW"], "path does not exist"),
        (["index", "EMPTY", "--index", "NEW"], "folder is empty"),
        (["index", "IDX", "--index", "NEW"], "is a ragkit index, not a folder of documents"),
        (
            ["index", "CORPUS", "--index", "IDX", "--embed-backend", "onnx-int8"],
            "for queries or new files alike",
        ),
        (
            ["index", "CORPUS", "--index", "IDX", "--chunk-size", "300", "--chunk-unit", "chars"],
            "chunking",
        ),
        (
            ["index", "CORPUS", "--index", "NEW", "--chunk-size", "10", "--chunk-overlap", "20"],
            "smaller than chunk_size",
        ),
        (["index", "CORPUS", "--index", "NEW", "--batch-size", "0"], "--batch-size must be"),
        (["index", "CORPUS", "--index", "NEW", "--batch-size", "-1"], "positive, got -1"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, corpus: Path, tiny_model_path: Path, args: list[str], message: str
) -> None:
    assert _index(corpus, tmp_path / "idx", tiny_model_path).exit_code == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    mapping = {
        "IDX": str(tmp_path / "idx"),
        "MISSING": str(tmp_path / "missing"),
        "OTHER": str(tmp_path / "other"),
        "NEW": str(tmp_path / "new"),
        "EMPTY": str(tmp_path / "empty"),
        "CORPUS": str(corpus),
    }
    argv = [mapping.get(a, a) for a in args]
    if argv[0] == "index":
        argv += ["--embedder", str(tiny_model_path)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    # nothing already stored is lost
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["counts"]["files"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["index", "CORPUS", "--index", "IDX", "--chunk-unit", "lines"],
            "Invalid value for '--chunk-unit': 'lines' is not one of 'tokens', 'chars'.",
        ),
        (["index", "CORPUS", "--index", "IDX", "--index-type", "lsh"], "'lsh' is not one of"),
        (["index", "CORPUS", "--index", "IDX", "--embed-backend", "cuda"], "'cuda' is not one of"),
        (["search", "x", "--index", "IDX", "--retriever", "splade"], "'splade' is not one of"),
        (["ask", "x", "--index", "IDX", "--decoding", "beam"], "'beam' is not one of"),
        (["eval", "data.json", "--format", "csv"], "'csv' is not one of 'squad', 'beir'"),
        (["feedback", "export", "fb.db", "-o", "x.jsonl", "--prompt", "x"], "'--prompt'"),
        (["align", "reward", "--feedback-prompt", "x"], "'--feedback-prompt'"),
        (["search", "x", "--index", "IDX", "--bogus"], "No such option: --bogus"),
        (["align", "ppo"], "Missing option '--config'"),
        (["ask", "x", "--index", "IDX", "--max-new-tokens", "0"], "'--max-new-tokens'"),
        (["eval", "data.json", "--limit", "0"], "'--limit'"),
        (
            ["ask", "x", "--index", "IDX", "--abstain-bias", "1e39"],
            "'--abstain-bias': must be from -100 to 100, not 1e+39",
        ),
        (
            ["ask", "x", "--index", "IDX", "--abstain-bias", "nan"],
            "'--abstain-bias': must be a number from -100 to 100, not nan",
        ),
        (
            ["ask", "x", "--index", "IDX", "--abstain-below", "inf"],
            "'--abstain-below': must be a number from 0 to 1, not inf",
        ),
        (
            ["ask", "x", "--index", "IDX", "--min-relevance", "1.5"],
            "'--min-relevance': must be from -1 to 1, not 1.5",
        ),
        # an empty path was the current folder ("" -> Path(".")): indexed whatever was there
        (["index", "", "--index", "IDX"], "'paths': a path is empty"),
        (["index", "docs", "--index", ""], "'--index' / '-i': is empty"),
        (["search", "x", "--index", " "], "'--index' / '-i': is empty"),
    ],
)
def test_usage_errors_are_one_line_naming_the_choices(args: list[str], message: str) -> None:
    """Choices are checked by the parser (before any model or index is opened): one line, the
    usage-error status 2, and where to read more."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0
    assert message in result.stderr and "--help" in result.stderr


def test_help_lists_the_choices() -> None:
    result = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for choices in (
        "plain|fewshot|cot|self-consistency|least-to-most",
        "dense|bm25|hybrid",
        "free|grounded",
        "transformers|auto|llamacpp|openai|vllm",
    ):
        assert choices in result.stdout


def test_embed_backend_choices_are_the_embedders() -> None:
    from typing import get_args

    from ragkit.cli.index import EmbedBackendChoice
    from ragkit.embedding.backends.base import AUTO, BACKEND_NAMES

    assert get_args(EmbedBackendChoice) == (AUTO, *BACKEND_NAMES)
    result = runner.invoke(app, ["index", "missing", "--index", "x", "--embed-backend", "ONNX"])
    assert result.exit_code == 1 and "path does not exist" in result.stderr  # case-insensitive


def test_delete_and_info(tmp_path: Path, corpus: Path, tiny_model_path: Path) -> None:
    assert _index(corpus, tmp_path / "idx", tiny_model_path).exit_code == 0
    doc_id = (corpus / "notes.md").resolve().as_posix()
    result = runner.invoke(app, ["delete", doc_id, "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", "--index", str(tmp_path / "idx")])
    assert json.loads(info.stdout)["counts"]["documents"] == 1
    missing = runner.invoke(app, ["delete", "nope", "--index", str(tmp_path / "idx")])
    assert missing.exit_code == 1 and "no such document" in missing.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["ask", "q", "--index", "IDX"],
        ["chat", "--index", "IDX"],
        ["serve", "--index", "IDX"],
        ["eval", "data.json", "--index", "IDX", "--generate"],
    ],
)
def test_the_abstention_options_reach_the_pipeline(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--abstain-bias`` and ``--abstain-below`` set the answer/abstain trade-off the profile
    chose; every answering command must hand both to the pipeline it builds."""
    import ragkit.evaluation
    import ragkit.rag
    from ragkit.errors import RagkitError

    seen: dict[str, object] = {}

    def record(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise RagkitError("recorded")

    monkeypatch.setattr(ragkit.rag, "answering_pipeline", record)
    monkeypatch.setattr(ragkit.evaluation, "run_evaluation", record)
    options = ["--abstain-bias", "-2.5", "--abstain-below", "0.3", "--min-relevance", "0.4"]
    result = runner.invoke(app, [*argv, *options])
    assert result.exit_code == 1 and "recorded" in result.stderr, result.output
    assert seen["abstain_bias"] == -2.5 and seen["abstain_below"] == 0.3
    assert seen["min_relevance"] == 0.4
