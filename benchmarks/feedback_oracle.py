"""A scripted user of ``ragkit serve``: preference data through the real feedback path (issue 20).

The oracle is a benchmark, not part of the library. ``collect`` starts ``ragkit serve`` on
127.0.0.1 (a free port) over the index of ``answer_quality.py`` (all 87 paragraphs of
``../shared/data/squad_small.json``), with ``--feedback-db`` under ``benchmarks/.work/``, and
then only talks HTTP, like any client:

1. for each question of the chosen splits, ``POST /v1/query`` ``--samples`` times with
   ``temperature`` and a ``seed`` (1, 2, ...): sampled answers of the current default generator
   (the packaged Gemma 3 270M + grounded-qa adapter, grounded decoding), requests one at a time
   so that every answer is reproducible;
2. score each answer with the oracle: correctness = SQuAD token F1 to the gold answers
   (``ragkit.evaluation.metrics``; an abstention scores 0), or for an unanswerable question 1
   for an abstention and 0 otherwise; citation correctness = the answer has citations and each
   cited span (the grounded quote, else the passage) contains the answer, after SQuAD
   normalisation (an abstention needs none);
3. compare every two distinct answers of a question (distinct texts; the first answer of each
   text) by (correctness, citation correctness), lexicographically, and ``POST /v1/feedback``
   ``{"chosen_id", "rejected_id"}`` for the better one; ties are skipped;
4. stop the server and run ``ragkit feedback export DB -o PAIRS`` (the command a real user runs),
   once with the default prompt (passages + question) and once with ``--prompt question``.

Questions are asked in file order (``--limit``: a seeded random sample); ``--resume`` keeps the
store and skips the questions already done; ``--max-minutes`` stops asking after a time limit.

``score-reward`` scores a pair file (e.g. the held-out article's export) with a saved reward
model, tokenised exactly as in training, and reports pairwise accuracy with 95 % bootstrap
intervals (over pairs, and over questions: pairs of one question are not independent).

    .venv/bin/python benchmarks/feedback_oracle.py collect --quick                    # plumbing (~1 min)
    .venv/bin/python benchmarks/feedback_oracle.py collect --split train --split dev --name normans
    .venv/bin/python benchmarks/feedback_oracle.py collect --split test --limit 120 --name cct120
    .venv/bin/python benchmarks/feedback_oracle.py score-reward --model DIR --pairs FILE
    .venv/bin/python benchmarks/feedback_oracle.py compare-reward A.json B.json   # paired, B - A
    .venv/bin/python benchmarks/feedback_oracle.py heldout-questions --out FILE  # the test article
    .venv/bin/python benchmarks/feedback_oracle.py control-data --pairs PAIRS --out DEMOS
    .venv/bin/python benchmarks/feedback_oracle.py export-served --db DB --out PAIRS

``heldout-questions`` writes the held-out article's questions alone as SQuAD JSON: the
questions ``ragkit align loop`` compares the current and the candidate adapter on
(``benchmarks/configs/feedback_loop_gemma.yaml``), kept under ``benchmarks/.work/``.
``export-served`` exports a store's pairs with each prompt rebuilt through the served template,
as ``ragkit align loop`` exports them, so that the loop's reward model is scored on held-out
pairs in the form it was trained on. ``control-data`` turns exported pairs into SFT demonstrations for the control run PPO is
compared with: per prompt, the preferred answers that no pair rejected (the top of the user's
ranking), as ``{"prompt", "response"}`` with the space the prompt's "Answer:" is followed by.

Progress goes to stderr and to a log under benchmarks/results/ (git-ignored), with a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_quality import ROOT, SPLITS, Item, split_items
from llamacpp_site import environment_with_llamacpp

WORK = ROOT / "benchmarks" / ".work" / "feedback_oracle"
RESULTS = ROOT / "benchmarks" / "results"
STARTUP_SECONDS = 600.0


class Log:
    """Lines to stderr and to a log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: TextIO = path.open("a", encoding="utf-8")

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, file=sys.stderr, flush=True)
        self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


# -- the oracle ------------------------------------------------------------------------------


