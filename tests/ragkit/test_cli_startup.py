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

HEAVY = ("torch", "transformers", "sentence_transformers", "alignment")


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


def test_align_ppo_forwards_to_the_alignment_command(tmp_path: Path) -> None:
    from alignment.ppo.cli import align_ppo_command
    from ragkit import cli

    # the CLI's lazy stand-in offers exactly the job command's options
    def options(command: object) -> list[tuple[object, ...]]:
        one = typer.Typer()
        one.command()(command)
        return [
            (p.name, tuple(p.opts), getattr(p, "help", None), p.required, p.default)
            for p in typer.main.get_command(one).params
        ]

    assert options(cli.align_ppo_command) == options(align_ppo_command)
    config = tmp_path / "ppo.yaml"
    config.write_text("reward: {rule: length}\nppo: {epochs: 2}\n")
    bad = CliRunner().invoke(app, ["align", "ppo", "--config", str(config)])
    assert bad.exit_code == 1
    assert "unknown key 'ppo.epochs'" in bad.stderr and "Traceback" not in bad.output
