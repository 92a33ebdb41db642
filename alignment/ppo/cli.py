"""``ragkit align ppo``: the command function, registered by ``ragkit/cli.py``.

Self-contained (imports nothing from ``ragkit.cli``, so registering it there makes no import
cycle). Register with::

    from alignment.ppo.cli import align_ppo_command
    align_app.command("ppo")(align_ppo_command)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ragkit.errors import RagkitError


def _config(config: Path, output: Path | None, limit: int | None) -> Any:
    from alignment.config import load_config, override
    from alignment.ppo.job import PPOJobConfig

    return override(load_config(PPOJobConfig, config), {"output_dir": output, "data.limit": limit})


def ppo_summary(result: Any) -> dict[str, Any]:
    """The JSON printed at the end of a run: where things are and the headline numbers."""
    last = result.last_metrics
    return {
        "model": str(result.model_dir),
        "updates": result.updates,
        "seconds": round(result.seconds, 1),
        "resumed_from": result.resumed_from,
        "metrics": str(result.metrics_path),
        "curves": str(result.plot_path) if result.plot_path else None,
        "samples": str(result.samples_path),
        "heldout_score_start": result.heldout_start.get("score"),
        "heldout_score_end": result.heldout_end.get("score"),
        "last_score": last.get("score"),
        "last_kl": last.get("kl"),
        "train_prompts": result.train_prompts,
        "heldout_prompts": result.heldout_prompts,
    }


def align_ppo_command(
    config: Annotated[
        Path,
        typer.Option("--config", help="Job config (YAML); see examples/configs/ppo.yaml."),
    ],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Output folder (overrides output_dir).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Read only the first N prompt records.")
    ] = None,
) -> None:
    """PPO fine-tuning of the generator against a reward model (InstructGPT step 3)."""
    from alignment.ppo.job import train_ppo

    try:
        result = train_ppo(_config(config, output, limit), resume=resume)
    except RagkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        print("error: interrupted; resume with --resume", file=sys.stderr)
        raise typer.Exit(code=1) from None
    print(json.dumps(ppo_summary(result), indent=2, default=str))
