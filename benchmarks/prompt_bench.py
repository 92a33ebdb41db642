"""What each prompting strategy costs and gains: zero-shot, few-shot, CoT, self-consistency.

On the answerable questions of ``../shared/data/squad_small.json``, with the packaged
SmolLM2-135M-Instruct and the gold paragraph as the context, every strategy answers the same
base prompt (the built-in ``context_qa`` template: "reply with the shortest phrase from the
context"), built only from the ``prompts`` package's own classes:

- ``zero-shot``: the template, rendered and generated (greedy).
- ``few-shot``: :class:`prompts.FewShotStep` inserts k=3 demonstrations chosen by a
  :class:`prompts.SemanticSelector` (the ragkit embedder, cached) from the questions of the
  *other* article, so no demonstration shares a paragraph (or an answer) with the question.
  A demonstration's context is the sentence of its gold paragraph that holds the answer: whole
  paragraphs would triple the prompt, and on a CPU reading the prompt is most of the cost.
- ``cot``: :class:`prompts.ChainOfThought` (zero-shot "Let's think step by step", answer
  parsed from the last ``Answer:`` line), greedy.
- ``self-consistency``: :class:`prompts.SelfConsistency`, N=5 samples at temperature 0.7 in
  one batched generator call per question (seeded), majority vote.

Scores are the SQuAD exact match and token F1 of ``ragkit.evaluation`` (official
normalisation, best over the gold answers) on the strategy's final answer. Cost columns:
generated tokens per question (all samples for self-consistency), wall and CPU seconds per
question. Questions are processed in chunks, each chunk through every strategy in turn, so a
run cut short (or a burst of load from other processes) affects the strategies alike; the
JSON is rewritten after every chunk.

    .venv/bin/python benchmarks/prompt_bench.py --limit 5                # quick check
    nice -n 10 .venv/bin/python benchmarks/prompt_bench.py --limit 60 --threads 1
    .venv/bin/python benchmarks/prompt_bench.py --strategies zero-shot,cot --limit 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "squad_small.json"
RESULTS = REPO / "benchmarks" / "results"
STRATEGIES = ("zero-shot", "few-shot", "cot", "self-consistency")

if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from prompts import (  # noqa: E402
    ChainOfThought,
    Example,
    FewShotStep,
    SelfConsistency,
    SemanticSelector,
    library_template,
)
from ragkit.evaluation.datasets import EvalQuestion, read_squad  # noqa: E402
from ragkit.evaluation.metrics import (  # noqa: E402
    abstained,
    exact_match,
    normalize_answer,
    token_f1,
)


@dataclass
class Answer:
    """One strategy's answer to one question, with its cost."""

    text: str
    raw: str
    completion_tokens: int
    prompt_tokens: int
    parsed: bool | None = None
    confidence: float | None = None


@dataclass
class Chunk:
    """One strategy on one chunk of questions: timings and the answers."""

    strategy: str
    wall_s: float
    cpu_s: float
    others_cores: float
    answers: list[Answer] = field(default_factory=list)


