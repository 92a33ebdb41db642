"""The issue's acceptance questions on the four wiki texts: answered, correct, exactly cited.

Why a separate gate: dev F1 and abstention rank candidates, but a candidate can win on them and
still decline the question a user asks first (session 13: a third adapter that read better on
both dev splits abstained on the Strasbourg question at every bias its dev abstention allowed).
Any new default (adapter, bias, threshold) must pass this before it ships; the answers below
were read off ``../shared/data/wiki`` (each a verbatim span there), not off a model's output.

    .venv/bin/python benchmarks/acceptance_check.py                      # the shipped default
    .venv/bin/python benchmarks/acceptance_check.py --adapter DIR --abstain-bias -2 --abstain-below 0

Prints one JSON line per question and a summary; exits 1 when the Strasbourg question (the
issue's own) fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from answer_quality import ROOT, _quote_slices_source, build_pipeline

WIKI = ROOT.parent / "shared" / "data" / "wiki"
WORK = ROOT / "benchmarks" / ".work" / "acceptance"

QUESTIONS: list[tuple[str, str]] = [
    (
        "In which year was Strasbourg formally designated the seat of the European Parliament?",
        "1992",
    ),
    ("When was the Grande Île of Strasbourg classified as a World Heritage site?", "1988"),
    ("In which year was Strasbourg chosen to be the seat of the Council of Europe?", "1949"),
    ("How many inhabitants did the city proper of Strasbourg have in 2013?", "275,718"),
    ("In which river is the Grande Île of Strasbourg?", "Ill"),
    ("According to materialism, what is the fundamental substance in nature?", "matter"),
    ("Which view is materialism closely related to?", "physicalism"),
]


def ensure_wiki_index() -> Path:
    """The wiki texts indexed with ragkit's defaults, as ``ragkit index ../shared/data/wiki``."""
    from ragkit import Index, index_paths

    index_dir = WORK / "index"
    if not (index_dir / "manifest.json").is_file():
        if not WIKI.is_dir():
            raise SystemExit(f"error: {WIKI} is missing (the shared data folder)")
        with Index.open_or_create(index_dir) as index:
            index_paths(index, [WIKI])
    return index_dir


def holds(text: str, gold: str) -> bool:
    """``gold`` as whole words of ``text`` ("Ill" is not in "will")."""
    return re.search(rf"(?<!\w){re.escape(gold.lower())}(?!\w)", text.lower()) is not None


def check(answer: Any, gold: str) -> dict[str, Any]:
    """Answered, the gold text in the answer, and a citation that quotes it from its source."""
    text = answer.answer or ""
    correct = not answer.abstained and holds(text, gold)
    cited = any(
        c.quote is not None and holds(c.quote, gold) and _quote_slices_source(c)
        for c in answer.citations
    )
    return {
        "answer": text,
        "abstained": answer.abstained,
        "answerability": getattr(answer, "answerability", None),
        "correct": correct,
        "cited": cited,
        "passed": correct and cited,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="an answer_quality.py configuration")
    parser.add_argument("--adapter", help="an adapter folder in place of the configuration's")
    parser.add_argument("--abstain-bias", type=float)
    parser.add_argument("--abstain-below", type=float)
    args = parser.parse_args(argv)
    from ragkit.errors import RagkitError

    try:
        return run(args)
    except RagkitError as exc:  # a bad adapter, model or index: the library's one-line message
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    rag = build_pipeline(
        args.config,
        ensure_wiki_index(),
        abstain_bias=args.abstain_bias,
        adapter=args.adapter,
        abstain_below=args.abstain_below,
    )
    rows = []
    for question, gold in QUESTIONS:
        start = time.perf_counter()
        row = {"question": question, "gold": gold, **check(rag.ask(question), gold)}
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    summary = {
        "passed": sum(r["passed"] for r in rows),
        "questions": len(rows),
        "strasbourg_passed": rows[0]["passed"],
        "config": args.config,
        "adapter": args.adapter,
        "abstain_bias": args.abstain_bias,
        "abstain_below": args.abstain_below,
    }
    print(json.dumps(summary))
    return 0 if rows[0]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