def oracle(item: Item, response: dict[str, Any]) -> tuple[float, float]:
    """(correctness, citation correctness) of one ``/v1/query`` response to ``item``."""
    from ragkit.evaluation.metrics import abstained, normalize_answer, token_f1

    text = str(response["answer"])
    declined = abstained(text)
    if item.impossible:
        correct = 1.0 if declined else 0.0
    else:
        correct = 0.0 if declined else round(token_f1(text, list(item.answers)), 4)
    if declined:
        return correct, 1.0
    said = normalize_answer(text)
    citations = response.get("citations") or []
    cited = bool(citations) and all(
        said and said in normalize_answer(c.get("quote") or c.get("text") or "") for c in citations
    )
    return correct, float(cited)


def preferences(
    scored: Sequence[tuple[str, str, tuple[float, float]]],
) -> tuple[list[tuple[str, str, str]], int]:
    """(chosen id, rejected id, deciding criterion) for every two distinct answers; ties skipped.

    ``scored``: (answer id, answer text, oracle score). Answers with the same text (ignoring
    case and surrounding space) are one answer: the first id is kept. Returns the pairs and the
    number of ties.
    """
    distinct: dict[str, tuple[str, tuple[float, float]]] = {}
    for answer_id, text, score in scored:
        distinct.setdefault(text.strip().casefold(), (answer_id, score))
    items = list(distinct.values())
    pairs, ties = [], 0
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (a, sa), (b, sb) = items[i], items[j]
            if sa == sb:
                ties += 1
                continue
            by = "correctness" if sa[0] != sb[0] else "citation"
            pairs.append((a, b, by) if sa > sb else (b, a, by))
    return pairs, ties


# -- the server, as a client sees it ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(base: str, path: str, body: dict[str, Any] | None = None, timeout: float = 600) -> Any:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        base + path, data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def ragkit_command() -> list[str]:
    return [sys.executable, "-m", "ragkit"]


@contextlib.contextmanager
def served(
    index_dir: Path, db: Path, log_path: Path, log: Log, extra: Sequence[str] = ()
) -> Iterator[str]:
    """``ragkit serve`` on a free loopback port with ``--feedback-db db``; yields its base URL."""
    port = free_port()
    command = [
        *ragkit_command(),
        "serve",
        "--index",
        str(index_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--feedback-db",
        str(db),
        *extra,
    ]
    log(f"starting: {' '.join(command)} (server log: {log_path})")
    with log_path.open("a", encoding="utf-8") as server_log:
        process = subprocess.Popen(
            command, stdout=server_log, stderr=subprocess.STDOUT, env=environment_with_llamacpp()
        )
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"ragkit serve exited with {process.returncode}: {log_path}")
                try:
                    health = http(base, "/v1/health", timeout=5)
                    if health.get("model_loaded") and health.get("feedback"):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() - started > STARTUP_SECONDS:
                    raise SystemExit(f"ragkit serve did not come up in {STARTUP_SECONDS:.0f} s")
                time.sleep(1.0)
            log(f"server up on {base} after {time.monotonic() - started:.1f} s")
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log(f"server stopped ({process.returncode})")


# -- collect ---------------------------------------------------------------------------------