# ---------------------------------------------------------------- machine load


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (zeros elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def timed(action: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """``(result, wall s, own CPU s, cores used by other processes)`` of one call.

    The machine is shared, so the cores others kept busy are recorded beside every timing:
    the own-CPU column is the one to compare when that number is high.
    """
    busy0, total0 = _cpu_ticks()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = action()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    busy1, total1 = _cpu_ticks()
    cores = os.cpu_count() or 1
    machine_busy_s = (busy1 - busy0) / max(total1 - total0, 1) * cores * wall
    return result, wall, cpu, max(0.0, (machine_busy_s - cpu) / wall) if wall else 0.0


# ---------------------------------------------------------------- data


def article_of(q: EvalQuestion) -> str:
    """The article title (read_squad names a paragraph ``<title>#<n>``)."""
    return q.gold_ids[0].rsplit("#", 1)[0]


def answer_sentence(q: EvalQuestion) -> str:
    """The sentence of the gold paragraph that contains the first gold answer."""
    context = q.context or ""
    start = q.answer_starts[0] if q.answer_starts and q.answer_starts[0] >= 0 else None
    if start is None:
        start = max(context.find(q.answers[0]), 0)
    end = start + len(q.answers[0])
    bounds = [m.end() for m in re.finditer(r"[.!?](?=\s)", context)]
    left = max((b for b in bounds if b <= start), default=0)
    right = min((b for b in bounds if b >= end), default=len(context))
    return context[left:right].strip()


def user_turn(context: str, question: str) -> str:
    """The user message of the base template (so demonstrations look like the real query)."""
    messages = library_template("context_qa").render(context=context, question=question)
    return str(messages[-1]["content"])


def demonstration(q: EvalQuestion) -> Example:
    """A few-shot example: the answer's sentence as context, the first gold answer as output."""
    return Example(
        input=user_turn(answer_sentence(q), q.question), output=q.answers[0], key=q.question
    )


def pick(questions: list[EvalQuestion], limit: int | None, seed: int) -> list[EvalQuestion]:
    """All questions, or a seeded sample of ``limit`` kept in file order (both articles)."""
    if limit is None or limit >= len(questions):
        return questions
    chosen = set(random.Random(seed).sample(range(len(questions)), limit))
    return [q for i, q in enumerate(questions) if i in chosen]


# ---------------------------------------------------------------- strategies


class Bench:
    """The generator, the embedder-backed selectors and one runner per strategy."""

    def __init__(self, args: argparse.Namespace, pool: list[EvalQuestion]) -> None:
        from ragkit.embedding import Embedder
        from ragkit.generation import Generator

        self.args = args
        self.generator = Generator(args.model, batch_size=args.batch_size).warm_up()
        self.template = library_template("context_qa")
        self.short = {"max_new_tokens": args.max_new_tokens}
        self.long = {"max_new_tokens": args.cot_max_new_tokens}
        self.embed = Embedder().encode
        self.selectors: dict[str, SemanticSelector] = {}
        by_article: dict[str, list[Example]] = {}
        for q in pool:
            by_article.setdefault(article_of(q), []).append(demonstration(q))
        for article in by_article:
            others = [e for a, ex in by_article.items() if a != article for e in ex]
            self.selectors[article] = SemanticSelector(others, self.embed, k=args.shots)
        for selector in self.selectors.values():  # embed the example pool now, untimed
            selector.select(pool[0].question)
        self.fewshot = {
            article: FewShotStep(
                selector,
                count_tokens=self.generator.count_tokens,
                max_tokens=self.generator.max_prompt_tokens(self.short),
            )
            for article, selector in self.selectors.items()
        }
        self.cot = ChainOfThought(self.generator, options=self.long)
        self.sc = SelfConsistency(
            self.generator,
            n=args.sc_n,
            temperature=args.temperature,
            seed=args.seed,
            options=self.long,
        )

    def prompt(self, q: EvalQuestion) -> list[dict[str, str]]:
        return list(self.template.render(context=q.context, question=q.question))

    def generate(self, prompts: Sequence[Any]) -> list[Answer]:
        results = self.generator.generate(list(prompts), **self.short)
        return [
            Answer(r.text.strip(), r.text, r.completion_tokens, r.prompt_tokens) for r in results
        ]

    def zero_shot(self, qs: list[EvalQuestion]) -> list[Answer]:
        return self.generate([self.prompt(q) for q in qs])

    def few_shot(self, qs: list[EvalQuestion]) -> list[Answer]:
        prompts = [self.fewshot[article_of(q)].run(self.prompt(q), q.question).prompt for q in qs]
        return self.generate(prompts)

    def chain_of_thought(self, qs: list[EvalQuestion]) -> list[Answer]:
        results = self.cot.run_batch([{"prompt": self.prompt(q)} for q in qs])
        return [
            Answer(r.text, r.raw, r.completion_tokens, r.prompt_tokens, parsed=r.parsed)
            for r in results
        ]

    def self_consistency(self, qs: list[EvalQuestion]) -> list[Answer]:
        answers = []
        for q in qs:  # N samples of one question form one batched call
            voted = self.sc.run(self.prompt(q))
            answers.append(
                Answer(
                    voted.text,
                    "\n---\n".join(s.raw for s in voted.samples),
                    voted.completion_tokens,
                    voted.prompt_tokens,
                    parsed=any(s.parsed for s in voted.samples),
                    confidence=voted.confidence,
                )
            )
        return answers

    def runner(self, strategy: str) -> Callable[[list[EvalQuestion]], list[Answer]]:
        return {
            "zero-shot": self.zero_shot,
            "few-shot": self.few_shot,
            "cot": self.chain_of_thought,
            "self-consistency": self.self_consistency,
        }[strategy]


# ---------------------------------------------------------------- report


def contains_gold(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when a normalised gold answer occurs in the normalised prediction (not a SQuAD metric).

    A lenient reading beside EM/F1: a 135M model answers in sentences, so F1 is diluted by
    the extra words even when the answer is right.
    """
    text = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(g)} " in text for g in golds if normalize_answer(g)))


def summarise(
    golds: Sequence[Sequence[str]], chunks: list[Chunk], strategies: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per strategy: EM, F1, abstentions, parse rate, tokens and seconds per question."""
    table: dict[str, dict[str, float]] = {}
    for strategy in strategies:
        mine = [c for c in chunks if c.strategy == strategy]
        answers = [a for c in mine for a in c.answers]
        n = len(answers)
        if not n:
            continue
        pairs = list(zip(answers, golds[:n], strict=True))
        parsed = [a.parsed for a in answers if a.parsed is not None]
        table[strategy] = {
            "questions": n,
            "em": sum(exact_match(a.text, g) for a, g in pairs) / n,
            "f1": sum(token_f1(a.text, g) for a, g in pairs) / n,
            "contains_gold": sum(contains_gold(a.text, g) for a, g in pairs) / n,
            "abstained": sum(abstained(a.text) for a in answers) / n,
            "parsed": sum(parsed) / len(parsed) if parsed else float("nan"),
            "tokens_per_q": sum(a.completion_tokens for a in answers) / n,
            "prompt_tokens_per_q": sum(a.prompt_tokens for a in answers) / n,
            "wall_s_per_q": sum(c.wall_s for c in mine) / n,
            "cpu_s_per_q": sum(c.cpu_s for c in mine) / n,
            "others_cores": sum(c.others_cores * c.wall_s for c in mine)
            / max(sum(c.wall_s for c in mine), 1e-9),
        }
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    head = (
        "| strategy | questions | EM | F1 | gold contained | abstained | answer parsed "
        "| tokens generated / q | prompt tokens / q | wall s / q | CPU s / q | other cores |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = []
    for name, r in table.items():
        parsed = "–" if r["parsed"] != r["parsed"] else f"{r['parsed']:.0%}"
        rows.append(
            f"| {name} | {r['questions']:.0f} | {r['em']:.1%} | {r['f1']:.1%} | "
            f"{r['contains_gold']:.1%} | "
            f"{r['abstained']:.0%} | {parsed} | {r['tokens_per_q']:.1f} | "
            f"{r['prompt_tokens_per_q']:.0f} | {r['wall_s_per_q']:.2f} | {r['cpu_s_per_q']:.2f} | "
            f"{r['others_cores']:.2f} |"
        )
    return "\n".join([head, *rows])


def environment() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "niceness": os.nice(0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD JSON file")
    parser.add_argument("--limit", type=int, default=None, help="seeded sample of N questions")
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help=f"comma list of {', '.join(STRATEGIES)}"
    )
    parser.add_argument("--model", default=None, help="generator model (default: packaged SmolLM2)")
    parser.add_argument("--shots", type=int, default=3, help="few-shot k")
    parser.add_argument("--sc-n", type=int, default=5, help="self-consistency samples")
    parser.add_argument("--temperature", type=float, default=0.7, help="self-consistency T")
    parser.add_argument("--seed", type=int, default=0, help="question sample and sampling seed")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="zero/few-shot answers")
    parser.add_argument("--cot-max-new-tokens", type=int, default=128, help="CoT and SC")
    parser.add_argument("--batch-size", type=int, default=None, help="generator batch size")
    parser.add_argument("--chunk", type=int, default=16, help="questions per chunk")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    parser.add_argument(
        "--table", type=Path, default=None, help="only print the table of a saved result JSON"
    )
    args = parser.parse_args(argv)
    if args.table is not None:
        print(markdown(table_of(json.loads(args.table.read_text(encoding="utf-8")))))
        return 0

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    pool = [q for q in read_squad(args.data).questions if not q.is_impossible]
    questions = pick(pool, args.limit, args.seed)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"prompts-{len(questions)}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(questions)} of {len(pool)} answerable questions; strategies: {strategies}")

    (bench, load_s, _, _) = timed(lambda: Bench(args, pool))
    print(f"loaded generator and embedder in {load_s:.1f}s")

    chunks: list[Chunk] = []
    started = time.perf_counter()
    for start in range(0, len(questions), args.chunk):
        part = questions[start : start + args.chunk]
        for strategy in strategies:
            answers, wall, cpu, others = timed(lambda s=strategy, p=part: bench.runner(s)(p))
            chunks.append(Chunk(strategy, wall, cpu, others, answers))
            print(
                f"[{start + len(part)}/{len(questions)}] {strategy}: {wall:.1f}s wall, "
                f"{cpu:.1f}s CPU, others {others:.2f} cores",
                flush=True,
            )
        table = summarise([q.answers for q in questions], chunks, strategies)
        report = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": environment(),
            "elapsed_s": time.perf_counter() - started,
            "table": table,
            "questions": [
                {
                    "id": q.id,
                    "question": q.question,
                    "gold": list(dict.fromkeys(q.answers)),
                    **{
                        c.strategy: asdict(c.answers[i - c_start])
                        for c_start, c in _chunk_starts(chunks)
                        if c_start <= i < c_start + len(c.answers)
                    },
                }
                for i, q in enumerate(questions[: start + len(part)])
            ],
        }
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print()
    print(markdown(summarise([q.answers for q in questions], chunks, strategies)))
    print(f"\nresults: {out}")
    return 0


def table_of(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The table of a saved result, recomputed from its answers (e.g. after a run was cut)."""
    questions = report["questions"]
    strategies = [s for s in STRATEGIES if questions and s in questions[0]]
    timing = report["table"]
    chunks = []
    for strategy in strategies:
        answers = [Answer(**q[strategy]) for q in questions if strategy in q]
        t = timing[strategy]
        n = len(answers)
        chunks.append(
            Chunk(
                strategy,
                t["wall_s_per_q"] * n,
                t["cpu_s_per_q"] * n,
                t["others_cores"],
                answers,
            )
        )
    return summarise([q["gold"] for q in questions], chunks, strategies)


def _chunk_starts(chunks: list[Chunk]) -> list[tuple[int, Chunk]]:
    """Each chunk with the index of its first question (chunks are in question order)."""
    seen: dict[str, int] = {}
    out = []
    for c in chunks:
        start = seen.get(c.strategy, 0)
        out.append((start, c))
        seen[c.strategy] = start + len(c.answers)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
