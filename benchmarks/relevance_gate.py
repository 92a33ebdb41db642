"""Off-topic questions: how well the best retrieval similarity separates them (issue 18).

For each corpus (indexed alone, ragkit's defaults) the pipeline's retriever (hybrid, k = 4)
retrieves for every question, and :func:`ragkit.rag.relevance.best_similarity` gives the
highest cosine between the question and those passages: the signal of
:class:`ragkit.rag.relevance.RelevanceGate`. Questions the corpus answers must pass; questions
from another corpus are off topic there. The rule (benchmarks/README.md, "Off-topic questions:
a relevance gate") picks the threshold on the selection sets and reports the measured sets once.

    .venv/bin/python benchmarks/relevance_gate.py            # selection + measure (~2 min; ~12 the first time: indexing)
    .venv/bin/python benchmarks/relevance_gate.py --quick    # 20 questions a set, plumbing
    .venv/bin/python benchmarks/relevance_gate.py --answer-quality-effect   # the test split
    .venv/bin/python benchmarks/relevance_gate.py --cost     # its time per question vs retrieval

Results go to benchmarks/results/relevance-gate-<time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SQUAD = ROOT.parent / "shared" / "data" / "squad_small.json"
WIKI = ROOT.parent / "shared" / "data" / "wiki"
SYNTHETIC = HERE / "data" / "synthetic_qa.jsonl"
WORK = HERE / ".work" / "relevance_gate"
RESULTS = HERE / "results"
MAX_ANSWERABLE_GATED = 0.02  # the rule: at most 2 % of the answerable selection questions

# written before any measurement (session 15): questions no wiki text answers
WIKI_OFF_TOPIC = [
    "Who won the 2018 FIFA World Cup?",
    "What is the boiling point of mercury?",
    "Who wrote the novel Moby-Dick?",
    "What is the population of Tokyo?",
    "When was the Eiffel Tower built?",
    "What is the capital of Australia?",
    "Who is the CEO of Microsoft?",
]


def squad_corpus(title: str) -> tuple[list[str], list[str], list[str]]:
    """(paragraphs, answerable questions, all questions) of one squad_small article."""
    data = json.loads(SQUAD.read_text(encoding="utf-8"))
    article = next(a for a in data["data"] if a["title"] == title)
    paragraphs = [p["context"] for p in article["paragraphs"]]
    qas = [qa for p in article["paragraphs"] for qa in p["qas"]]
    answerable = [qa["question"] for qa in qas if not qa.get("is_impossible")]
    return paragraphs, answerable, [qa["question"] for qa in qas]


def synthetic_corpus(domains: str) -> tuple[list[str], list[str], list[str]]:
    """(paragraphs, answerable questions, all questions) of the synthetic domains named."""
    rows = [json.loads(line) for line in SYNTHETIC.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["paragraph_id"].split("-")[1] in domains]
    qs = [q for r in rows for q in r["questions"]]
    answerable = [q["question"] for q in qs if not q["is_impossible"]]
    return [r["paragraph"] for r in rows], answerable, [q["question"] for q in qs]


def acceptance_questions() -> list[str]:
    sys.path.insert(0, str(HERE))
    from acceptance_check import QUESTIONS

    return [question for question, _ in QUESTIONS]


def index_texts(name: str, texts: list[str]) -> Path:
    """Each text as its own file, indexed with ragkit's defaults (reused while present)."""
    from ragkit import Index, index_paths

    index_dir = WORK / name / "index"
    if (index_dir / "manifest.json").is_file():
        return index_dir
    folder = WORK / name / "texts"
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"{i:04d}.txt").write_text(text, encoding="utf-8")
    with Index.open_or_create(index_dir) as index:
        index_paths(index, [folder])
    return index_dir


def wiki_index() -> Path:
    from ragkit import Index, index_paths

    index_dir = WORK / "wiki" / "index"
    if not (index_dir / "manifest.json").is_file():
        with Index.open_or_create(index_dir) as index:
            index_paths(index, [WIKI])
    return index_dir


def similarities(index_dir: Path, questions: list[str]) -> list[float]:
    from ragkit.rag.relevance import best_similarity
    from ragkit.retrieval import make_retriever

    retriever = make_retriever(index_dir, "hybrid", k=4)
    return [best_similarity(retriever.index, q, retriever.run(q).hits) for q in questions]


def share_below(values: list[float], threshold: float) -> float:
    return sum(v < threshold for v in values) / len(values) if values else math.nan


def wilson(k: int, n: int) -> list[float]:
    """95 % Wilson interval of a proportion k/n."""
    if n == 0:
        return [math.nan, math.nan]
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def sample(values: list[str], limit: int | None) -> list[str]:
    if limit is None or len(values) <= limit:
        return values
    return random.Random(0).sample(values, limit)


def answer_quality_effect() -> int:
    """How many questions of the answer-quality test split the default's gate declines, on
    that benchmark's own index (all 87 paragraphs): the gate's effect on its numbers."""
    sys.path.insert(0, str(HERE))
    from answer_quality import ensure_index, read_items

    from ragkit.rag.profiles import answering_profile

    threshold = answering_profile(None).min_relevance
    assert threshold is not None
    items = [i for i in read_items() if i.split == "test"]
    values = similarities(ensure_index(), [i.question for i in items])
    gated = [i for i, v in zip(items, values, strict=True) if v < threshold]
    result = {
        "threshold": threshold,
        "questions": len(items),
        "answerable_gated": sum(not i.impossible for i in gated),
        "unanswerable_gated": sum(i.impossible for i in gated),
        "lowest_similarity": round(min(values), 4),
    }
    print(json.dumps(result))
    return 0