def cmd_collect(args: argparse.Namespace) -> int:
    splits: list[str] = args.split or ["train", "dev"]
    limit, samples = args.limit, args.samples
    if args.quick:
        limit, samples = limit or 6, min(samples, 2)
    name = args.name or ("quick-" if args.quick else "") + "+".join(splits)
    items: list[Item] = []
    indexes: set[Path] = set()
    for split in splits:
        found, split_index = split_items(split)
        items += found
        indexes.add(split_index)
    if len(indexes) > 1:  # one server answers over one index
        raise SystemExit(
            f"error: --split {' '.join(splits)} retrieve from different indexes; collect "
            "the SQuAD splits and the synthetic ones in separate runs"
        )
    excluded: set[str] = set()
    for other in args.exclude or []:  # questions another run already asked
        path = WORK / f"{other}-oracle.jsonl"
        excluded |= {json.loads(line)["id"] for line in path.read_text().splitlines() if line}
    items = [i for i in items if i.id not in excluded]
    if limit is not None and limit < len(items):
        items = random.Random(args.seed).sample(items, limit)  # both kinds, in proportion
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else WORK / f"{name}.db"
    pairs_path = Path(args.pairs) if args.pairs else WORK / f"{name}-pairs.jsonl"
    progress_path = WORK / f"{name}-oracle.jsonl"  # one line per finished question: resumable
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = Log(RESULTS / f"feedback-oracle-{name}-{stamp}.log")
    if not args.resume:
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), progress_path):
            path.unlink(missing_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if progress_path.is_file():
        for line in progress_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["id"]] = row
    log(
        f"{name}: {len(items)} questions of {'+'.join(splits)} "
        f"({sum(i.impossible for i in items)} unanswerable), {samples} samples each at "
        f"temperature {args.temperature}; {len(done)} already done; store {db}"
    )
    (index_dir,) = indexes
    started = time.perf_counter()
    answer_seconds: list[float] = []
    server_log = RESULTS / f"feedback-oracle-{name}-{stamp}-server.log"
    with (
        served(index_dir, db, server_log, log, args.serve_option or ()) as base,
        progress_path.open("a", encoding="utf-8") as progress,
    ):
        for number, item in enumerate(items, 1):
            if item.id in done:
                continue
            if args.max_minutes and time.perf_counter() - started > 60 * args.max_minutes:
                log(
                    f"{name}: time limit ({args.max_minutes} min) reached before question "
                    f"{number}/{len(items)}: stopping here"
                )
                break
            scored, rows = [], []
            for sample in range(samples):
                t0 = time.perf_counter()
                response = http(
                    base,
                    "/v1/query",
                    {
                        "question": item.question,
                        "temperature": args.temperature,
                        "seed": args.seed + 1 + sample,
                    },
                )
                answer_seconds.append(time.perf_counter() - t0)
                score = oracle(item, response)
                scored.append((response["id"], response["answer"], score))
                rows.append({"id": response["id"], "answer": response["answer"], "score": score})
            pairs, ties = preferences(scored)
            for chosen, rejected, _by in pairs:
                http(base, "/v1/feedback", {"chosen_id": chosen, "rejected_id": rejected})
            row = {
                "id": item.id,
                "split": item.split,
                "impossible": item.impossible,
                "answers": rows,
                "distinct": len({r["answer"].strip().casefold() for r in rows}),
                "choices": [{"chosen": c, "rejected": r, "by": by} for c, r, by in pairs],
                "ties": ties,
            }
            progress.write(json.dumps(row) + "\n")
            progress.flush()
            done[item.id] = row
            if number % args.log_every == 0 or number == len(items):
                elapsed = time.perf_counter() - started
                choices = sum(len(r["choices"]) for r in done.values())
                log(
                    f"{name}: {number}/{len(items)} questions, {choices} choices recorded, "
                    f"{statistics.fmean(answer_seconds):.2f} s/answer, {elapsed / 60:.1f} min"
                )
    collect_seconds = time.perf_counter() - started
    question_path = pairs_path.with_name(pairs_path.stem + "-question.jsonl")
    for style, path in (("passages", pairs_path), ("question", question_path)):
        export = [*ragkit_command(), "feedback", "export", str(db), "-o", str(path)]
        export += ["--prompt", style]
        log(f"exporting: {' '.join(export)}")
        subprocess.run(export, check=True)
    exported = [
        json.loads(line)
        for line in pairs_path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    summary = summarise(items, done, exported, samples, args.temperature)
    summary.update(
        name=name,
        splits=splits,
        limit=limit,
        excluded_runs=args.exclude or [],
        seed=args.seed,
        store=str(db),
        pairs_file=str(pairs_path),
        pairs_file_question_prompt=str(question_path),
        max_minutes=args.max_minutes,
        collect_minutes=round(collect_seconds / 60, 1),
        seconds_per_answer=round(statistics.fmean(answer_seconds), 2) if answer_seconds else None,
    )
    out = RESULTS / f"feedback-oracle-{name}-{stamp}.json"
    out.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    log(json.dumps(summary))
    log(f"wrote {out}")
    log.close()
    return 0


def summarise(
    items: Sequence[Item],
    done: dict[str, dict[str, Any]],
    exported: Sequence[dict[str, Any]],
    samples: int,
    temperature: float,
) -> dict[str, Any]:
    rows = [done[i.id] for i in items if i.id in done]
    answers = [a for r in rows for a in r["answers"]]
    choices = [c for r in rows for c in r["choices"]]
    return {
        "questions": len(rows),
        "unanswerable": sum(r["impossible"] for r in rows),
        "samples": samples,
        "temperature": temperature,
        "answers": len(answers),
        "mean_correctness_of_samples": round(statistics.fmean(a["score"][0] for a in answers), 4)
        if answers
        else None,
        "citation_ok_share": round(statistics.fmean(a["score"][1] for a in answers), 4)
        if answers
        else None,
        "distinct_answers_per_question": round(statistics.fmean(r["distinct"] for r in rows), 3)
        if rows
        else None,
        "questions_with_a_choice": sum(1 for r in rows if r["choices"]),
        "choices": len(choices),
        "choices_by_correctness": sum(1 for c in choices if c["by"] == "correctness"),
        "choices_by_citation": sum(1 for c in choices if c["by"] == "citation"),
        "ties_skipped": sum(r["ties"] for r in rows),
        "exported_pairs": len(exported),
        "exported_by_origin": {
            o: sum(1 for p in exported if p.get("origin") == o)
            for o in sorted({str(p.get("origin")) for p in exported})
        },
    }


# -- score-reward ----------------------------------------------------------------------------


def bootstrap(values: Sequence[float], groups: Sequence[str] | None, rounds: int) -> list[float]:
    """95 % percentile interval of the mean; resampling whole groups when ``groups`` is given."""
    rng = random.Random(0)
    clusters: dict[str, list[float]] = {}
    for i, v in enumerate(values):
        clusters.setdefault(groups[i] if groups else str(i), []).append(v)
    keys = list(clusters)
    means = []
    for _ in range(rounds):
        drawn = [v for k in rng.choices(keys, k=len(keys)) for v in clusters[k]]
        means.append(statistics.fmean(drawn))
    means.sort()
    return [round(means[int(0.025 * rounds)], 4), round(means[int(0.975 * rounds) - 1], 4)]


def by_kind(correct: Sequence[float], pairs: Sequence[Any]) -> dict[str, Any]:
    """Accuracy on pairs of an abstention and an answer, and on pairs of two answers."""
    from ragkit.evaluation.metrics import abstained

    out: dict[str, Any] = {}
    for kind, wanted in (("abstention_vs_answer", True), ("answer_vs_answer", False)):
        hits = [
            c
            for c, p in zip(correct, pairs, strict=True)
            if (abstained(p.chosen) != abstained(p.rejected)) == wanted
        ]
        out[kind] = {
            "accuracy": round(statistics.fmean(hits), 4) if hits else None,
            "pairs": len(hits),
        }
    return out


def baselines(pairs: Sequence[Any]) -> dict[str, Any]:
    """Accuracy of text-only rules on the same pairs: what a reward model has to beat."""
    from ragkit.evaluation.metrics import abstained

    def share(rule: Any, subset: Sequence[Any]) -> dict[str, Any]:
        wins = [rule(p) for p in subset]
        decided = [w for w in wins if w is not None]
        return {
            "accuracy": round(statistics.fmean(decided), 4) if decided else None,
            "pairs": len(decided),
        }

    def longer(p: Any) -> float | None:
        a, b = len(p.chosen.split()), len(p.rejected.split())
        return None if a == b else float(a > b)

    def abstention_wins(p: Any) -> float | None:
        a, b = abstained(p.chosen), abstained(p.rejected)
        return None if a == b else float(a)

    mixed = [p for p in pairs if abstained(p.chosen) != abstained(p.rejected)]
    return {
        "abstention_vs_answer_pairs": len(mixed),
        "longer_answer_wins": share(longer, pairs),
        "abstention_wins": share(abstention_wins, pairs),
    }


def cmd_score_reward(args: argparse.Namespace) -> int:
    import torch

    from alignment import RewardModel, read_preference_jsonl
    from alignment.collate import collate_pairs
    from alignment.reward_training import split_scores
    from alignment.tokenization import tokenize_pairs

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = RewardModel.load(args.model)
    loaded = read_preference_jsonl(args.pairs, metadata_fields=("question",))
    tokenized, report = tokenize_pairs(loaded.records, model.encoder, source=str(args.pairs))
    print(report.summary(), file=sys.stderr)
    margins: dict[int, float] = {}
    order = sorted(range(len(tokenized)), key=lambda i: tokenized[i].length)
    with torch.no_grad():
        model.eval()
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            batch = collate_pairs(
                [tokenized[i] for i in idx], model.pad_token_id, model.padding_side
            )
            chosen, rejected = split_scores(
                model(batch.input_ids, batch.attention_mask, batch.position_ids)
            )
            for i, c, r in zip(idx, chosen.tolist(), rejected.tolist(), strict=True):
                margins[i] = c - r
            print(f"  scored {len(margins)}/{len(tokenized)} pairs", file=sys.stderr, flush=True)
    correct = [1.0 if margins[i] > 0 else 0.0 for i in range(len(tokenized))]
    questions = [
        str(loaded.records[tokenized[i].index].metadata.get("question", tokenized[i].group))
        for i in range(len(tokenized))
    ]
    result = {
        "model": str(args.model),
        "pairs_file": str(args.pairs),
        "pairs": len(correct),
        "questions": len(set(questions)),
        "accuracy": round(statistics.fmean(correct), 4) if correct else None,
        "ci95_pairs": bootstrap(correct, None, args.rounds) if correct else None,
        "ci95_questions": bootstrap(correct, questions, args.rounds) if correct else None,
        "mean_margin": round(statistics.fmean(margins.values()), 4) if margins else None,
        "by_kind": by_kind(correct, [loaded.records[t.index] for t in tokenized]),
        "dropped": len(loaded.records) - len(tokenized),
        # per pair, by its line in the pairs file: what compare-reward pairs two models on
        "margins": {str(tokenized[i].index): round(margins[i], 5) for i in range(len(tokenized))},
        "baselines": baselines(loaded.records),
        "bootstrap_rounds": args.rounds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"feedback-reward-heldout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_compare_reward(args: argparse.Namespace) -> int:
    """Paired difference B − A in held-out pairwise accuracy, over the pairs both scored."""
    try:
        a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (args.a, args.b))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read a score-reward result: {exc}", file=sys.stderr)
        return 2
    if not all(isinstance(r, dict) and {"margins", "pairs_file"} <= set(r) for r in (a, b)):
        print("error: both files must be score-reward results (with margins)", file=sys.stderr)
        return 2
    if a["pairs_file"] != b["pairs_file"]:
        print(
            f"error: the two results scored different pair files: {a['pairs_file']} vs "
            f"{b['pairs_file']}",
            file=sys.stderr,
        )
        return 2
    shared = sorted(set(a["margins"]) & set(b["margins"]), key=int)
    diffs = [float(b["margins"][k] > 0) - float(a["margins"][k] > 0) for k in shared]
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(args.rounds))
    result = {
        "a": args.a,
        "b": args.b,
        "pairs": len(shared),
        "accuracy_a": round(statistics.fmean(float(a["margins"][k] > 0) for k in shared), 4),
        "accuracy_b": round(statistics.fmean(float(b["margins"][k] > 0) for k in shared), 4),
        "difference_b_minus_a": round(statistics.fmean(diffs), 4),
        "ci95": [
            round(means[int(0.025 * args.rounds)], 4),
            round(means[int(0.975 * args.rounds) - 1], 4),
        ],
        "b_right_a_wrong": sum(d > 0 for d in diffs),
        "a_right_b_wrong": sum(d < 0 for d in diffs),
        "bootstrap_rounds": args.rounds,
    }
    print(json.dumps(result))
    return 0


