"""Grounded-QA questions on paragraphs written for ragkit, across many domains (issue 18).

The default generator's answerability signals transfer poorly to text its adapter never saw
(benchmarks/README.md, "Answer quality"): everything it learnt from came from two domains
(one Wikipedia article, the Python documentation). These paragraphs are new text — 150
encyclopedic paragraphs on history, natural science, geography and economy, arts and sport,
engineering and medicine, written by LLM annotators for this project in their own words — each
with two answerable questions (exact short spans) and two SQuAD 2.0-style unanswerable ones. The
topics of ``squad_small.json`` and of the four wiki texts are excluded by the brief, so neither
the held-out article nor the acceptance questions are touched.

``benchmarks/data/synthetic_qa.jsonl``: one paragraph a line, ``{"paragraph_id", "title",
"paragraph", "questions": [{"question", "answers", "is_impossible"}, ...]}``.

- ``validate``: every answer is a verbatim span of its paragraph (the checks of pydocs_qa);
- ``sft-data``: demonstrations the way ``answer_quality.py sft-data`` makes them (the prompt
  ``ragkit ask`` builds, k = 4 hybrid retrieval over all 150 paragraphs → the first answer
  present in the passages, else the abstention phrase) — training data for an adapter, or,
  since the shipped adapter never saw it, for an answerability probe
  (``answerability_probe.py features --demos``).

    .venv/bin/python benchmarks/synthetic_qa.py validate
    .venv/bin/python benchmarks/synthetic_qa.py sft-data --out benchmarks/.work/synthetic/demos.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from pydocs_qa import index_paragraphs, problems  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "synthetic_qa.jsonl"
WORK = ROOT / "benchmarks" / ".work" / "synthetic"


def read(path: Path) -> tuple[dict[str, str], list[dict]]:
    """(paragraph id → text, question rows keyed by ``id``); a bad file ends in one line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror}") from None
    paragraphs: dict[str, str] = {}
    questions: list[dict] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pid, text = row["paragraph_id"], row["paragraph"]
            asked = row["questions"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"error: {path} line {n} is not a paragraph record ({exc})") from None
        if pid in paragraphs:
            raise SystemExit(f"error: {path} line {n}: paragraph id {pid!r} repeats")
        paragraphs[pid] = text
        questions.extend({**q, "id": pid} for q in asked)
    return paragraphs, questions


def cmd_validate(args: argparse.Namespace) -> int:
    paragraphs, questions = read(Path(args.data))
    found = problems(paragraphs, questions)
    for line in found:
        print(line, file=sys.stderr)
    answerable = sum(not q.get("is_impossible") for q in questions)
    print(
        f"{len(paragraphs)} paragraphs, {len(questions)} questions ({answerable} answerable), "
        f"{len(found)} problems"
    )
    return 1 if found else 0


def cmd_sft_data(args: argparse.Namespace) -> int:
    from answer_quality import write_demonstrations

    paragraphs, questions = read(Path(args.data))
    bad = problems(paragraphs, questions)
    if bad:
        print(f"error: {len(bad)} invalid questions, first: {bad[0]}", file=sys.stderr)
        return 1
    pairs = [
        (q["question"], None if q.get("is_impossible") else list(q["answers"])) for q in questions
    ]
    index = index_paragraphs(paragraphs, WORK)
    count, spans = write_demonstrations(pairs, index, Path(args.out), args.k, args.template)
    print(f"{count} demonstrations ({spans} with a span) -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    va = sub.add_parser("validate")
    va.add_argument("--data", default=str(DATA))
    va.set_defaults(run=cmd_validate)
    sd = sub.add_parser("sft-data")
    sd.add_argument("--data", default=str(DATA))
    sd.add_argument("--out", required=True)
    sd.add_argument("--k", type=int, default=4)
    sd.add_argument("--template", default="grounded_qa_completion")
    sd.set_defaults(run=cmd_sft_data)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
