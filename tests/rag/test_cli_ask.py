from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ragkit.cli import app
from ragkit.generation import Generator
from ragkit.rag import ChatSession, RAGPipeline

runner = CliRunner()


def _index(tmp_path: Path, tiny_model_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "alsace.txt").write_text(
        "Strasbourg is the capital of Alsace. The Rhine flows past Strasbourg.\n"
    )
    (corpus / "france.txt").write_text("Paris is the capital of France.\n")
    result = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index",
            str(tmp_path / "idx"),
            "--embedder",
            str(tiny_model_path),
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def test_ask_json_and_stream(tmp_path: Path, tiny_model_path: Path, tiny_llama_path: Path) -> None:
    index = _index(tmp_path, tiny_model_path)
    args = [
        "ask",
        "What is the capital of Alsace?",
        "--index",
        str(index),
        "--generator",
        str(tiny_llama_path),
        "--max-new-tokens",
        "6",
        "-k",
        "2",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"answer", "citations", "trace"}
    assert data["trace"]["prompt"].count("[1]") >= 1
    for citation in data["citations"]:
        assert set(citation) >= {"n", "chunk_id", "source", "start", "end", "text", "score"}

    streamed = runner.invoke(app, [*args, "--trace"])
    assert streamed.exit_code == 0, streamed.output
    assert "final prompt:" in streamed.stderr


def test_ask_bad_input(tmp_path: Path, tiny_model_path: Path, tiny_llama_path: Path) -> None:
    index = _index(tmp_path, tiny_model_path)
    cases = [
        (["ask", "  ", "--index", str(index)], "question is empty"),
        (
            ["ask", "q?", "--index", str(tmp_path / "nope"), "--generator", str(tiny_llama_path)],
            "index not found",
        ),
        (
            ["ask", "q?", "--index", str(index), "--generator", "no-such-org/no-such-model"],
            "no-such-org/no-such-model",
        ),
    ]
    for argv, message in cases:
        result = runner.invoke(app, argv)
        assert result.exit_code == 1, (argv, result.output)
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.output


def test_chat_rewrites_follow_ups(
    tmp_path: Path, tiny_model_path: Path, tiny_llama_path: Path
) -> None:
    index = _index(tmp_path, tiny_model_path)
    generator = Generator(str(tiny_llama_path), device="cpu")
    session = ChatSession(
        RAGPipeline.from_index(index, generator=generator, k=1, options={"max_new_tokens": 4}),
        max_new_tokens=6,
    )
    seen: list[object] = []
    original = generator.generate

    def spy(prompts, options=None, **overrides):  # type: ignore[no-untyped-def]
        seen.extend(prompts)
        return original(prompts, options, **overrides)

    generator.generate = spy  # type: ignore[method-assign]
    first = session.ask("What is the capital of Alsace?")
    assert len(seen) == 1, "the first turn needs no rewrite"
    second = session.ask("and of France?")
    rewrite_prompt = json.dumps(seen[1])
    assert "What is the capital of Alsace?" in rewrite_prompt and first.answer in rewrite_prompt
    assert "Last question: and of France?" in rewrite_prompt
    assert second.trace is not None
    # a random tiny model's rewrite is refused by the guard: either way the trace says what ran
    rewritten = [
        n
        for n in second.trace.notes
        if n.startswith(("follow-up rewritten as", "follow-up rewrite rejected"))
    ]
    assert rewritten, "the rewritten query is reported in the trace"
    assert len(session.history) == 4


def test_chat_command_session(tmp_path: Path, tiny_model_path: Path, tiny_llama_path: Path) -> None:
    index = _index(tmp_path, tiny_model_path)
    result = runner.invoke(
        app,
        [
            "chat",
            "--index",
            str(index),
            "--generator",
            str(tiny_llama_path),
            "--max-new-tokens",
            "4",
            "-k",
            "1",
        ],
        input="What is the capital of Alsace?\nand France?\nexit\n",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Sources") + result.stderr.count("no sources cited") == 2
