"""The CLI starts without the model libraries, and says its version (issue 22)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import typer
import typer.main
from typer.testing import CliRunner

from ragkit.cli import app

HEAVY = ("torch", "transformers", "sentence_transformers", "alignment", "fastapi", "uvicorn")


def test_importing_the_cli_and_help_load_no_model_library() -> None:
    probe = (
        "import sys\n"
        "import ragkit.cli\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(ragkit.cli.app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ragkit {version('ragkit')}"


def test_align_commands_share_their_options() -> None:
    """``align sft``/``reward``/``ppo`` take the same run options, defined once (ragkit.cli.align),
    including the ones the example scripts had (--max-steps, --threads, --no-progress)."""

    def options(name: str) -> dict[str, tuple[object, ...]]:
        group = typer.main.get_command(app)
        command = group.commands["align"].commands[name]  # type: ignore[attr-defined]
        return {p.name: (tuple(p.opts), tuple(p.secondary_opts), p.help) for p in command.params}

    sft, reward, ppo = options("sft"), options("reward"), options("ppo")
    shared = ("resume", "output", "limit", "threads", "progress")
    assert all(sft[name] == reward[name] == ppo[name] for name in shared)
    assert sft["max_steps"] == reward["max_steps"] and sft["model"] == reward["model"]
    assert sft["progress"][:2] == (("--progress",), ("--no-progress",))
    assert "--max-steps" in sft["max_steps"][0] and "--max-steps" in ppo["updates"][0]


def test_align_ppo_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "ppo.yaml"
    config.write_text("reward: {rule: length}\nppo: {epochs: 2}\n")
    bad = CliRunner().invoke(app, ["align", "ppo", "--config", str(config)])
    assert bad.exit_code == 1
    assert "unknown key 'ppo.epochs'" in bad.stderr and "Traceback" not in bad.output
    assert bad.stderr.strip().count("\n") == 0
