"""What a ``ragkit align loop`` run on the default generator shows, against its control (issue 20).

``ragkit align loop`` decides by one number per held-out question (token F1, or 1/0 for
declining an unanswerable question). The issue asks for more: the held-out reward curve with its
noise, the final KL, response length and abstention, answerable F1 of SFT-only vs SFT+PPO, and a
control: SFT continued on the same feedback for about the same time, so that a gain can be told
to be PPO's.

    # score another adapter (the control) on the loop's own held-out questions and evaluator
    .venv/bin/python benchmarks/feedback_loop_report.py evaluate \\
        --config benchmarks/configs/feedback_loop_gemma.yaml \\
        --adapter benchmarks/.work/ppo_feedback/control-sft/adapter --out CONTROL.json
    # the report: PPO curve, decision, candidate/control vs current (paired bootstrap), the plot
    .venv/bin/python benchmarks/feedback_loop_report.py report \\
        --config benchmarks/configs/feedback_loop_gemma.yaml --control CONTROL.json
    # the same for stages run one by one: PPO job folder and evaluate results of each adapter
    .venv/bin/python benchmarks/feedback_loop_report.py report --config LOOP.yaml \\
        --ppo PPO_DIR --current CURRENT.json --candidate PPO.json --control CONTROL.json

The report goes to stdout and ``benchmarks/results/feedback-loop-report-*.json``; the plot of
the PPO run (score, KL; held-out score ± one standard error) to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def _loop_config(path: str) -> Any:
    from alignment.feedback_loop import as_loop_config

    return as_loop_config(path)


def _questions(config: Any) -> list[Any]:
    from ragkit.evaluation import load_dataset

    questions = list(load_dataset(Path(config.evaluation.questions)).questions)
    limit = config.evaluation.limit
    return questions[:limit] if limit else questions


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The loop's evaluation (same questions, same scores) of one more adapter."""
    from alignment.feedback_loop import AnswerScoreEvaluator
    from ragkit.atomic import atomic_write_text

    config = _loop_config(args.config)
    started = time.perf_counter()
    scores = AnswerScoreEvaluator(config.evaluation, config.model)(args.adapter)
    record = {
        "adapter": args.adapter,
        "scores": scores,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(Path(args.out), json.dumps(record, indent=1))
    print(f"{len(scores)} questions, mean score {sum(scores) / len(scores):.4f} -> {args.out}")
    return 0


def split_scores(scores: list[float], questions: list[Any]) -> dict[str, Any]:
    """Mean score over all questions, answerable F1 and the abstention accuracy."""
    answerable = [s for s, q in zip(scores, questions, strict=True) if not q.is_impossible]
    unanswerable = [s for s, q in zip(scores, questions, strict=True) if q.is_impossible]
    return {
        "score": sum(scores) / len(scores),
        "answerable_f1": sum(answerable) / len(answerable) if answerable else None,
        "abstention": sum(unanswerable) / len(unanswerable) if unanswerable else None,
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
    }


def compare(
    candidate: list[float], current: list[float], questions: list[Any], only: str | None = None
) -> dict[str, Any]:
    """Paired bootstrap (the loop's rule) over all questions, or the answerable ones only."""
    from alignment.feedback_loop import paired_bootstrap

    keep = [
        i
        for i, q in enumerate(questions)
        if only is None or (only == "answerable") != bool(q.is_impossible)
    ]
    result = paired_bootstrap([candidate[i] for i in keep], [current[i] for i in keep])
    return result.as_dict()


def ppo_records(ppo_dir: Path) -> list[dict[str, Any]]:
    """The PPO job's metrics, each held-out record with its standard error (runs recorded
    before ``score_se`` existed get ``score_std`` / sqrt(prompts))."""
    from alignment.metrics import read_metrics

    records = read_metrics(ppo_dir / "metrics.jsonl")
    for r in records:
        if r["split"] == "eval":
            r.setdefault("score_se", r["score_std"] / math.sqrt(max(1.0, r["prompts"])))
    return records


def ppo_curve(ppo_dir: Path) -> dict[str, Any]:
    """Held-out score at each evaluation with its standard error; the last training record."""
    records = ppo_records(ppo_dir)
    evals = [r for r in records if r["split"] == "eval"]
    train = [r for r in records if r["split"] == "train"]
    first, last = evals[0], evals[-1]
    rise = last["score"] - first["score"]
    pooled_se = math.sqrt(first["score_se"] ** 2 + last["score_se"] ** 2)
    final = train[-1] if train else {}
    return {
        "held_out": [
            {"update": r["step"], "score": r["score"], "se": r["score_se"]} for r in evals
        ],
        "held_out_rise": rise,
        "held_out_rise_in_se": rise / pooled_se if pooled_se else None,
        "final_kl": final.get("kl"),
        "final_response_length": final.get("response_length"),
        "train_scores": [r.get("score") for r in train],
        "updates": len(train),
        "seconds": sum(r.get("time_total", 0.0) for r in train),
    }


def plot(ppo_dir: Path, out: Path) -> bool:
    """The run's curves with the held-out band (for runs recorded before score_se too)."""
    import tempfile

    from alignment.metrics import plot_curves

    records = ppo_records(ppo_dir)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return plot_curves(metrics, out, ("score", "kl", "response_length"))


def _scores(path: str) -> list[float]:
    return list(json.loads(Path(path).read_text(encoding="utf-8"))["scores"])


def cmd_report(args: argparse.Namespace) -> int:
    from alignment.feedback_loop import paired_bootstrap
    from ragkit.atomic import atomic_write_text

    config = _loop_config(args.config)
    questions = _questions(config)
    report: dict[str, Any] = {}
    if args.current and args.candidate:  # the loop's stages run one by one (evaluate results)
        current, candidate = _scores(args.current), _scores(args.candidate)
        ppo_dir = Path(args.ppo) if args.ppo else None
        comparison = paired_bootstrap(
            candidate,
            current,
            samples=config.promotion.bootstrap_samples,
            confidence=config.promotion.confidence,
            seed=config.promotion.seed,
        )
        won = comparison.wins(config.promotion.min_gain)
        report["decision"] = {
            "promoted": won,
            "reason": f"{'would promote' if won else 'would keep the current model'}: "
            + comparison.describe(),
        }
    else:  # a whole loop run: its evaluation and decision files
        run = Path(args.run or config.output_dir)
        evaluation = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
        decision = json.loads((run / "decision.json").read_text(encoding="utf-8"))
        current, candidate = evaluation["current"], evaluation["candidate"]
        ppo_dir = Path(args.ppo) if args.ppo else run / "ppo"
        report["run"] = str(run)
        report["decision"] = {
            "promoted": decision.get("promoted"),
            "reason": decision.get("reason"),
        }
    report.update(
        {
            "current": split_scores(current, questions),
            "candidate_ppo": split_scores(candidate, questions),
            "ppo_vs_current": compare(candidate, current, questions),
            "ppo_vs_current_answerable_f1": compare(candidate, current, questions, "answerable"),
        }
    )
    if args.control:
        control = _scores(args.control)
        report["control_sft"] = split_scores(control, questions)
        report["control_vs_current"] = compare(control, current, questions)
        report["control_vs_current_answerable_f1"] = compare(
            control, current, questions, "answerable"
        )
        report["ppo_vs_control"] = compare(candidate, control, questions)
        report["ppo_vs_control_answerable_f1"] = compare(
            candidate, control, questions, "answerable"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report["plot"] = None
    if ppo_dir is not None:
        report["ppo"] = ppo_curve(ppo_dir)
        png = RESULTS / f"feedback-loop-ppo-{stamp}.png"
        report["plot"] = str(png) if plot(ppo_dir, png) else None
    out = RESULTS / f"feedback-loop-report-{stamp}.json"
    atomic_write_text(out, json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="the loop's evaluation of one more adapter")
    ev.add_argument("--config", required=True, help="the loop's config (its evaluation section)")
    ev.add_argument("--adapter", required=True, help="a peft adapter folder or packaged name")
    ev.add_argument("--out", required=True)
    rp = sub.add_parser("report", help="PPO curve, decision, and the paired comparisons")
    rp.add_argument("--config", required=True)
    rp.add_argument("--run", help="the loop's run folder (default: the config's output_dir)")
    rp.add_argument("--ppo", help="the PPO job folder (default: the run's ppo/)")
    rp.add_argument("--current", help="an evaluate result of the current adapter")
    rp.add_argument("--candidate", help="an evaluate result of the PPO adapter")
    rp.add_argument("--control", help="an evaluate result of the control adapter")
    args = parser.parse_args(argv)
    return cmd_evaluate(args) if args.command == "evaluate" else cmd_report(args)


if __name__ == "__main__":
    raise SystemExit(main())
