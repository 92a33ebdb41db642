"""What a loop run has finished, so that ``resume`` goes on from there instead of starting over.

The loop's stages take from seconds (export) to hours (PPO on a CPU). A run killed during PPO
should not train its reward model again, and a run killed after its evaluation should not
evaluate again. ``stages.json`` in the run folder records each stage when it ends (atomically),
with what the later stages and the model card need from it; a resumed run takes those records
and re-enters the first unfinished stage, whose own job resumes from its last checkpoint.

What a resume must not do is mix runs: the record holds a fingerprint of the loop config (all
of it but ``output_dir``) and of the feedback pairs, and the adapter that was serving when the
run started (the PPO parent and the evaluation's baseline). A resume with another config, or
another feedback store, or exported pairs that changed, is a one-line error; so is one whose
serving folder changed under it, except to the version this very run promoted (a kill between
promotion and ``decision.json``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from alignment.feedback_loop.config import FeedbackLoopConfig
from alignment.feedback_loop.data import FeedbackLoopError
from alignment.job_setup import write_json

STAGES_FILE = "stages.json"
STAGES_FORMAT = 1


class _StageOutcome:
    """What the loop keeps of one job: read off the job's result, or back from its record."""

    PATHS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def of(cls, source: Any) -> Self:
        """From a job result (attributes) or a ``stages.json`` record (keys)."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if isinstance(source, Mapping):
            values = {name: source[name] for name in names}
        else:
            values = {name: getattr(source, name) for name in names}
        return cls(**{k: Path(v) if k in cls.PATHS else v for k, v in values.items()})


@dataclass(frozen=True)
class RewardStage(_StageOutcome):
    """The reward job's model and scores."""

    PATHS: ClassVar[frozenset[str]] = frozenset({"model_dir"})

    model_dir: Path
    validation: dict[str, float]
    train_pairs: int
    validation_pairs: int
    normalisation_bias: float


@dataclass(frozen=True)
class PPOStage(_StageOutcome):
    """The PPO job's adapter and held-out rewards."""

    PATHS: ClassVar[frozenset[str]] = frozenset({"output_dir", "adapter_dir"})

    output_dir: Path
    adapter_dir: Path
    updates: int
    train_prompts: int
    heldout_prompts: int
    heldout_start: dict[str, float]
    heldout_end: dict[str, float]
    last_metrics: dict[str, float]


@dataclass(frozen=True)
class CurrentAdapter:
    """The adapter serving when a run starts (PPO's parent, the baseline it must beat):
    ``ref`` for loading (a folder or None), ``label`` for people, ``card`` its model card."""

    ref: str | None
    label: str
    card: dict[str, Any] | None = None


def config_fingerprint(config: FeedbackLoopConfig) -> str:
    """sha256 of the config without ``output_dir`` (a run folder may be moved or renamed)."""
    data = config.model_dump(mode="json", exclude={"output_dir"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class StageLog:
    """``stages.json`` of one run folder: the run's identity and its finished stages."""

    path: Path
    run_id: str
    config_sha256: str
    started: str
    parent: CurrentAdapter
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def begin(
        cls,
        out: Path,
        *,
        config: FeedbackLoopConfig,
        run_id: str,
        started: str,
        parent: CurrentAdapter,
        resume: bool,
    ) -> StageLog:
        """The log of a fresh run (an earlier log in ``out`` is forgotten), or with ``resume``
        the earlier run's log, checked to belong to the same config (a fresh log if none)."""
        fingerprint = config_fingerprint(config)
        path = out / STAGES_FILE
        if resume and path.is_file():
            log = cls._read(path)
            if log.config_sha256 != fingerprint:
                raise FeedbackLoopError(
                    f"--resume: {out} holds a loop run started with another config; resume "
                    "it with the config it started with, or run without --resume to start over"
                )
            return log
        log = cls(path, run_id, fingerprint, started, parent)
        log._write()
        return log

    @classmethod
    def _read(cls, path: Path) -> StageLog:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != STAGES_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {STAGES_FORMAT}")
            parent = CurrentAdapter(**data["parent"])
            return cls(
                path,
                str(data["run_id"]),
                str(data["config_sha256"]),
                str(data["started"]),
                parent,
                {str(k): dict(v) for k, v in data["stages"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FeedbackLoopError(
                f"--resume: {path} is not a loop run's stage record ({exc}); run without "
                "--resume to start over"
            ) from None

    def _write(self) -> None:
        write_json(
            self.path,
            {
                "format": STAGES_FORMAT,
                "run_id": self.run_id,
                "config_sha256": self.config_sha256,
                "started": self.started,
                "parent": asdict(self.parent),
                "stages": self.stages,
            },
        )

    def done(self, stage: str) -> dict[str, Any] | None:
        """The record of a finished stage, or None."""
        return self.stages.get(stage)

    def finish(self, stage: str, record: Any) -> None:
        """Record ``stage`` as finished: a mapping or one of the stage dataclasses (paths are
        kept as strings)."""
        data = asdict(record) if is_dataclass(record) and not isinstance(record, type) else record
        self.stages[stage] = json.loads(json.dumps(data, default=str))
        self._write()
