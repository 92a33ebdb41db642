"""``ragkit align sft | reward | ppo``: the RLHF jobs of :mod:`alignment`.

The three commands share their options (defined once below); each loads the job config with
:func:`alignment.config.job_config` (the YAML file with the command line's overrides) and runs
the job function (``train_sft``, ``train_reward_model``, ``train_ppo``). The example scripts
``examples/train_sft.py`` and ``examples/train_reward_model.py`` run these commands. Importing
this module imports neither ``alignment`` nor torch: the commands do when they run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ragkit.cli.common import err, guard, print_json, say
from ragkit.feedback import PromptStyle

align_app = typer.Typer(
    help="RLHF jobs: supervised fine-tuning, reward-model training and PPO.", no_args_is_help=True
)

INTERRUPTED = "interrupted; continue from the last checkpoint with --resume"

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Job config (YAML); examples in examples/configs/.")
]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", help="Output folder (overrides output_dir).")
]
LimitOption = Annotated[
    int | None,
    typer.Option("--limit", help="Use only the first N records of the data (quick run)."),
]
ModelOption = Annotated[
    str | None, typer.Option(help="Model: HF id or local folder (default: packaged SmolLM2).")
]
MaxStepsOption = Annotated[
    int | None,
    typer.Option(
        "--max-steps", help="Stop after N optimizer steps (overrides training.max_steps)."
    ),
]
ThreadsOption = Annotated[
    int | None, typer.Option(help="torch CPU threads (default: torch's, one per core).")
]
ProgressOption = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Show a progress bar (default: the config's)."),
]


def _training_overrides(
    output: Path | None,
    limit: int | None,
    model: str | None,
    max_steps: int | None,
    threads: int | None,
    progress: bool | None,
) -> dict[str, object]:
    """SFT's and the reward model's command-line options as config keys (None: keep)."""
    return {
        "output_dir": output,
        "data.limit": limit,
        "model.name_or_path": model,
        "training.max_steps": max_steps,
        "training.threads": threads,
        "training.progress": progress,
    }


@align_app.command("sft")
def align_sft_command(
    config: ConfigOption = None,
    resume: ResumeOption = False,
    output: OutputOption = None,
    limit: LimitOption = None,
    model: ModelOption = None,
    max_steps: MaxStepsOption = None,
    threads: ThreadsOption = None,
    progress: ProgressOption = None,
) -> None:
    """Supervised fine-tuning on demonstrations (loss on response tokens only)."""
    from alignment import SFTJobConfig, train_sft
    from alignment.config import job_config

    overrides = _training_overrides(output, limit, model, max_steps, threads, progress)
    job = guard(lambda: job_config(SFTJobConfig, config, overrides))
    result = guard(lambda: train_sft(job, resume=resume), interrupted=INTERRUPTED)
    print_json(json.dumps(result.summary(), default=str))


@align_app.command("reward")
def align_reward_command(
    config: ConfigOption = None,
    resume: ResumeOption = False,
    output: OutputOption = None,
    limit: LimitOption = None,
    model: ModelOption = None,
    max_steps: MaxStepsOption = None,
    threads: ThreadsOption = None,
    progress: ProgressOption = None,
    from_feedback: Annotated[
        Path | None,
        typer.Option(
            "--from-feedback",
            help="Train on the preference pairs of this feedback store (the SQLite file of "
            "`ragkit serve --feedback-db`) instead of data.path.",
        ),
    ] = None,
    feedback_prompt: Annotated[
        PromptStyle,
        typer.Option(help="With --from-feedback: passages (passages + question) or question."),
    ] = "passages",
) -> None:
    """Train a pairwise (Bradley-Terry) reward model on preference pairs."""
    from alignment import RewardJobConfig, train_reward_model
    from alignment.config import job_config
    from alignment.reward_training import reward_config_from_feedback

    overrides = _training_overrides(output, limit, model, max_steps, threads, progress)
    job = guard(lambda: job_config(RewardJobConfig, config, overrides))
    extra: dict[str, Any] = {}
    if from_feedback is not None:  # the feedback store's pairs replace data.path
        db = from_feedback
        job, pairs = guard(
            lambda: reward_config_from_feedback(
                job, db, prompt_style=feedback_prompt, resume=resume
            )
        )
        extra["feedback"] = {"db": str(db), "pairs": pairs, "data": str(job.data.path)}
    result = guard(lambda: train_reward_model(job, resume=resume), interrupted=INTERRUPTED)
    print_json(json.dumps({**result.summary(), **extra}, default=str))


def ppo_summary(result: Any) -> dict[str, Any]:
    """What ``align ppo`` prints at the end of a run: where things are, the headline numbers."""
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


@align_app.command("ppo")
def align_ppo_command(
    config: Annotated[
        Path,
        typer.Option("--config", help="Job config (YAML); see examples/configs/ppo.yaml."),
    ],
    resume: ResumeOption = False,
    output: OutputOption = None,
    limit: LimitOption = None,
    updates: Annotated[
        int | None,
        typer.Option(
            "--updates",
            "--max-steps",
            help="Stop after N PPO updates (overrides updates; each is one rollout batch and "
            "its ppo.epochs of optimisation).",
        ),
    ] = None,
    threads: ThreadsOption = None,
    progress: ProgressOption = None,
) -> None:
    """PPO fine-tuning of the generator against a reward model (InstructGPT step 3)."""
    from alignment.config import job_config
    from alignment.ppo import PPOJobConfig, train_ppo

    overrides = {
        "output_dir": output,
        "data.limit": limit,
        "updates": updates,
        "threads": threads,
        "progress": progress,
    }
    job = guard(lambda: job_config(PPOJobConfig, config, overrides))
    result = guard(lambda: train_ppo(job, resume=resume), interrupted=INTERRUPTED)
    print_json(ppo_summary(result))


@align_app.command("loop")
def align_loop_command(
    feedback_db: Annotated[
        Path,
        typer.Option(
            "--feedback-db",
            help="The feedback store of `ragkit serve --feedback-db` (SQLite file).",
        ),
    ],
    config: Annotated[
        Path,
        typer.Option(
            "--config", help="Loop config (YAML); see examples/configs/feedback_loop.yaml."
        ),
    ],
    output: OutputOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on with the run in the output folder: finished stages are reused, the "
            "unfinished one continues from its last checkpoint.",
        ),
    ] = False,
) -> None:
    """Feedback → reward model → PPO → evaluate → promote the adapter only if it wins.

    The candidate replaces the serving adapter (atomically, with a model card) only when the
    95 % paired-bootstrap interval of its per-question gain over the current adapter lies above
    the configured minimum; otherwise the current adapter stays and the scores say why.
    """
    from alignment.feedback_loop import run_feedback_loop

    def stage(name: str, info: dict[str, Any]) -> None:
        say(f"{name}: {json.dumps(info, default=str)}", console=err, one_line=True)

    result = guard(
        lambda: run_feedback_loop(
            feedback_db, config, output_dir=output, on_stage=stage, resume=resume
        ),
        interrupted="interrupted; the serving adapter and the feedback store are unchanged "
        "(continue with --resume)",
    )
    print_json(json.dumps(result.summary(), default=str))
