"""``run_feedback_loop(..., resume=True)``: finished stages are reused, never mixed across runs.

The kill -9 cases (a resume after a stage ended) are in test_feedback_loop.py; here: a resume
after the whole run (no second promotion), after a kill between the promotion and
``decision.json``, and the refusals (another config, changed pairs, a serving folder that
changed under the run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.feedback_loop import (
    STAGES_FILE,
    FeedbackLoopError,
    live_version,
    run_feedback_loop,
    versions_dir,
)

from .test_feedback_loop import (
    BASE_SCORES,
    fill_store,
    loop_config,
    make_adapter,
    scripted_evaluation,
)


def reused_stages(collected: list[tuple[str, dict[str, object]]]) -> list[str]:
    return [name for name, info in collected if info.get("resumed")]


def fresh_setup(model: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    """A filled feedback store, a serving adapter folder and a loop config over them."""
    db = tmp_path / "feedback.db"
    fill_store(db, str(model))
    serving = make_adapter(tmp_path / "deploy" / "adapter")
    return db, serving, loop_config(tmp_path, model, serving)


@pytest.fixture
def finished_run(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    """A loop run that promoted its candidate: (feedback db, serving folder, config)."""
    db, serving, config = fresh_setup(tiny_model_dir, tmp_path)
    evaluate, _ = scripted_evaluation([0.1] * len(BASE_SCORES))
    assert run_feedback_loop(db, config, evaluate=evaluate).promoted
    return db, serving, config


def test_a_resume_of_a_finished_run_reuses_every_stage_and_promotes_nothing_twice(
    finished_run: tuple[Path, Path, dict[str, object]],
) -> None:
    db, serving, config = finished_run
    version = live_version(serving)
    before = sorted(p.name for p in versions_dir(serving).iterdir())
    calls: list[str | None] = []
    stages: list[tuple[str, dict[str, object]]] = []
    result = run_feedback_loop(
        db,
        config,
        evaluate=lambda adapter: calls.append(adapter) or list(BASE_SCORES),
        resume=True,
        on_stage=lambda name, info: stages.append((name, info)),
    )
    assert calls == []  # the recorded scores, not a second evaluation
    assert reused_stages(stages) == ["export", "reward", "ppo", "evaluate"]
    assert result.promoted and result.version == version == live_version(serving)
    assert sorted(p.name for p in versions_dir(serving).iterdir()) == before
    decision = json.loads((result.output_dir / "decision.json").read_text())
    assert decision["serving_version"] == str(version)


def test_a_kill_between_promotion_and_decision_resumes_to_the_same_version(
    finished_run: tuple[Path, Path, dict[str, object]],
) -> None:
    db, serving, config = finished_run
    run = Path(str(config["output_dir"]))
    (run / "decision.json").unlink()  # as if killed right after the promotion
    version = live_version(serving)
    result = run_feedback_loop(
        db, config, evaluate=lambda adapter: pytest.fail("evaluated again"), resume=True
    )
    assert result.version == version and result.promoted
    assert json.loads((run / "decision.json").read_text())["serving_version"] == str(version)


def test_a_resume_with_another_config_is_refused(
    finished_run: tuple[Path, Path, dict[str, object]],
) -> None:
    db, _, config = finished_run
    other = {**config, "promotion": {"bootstrap_samples": 500}}
    with pytest.raises(FeedbackLoopError, match="started with another config"):
        run_feedback_loop(db, other, evaluate=lambda adapter: [0.0], resume=True)


def test_a_resume_with_another_feedback_store_is_refused(
    finished_run: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    db, _, config = finished_run
    other = tmp_path / "other.db"
    other.write_bytes(db.read_bytes())
    with pytest.raises(FeedbackLoopError, match=r"exported its pairs from .*feedback\.db, not"):
        run_feedback_loop(other, config, evaluate=lambda adapter: [0.0], resume=True)


def test_a_resume_refuses_pairs_that_changed_since_the_export(
    finished_run: tuple[Path, Path, dict[str, object]],
) -> None:
    db, _, config = finished_run
    pairs = Path(str(config["output_dir"])) / "feedback_pairs.jsonl"
    pairs.write_text(pairs.read_text()[:-50])
    with pytest.raises(FeedbackLoopError, match="changed since the run exported it"):
        run_feedback_loop(db, config, evaluate=lambda adapter: [0.0], resume=True)


def test_a_resume_refuses_a_serving_folder_changed_by_someone_else(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    db, serving, config = fresh_setup(tiny_model_dir, tmp_path)
    evaluate, _ = scripted_evaluation([-0.1] * len(BASE_SCORES))  # kept, not promoted
    assert not run_feedback_loop(db, config, evaluate=evaluate).promoted
    # another run promotes into the same serving folder meanwhile
    other = loop_config(tmp_path, tiny_model_dir, serving, output_dir=str(tmp_path / "other"))
    winning, _ = scripted_evaluation([0.1] * len(BASE_SCORES))
    assert run_feedback_loop(db, other, evaluate=winning).promoted
    with pytest.raises(FeedbackLoopError, match="serving adapter changed since this run started"):
        run_feedback_loop(db, config, evaluate=evaluate, resume=True)


def test_resume_without_a_record_starts_afresh_and_a_fresh_run_forgets_the_record(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    db, _, config = fresh_setup(tiny_model_dir, tmp_path)
    evaluate, calls = scripted_evaluation([-0.1] * len(BASE_SCORES))
    stages: list[tuple[str, dict[str, object]]] = []
    run_feedback_loop(
        db,
        config,
        evaluate=evaluate,
        resume=True,
        on_stage=lambda name, info: stages.append((name, info)),
    )
    assert reused_stages(stages) == [] and len(calls) == 2
    record = json.loads((tmp_path / "run" / STAGES_FILE).read_text())
    assert set(record["stages"]) == {"export", "reward", "ppo", "evaluate"}
    run_feedback_loop(db, config, evaluate=evaluate)  # no --resume: everything again
    assert len(calls) == 4
    assert json.loads((tmp_path / "run" / STAGES_FILE).read_text())["run_id"] != record["run_id"]


def test_an_unreadable_stage_record_is_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = tmp_path / "feedback.db"
    fill_store(db, str(tiny_model_dir))
    config = loop_config(tmp_path, tiny_model_dir, tmp_path / "adapter")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STAGES_FILE).write_text("{not json")
    with pytest.raises(FeedbackLoopError, match="is not a loop run's stage record") as excinfo:
        run_feedback_loop(db, config, evaluate=lambda adapter: [0.0], resume=True)
    assert "\n" not in str(excinfo.value)