def cmd_heldout_questions(args: argparse.Namespace) -> int:
    from answer_quality import DATA, TEST_ARTICLE

    from ragkit.atomic import atomic_write_text

    data = json.loads(DATA.read_text(encoding="utf-8"))
    held_out = {**data, "data": [a for a in data["data"] if a["title"] == TEST_ARTICLE]}
    count = sum(len(p["qas"]) for a in held_out["data"] for p in a["paragraphs"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(held_out))
    print(f"{count} questions of {TEST_ARTICLE} -> {out}")
    return 0


def control_demonstrations(pairs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per prompt (in first-seen order), each chosen answer that no pair of that prompt rejected."""
    chosen: dict[str, list[str]] = {}
    rejected: dict[str, set[str]] = {}
    for pair in pairs:
        answers = chosen.setdefault(pair["prompt"], [])
        if pair["chosen"] not in answers:
            answers.append(pair["chosen"])
        rejected.setdefault(pair["prompt"], set()).add(pair["rejected"])
    return [
        {"prompt": prompt, "response": " " + answer.strip()}
        for prompt, answers in chosen.items()
        for answer in answers
        if answer not in rejected[prompt]
    ]


def cmd_export_served(args: argparse.Namespace) -> int:
    from alignment.feedback_loop.data import ServedPromptRenderer
    from ragkit.errors import RagkitError
    from ragkit.feedback import export_preferences
    from ragkit.rag.profiles import answering_profile

    template = args.template or answering_profile(None).template
    try:
        count = export_preferences(
            args.db, args.out, render=ServedPromptRenderer(args.model, template)
        )
    except RagkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{count} pairs, prompts in the {template} format -> {args.out}")
    return 0


def cmd_control_data(args: argparse.Namespace) -> int:
    from ragkit.atomic import atomic_write_text

    path = Path(args.pairs)
    try:
        pairs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        demos = control_demonstrations(pairs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"error: {path} is not a pairs file of ragkit feedback export: {exc}", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(d) + "\n" for d in demos))
    prompts = len({d["prompt"] for d in demos})
    print(f"{len(demos)} demonstrations for {prompts} prompts ({len(pairs)} pairs) -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    co = sub.add_parser("collect", help="scripted user: sample, compare, export")
    co.add_argument("--split", action="append", choices=list(SPLITS))
    co.add_argument("--limit", type=int, help="a random sample of N questions (seeded)")
    co.add_argument("--samples", type=int, default=3, help="answers per question")
    co.add_argument("--temperature", type=float, default=1.0)
    co.add_argument("--seed", type=int, default=0, help="sample s is seeded seed + 1 + s")
    co.add_argument("--quick", action="store_true", help="6 questions, 2 samples: plumbing")
    co.add_argument("--name", help="run name (store, pairs and log file names)")
    co.add_argument("--db", help="feedback store (default benchmarks/.work/feedback_oracle/)")
    co.add_argument("--pairs", help="exported pairs (default next to the store)")
    co.add_argument("--resume", action="store_true", help="keep the store, skip done questions")
    co.add_argument("--log-every", type=int, default=5)
    co.add_argument(
        "--exclude",
        action="append",
        metavar="NAME",
        help="leave out the questions of an earlier run (before --limit); repeatable",
    )
    co.add_argument(
        "--max-minutes",
        type=float,
        help="ask no new question after this many minutes (then export as usual)",
    )
    co.add_argument(
        "--serve-option",
        action="append",
        metavar="ARG",
        help="one more argument for ragkit serve, e.g. --serve-option=--generator-backend "
        "--serve-option=llamacpp (repeatable)",
    )
    sc = sub.add_parser("score-reward", help="held-out pairwise accuracy of a reward model")
    sc.add_argument("--model", required=True, help="the reward job's model/ folder")
    sc.add_argument("--pairs", required=True, help="pairs JSONL (ragkit feedback export)")
    sc.add_argument("--batch-size", type=int, default=8)
    sc.add_argument("--threads", type=int, default=2)
    sc.add_argument("--rounds", type=int, default=2000, help="bootstrap resamples")
    cr = sub.add_parser(
        "compare-reward", help="paired accuracy difference of two score-reward runs"
    )
    cr.add_argument("a", help="score-reward result JSON of model A")
    cr.add_argument("b", help="score-reward result JSON of model B (the same pairs file)")
    cr.add_argument("--rounds", type=int, default=2000, help="bootstrap resamples")
    hq = sub.add_parser("heldout-questions", help="the held-out article's questions (SQuAD JSON)")
    hq.add_argument("--out", required=True)
    cd = sub.add_parser("control-data", help="SFT demonstrations from pairs (the PPO control)")
    cd.add_argument("--pairs", required=True, help="pairs JSONL (ragkit feedback export)")
    cd.add_argument("--out", required=True)
    es = sub.add_parser("export-served", help="pairs with prompts in the served format")
    es.add_argument("--db", required=True, help="feedback store")
    es.add_argument("--out", required=True)
    es.add_argument("--model", default="default", help="the served generator")
    es.add_argument("--template", help="default: the generator's answering profile")
    args = parser.parse_args(argv)
    if args.command == "export-served":
        return cmd_export_served(args)
    if args.command == "control-data":
        return cmd_control_data(args)
    if args.command == "heldout-questions":
        return cmd_heldout_questions(args)
    if args.command == "compare-reward":
        return cmd_compare_reward(args)
    if args.command == "collect":
        if args.samples < 2:
            parser.error("--samples must be at least 2 (answers are compared)")
        return cmd_collect(args)
    return cmd_score_reward(args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
