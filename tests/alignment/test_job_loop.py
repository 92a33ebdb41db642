"""The shared job loop on a toy job (no model): schedule, resume, fingerprint, fresh runs.

Also what keeps it the one loop: no alignment module imports another's private names, and the
bookkeeping settings are defined once.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import alignment
from alignment.checkpoint import (
    STATE_FILE,
    CheckpointLayout,
    check_fingerprint,
    read_checkpoint_state,
)
from alignment.errors import CheckpointError
from alignment.job_loop import Interrupted, JobLoop, Schedule
from alignment.metrics import read_metrics
from ragkit.atomic import atomic_directory

ALIGNMENT = Path(alignment.__file__).resolve().parent
LAYOUT = CheckpointLayout(prefix="update", digits=6)


class Counter:
    """A job state: the steps done and the sum of the step numbers (what a resume must keep)."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def step(self, done: int) -> dict[str, float]:
        assert done == self.done
        self.done += 1
        self.total += self.done
        return {"loss": 1.0 / self.done, "total": float(self.total)}

    def save_checkpoint(self, directory: Path, *, fingerprint: str) -> Path:
        state = {"done": self.done, "total": self.total, "fingerprint": fingerprint}

        def fill(tmp: Path) -> None:
            (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

        return atomic_directory(directory, fill)

    def load_checkpoint(self, directory: Path, *, fingerprint: str) -> int:
        meta = read_checkpoint_state(directory)
        check_fingerprint(meta, fingerprint, directory)
        self.done, self.total = int(meta["done"]), int(meta["total"])
        return self.done


def accelerator() -> Any:
    return SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)


def make_loop(
    out: Path, state: Counter, fingerprint: str = "a", **schedule: Any
) -> tuple[JobLoop, list[int]]:
    started: list[int] = []
    settings: dict[str, Any] = {"total_steps": 5, **schedule}
    evaluations = iter(range(100))
    loop = JobLoop(
        output_dir=out,
        schedule=Schedule(**settings),
        step=state.step,
        state=state,
        fingerprint=fingerprint,
        accelerator=accelerator(),
        evaluate=lambda: {"score": float(next(evaluations))},
        layout=LAYOUT,
        on_start=started.append,
        progress=False,
    )
    return loop, started


def steps(out: Path, split: str) -> list[int]:
    return [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == split]


def test_schedule_of_logs_evaluations_and_checkpoints(tmp_path: Path) -> None:
    loop, started = make_loop(
        tmp_path, Counter(), log_every=2, eval_every=2, checkpoint_every=2, keep_checkpoints=5
    )
    result = loop.run()
    assert started == [0] and result.steps == 5 and result.resumed_from is None
    assert steps(tmp_path, "train") == [2, 4]
    assert steps(tmp_path, "eval") == [2, 4, 5]  # and after the last step
    assert [s for s, _ in LAYOUT.existing(tmp_path)] == [2, 4]  # no final checkpoint asked
    assert result.train["total"] == 15 and result.eval == {"score": 2.0}


def test_evaluation_at_start_and_final_checkpoint(tmp_path: Path) -> None:
    loop, _ = make_loop(
        tmp_path, Counter(), evaluate_at_start=True, final_checkpoint=True, checkpoint_every=2
    )
    result = loop.run()
    assert steps(tmp_path, "eval") == [0, 5] and result.eval_start == {"score": 0.0}
    assert [s for s, _ in LAYOUT.existing(tmp_path)] == [4, 5]  # keep_checkpoints=2


def test_resume_continues_from_the_newest_checkpoint(tmp_path: Path) -> None:
    straight, _ = make_loop(tmp_path / "straight", Counter(), checkpoint_every=2)
    expected = straight.run()
    state = Counter()
    broken, _ = make_loop(tmp_path / "broken", state, checkpoint_every=2, evaluate_at_start=True)

    def stop(step: int, values: dict[str, float]) -> None:
        if step == 3:
            raise Interrupted

    broken.on_step = stop
    with pytest.raises(Interrupted):
        broken.run()
    resumed, started = make_loop(
        tmp_path / "broken", Counter(), checkpoint_every=2, evaluate_at_start=True
    )
    result = resumed.run(resume=True)
    assert result.resumed_from == 2 and started == [2]
    assert result.train == expected.train
    assert steps(tmp_path / "broken", "train") == [1, 2, 3, 4, 5]  # step 3 once
    assert result.eval_start == {"score": 0.0}  # read back, not evaluated again


def test_resume_refuses_another_jobs_checkpoint(tmp_path: Path) -> None:
    make_loop(tmp_path, Counter(), checkpoint_every=1)[0].run()
    other, _ = make_loop(tmp_path, Counter(), fingerprint="b")
    with pytest.raises(CheckpointError, match="other model/data/training settings"):
        other.run(resume=True)


def test_resume_without_checkpoint_is_an_error_or_a_fresh_start(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        make_loop(tmp_path, Counter())[0].run(resume=True)
    loop, _ = make_loop(tmp_path, Counter(), resume_needs_checkpoint=False)
    assert loop.run(resume=True).resumed_from is None


def test_a_fresh_run_forgets_what_an_earlier_run_left(tmp_path: Path) -> None:
    make_loop(tmp_path, Counter(), total_steps=8, checkpoint_every=4)[0].run()
    assert [s for s, _ in LAYOUT.existing(tmp_path)] == [4, 8]
    make_loop(tmp_path, Counter(), total_steps=3, checkpoint_every=2)[0].run()
    # the stale step-8 checkpoint would otherwise be what a later --resume picks
    assert [s for s, _ in LAYOUT.existing(tmp_path)] == [2]
    assert steps(tmp_path, "train") == [1, 2, 3]


# --------------------------------------------------------------------------- one loop


def alignment_modules() -> list[Path]:
    return sorted(ALIGNMENT.rglob("*.py"))


def test_no_module_imports_another_modules_private_names() -> None:
    found = []
    for path in alignment_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alignment"):
                found += [
                    f"{path.relative_to(ALIGNMENT)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert found == []


def test_bookkeeping_settings_are_defined_once() -> None:
    defined = [
        str(path.relative_to(ALIGNMENT))
        for path in alignment_modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "BOOKKEEPING" for t in node.targets)
    ]
    assert defined == ["checkpoint.py"]