def gate_cost(rounds: int = 5) -> int:
    """Seconds per question of retrieval and of the gate after it, on the wiki index: the
    gate sits on the answering path of every question."""
    from ragkit.rag.relevance import RelevanceGate
    from ragkit.retrieval import make_retriever

    retriever = make_retriever(wiki_index(), "hybrid", k=4)
    gate = RelevanceGate(0.25, retriever.index)
    questions = acceptance_questions() + WIKI_OFF_TOPIC
    for q in questions:  # warm: models loaded, query cache as after the first retrieval
        gate.run(q, retriever.run(q).hits)
    retrieve_s = gate_s = 0.0
    for _ in range(rounds):
        for q in questions:
            t0 = time.perf_counter()
            hits = retriever.run(q).hits
            t1 = time.perf_counter()
            gate.run(q, hits)
            t2 = time.perf_counter()
            retrieve_s, gate_s = retrieve_s + t1 - t0, gate_s + t2 - t1
    n = rounds * len(questions)
    result = {
        "questions": n,
        "retrieval_ms": round(1000 * retrieve_s / n, 3),
        "gate_ms": round(1000 * gate_s / n, 3),
        "gate_over_retrieval": round(gate_s / retrieve_s, 4),
    }
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 questions a set")
    parser.add_argument(
        "--answer-quality-effect",
        action="store_true",
        help="only: the default gate on answer_quality.py's test split and index",
    )
    parser.add_argument(
        "--cost", action="store_true", help="only: the gate's time per question against retrieval's"
    )
    args = parser.parse_args(argv)
    if args.answer_quality_effect:
        return answer_quality_effect()
    if args.cost:
        return gate_cost()
    limit = 20 if args.quick else None
    started = time.perf_counter()

    normans = squad_corpus("Normans")
    cct = squad_corpus("Computational_complexity_theory")
    syn_ad = synthetic_corpus("ABCD")
    syn_e = synthetic_corpus("E")

    def measure(name: str, corpus: tuple[list[str], list[str], list[str]], off: list[str]) -> Any:
        index_dir = index_texts(name, corpus[0])
        return {
            "answerable": similarities(index_dir, sample(corpus[1], limit)),
            "off_topic": similarities(index_dir, sample(off, limit)),
        }

    selection = {
        "normans (off topic: synthetic A-D)": measure("normans", normans, syn_ad[2]),
        "synthetic A-D (off topic: Normans)": measure("synthetic-ad", syn_ad, normans[2]),
    }
    pooled = sorted(v for s in selection.values() for v in s["answerable"])
    # the highest threshold that gates at most 2 % of the pooled answerable questions
    allowed = int(MAX_ANSWERABLE_GATED * len(pooled))
    threshold = pooled[allowed] if pooled else 0.0
    measured = {
        "cct (off topic: synthetic E)": measure("cct", cct, syn_e[2]),
        "synthetic E (off topic: CCT)": measure("synthetic-e", syn_e, cct[2]),
    }
    wiki = wiki_index()
    measured["wiki (acceptance vs off topic)"] = {
        "answerable": similarities(wiki, acceptance_questions()),
        "off_topic": similarities(wiki, WIKI_OFF_TOPIC),
    }

    def summary(sets: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, s in sets.items():
            gated_ok = sum(v < threshold for v in s["answerable"])
            gated_off = sum(v < threshold for v in s["off_topic"])
            out[name] = {
                "answerable": len(s["answerable"]),
                "answerable_gated": gated_ok,
                "answerable_gated_share": round(gated_ok / len(s["answerable"]), 4),
                "answerable_gated_ci95": wilson(gated_ok, len(s["answerable"])),
                "off_topic": len(s["off_topic"]),
                "off_topic_gated": gated_off,
                "off_topic_gated_share": round(gated_off / len(s["off_topic"]), 4),
                "off_topic_gated_ci95": wilson(gated_off, len(s["off_topic"])),
                "answerable_min": round(min(s["answerable"]), 4),
                "off_topic_max": round(max(s["off_topic"]), 4),
            }
        return out

    def pooled_summary(sets: dict[str, Any]) -> dict[str, Any]:
        ok = [v for s in sets.values() for v in s["answerable"]]
        off = [v for s in sets.values() for v in s["off_topic"]]
        k_ok, k_off = sum(v < threshold for v in ok), sum(v < threshold for v in off)
        return {
            "answerable": len(ok),
            "answerable_gated_share": round(k_ok / len(ok), 4),
            "answerable_gated_ci95": wilson(k_ok, len(ok)),
            "off_topic": len(off),
            "off_topic_gated_share": round(k_off / len(off), 4),
            "off_topic_gated_ci95": wilson(k_off, len(off)),
        }

    result = {
        "threshold": round(threshold, 4),
        "rule": f"highest threshold gating at most {MAX_ANSWERABLE_GATED:.0%} of the pooled "
        "answerable selection questions",
        "quick": args.quick,
        "selection": summary(selection),
        "selection_pooled": pooled_summary(selection),
        "measured": summary(measured),
        "measured_pooled": pooled_summary(measured),
        "raw": {"selection": selection, "measured": measured},
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"relevance-gate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    shown = {k: v for k, v in result.items() if k != "raw"}
    print(json.dumps(shown, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
