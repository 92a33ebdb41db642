"""Which score separates answerable from unanswerable questions? (issue 18, abstention)

The default abstains when the abstention path's first token, plus ``abstain_bias``, outscores the
best span's first token. On the held-out article that decision barely separates the two kinds of
question (benchmarks/README.md, "Answer quality"). This measures, per question, three candidate
scores of "answer rather than abstain" and their ROC AUC (answerable = positive):

- ``first_token``: logit of the span's first token − logit of the abstention's first token
  (what the bias is added to today);
- ``sequence``: log P(span + EOS) − log P(" not in the passages" + EOS), teacher-forced;
- ``per_token``: the same difference of per-token means (length-normalised).

The span is the one grounded decoding writes when it may not abstain (bias −100). An AUC of 0.5
is chance. No configuration is chosen here; this says which signal a calibrated confidence
should be built on.

    .venv/bin/python benchmarks/abstention_signal.py --split dev
    .venv/bin/python benchmarks/abstention_signal.py --split test --limit 120
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_quality import RESULTS, build_pipeline, ensure_index, read_items, select


def continuation_logprobs(
    model: Any, tokenizer: Any, prompt: str, continuations: list[str]
) -> list[tuple[list[float], float]]:
    """Per continuation: token log-probabilities (EOS included) and the first token's logit."""
    import torch

    from alignment.ppo import selected_logprobs
    from ragkit.generation.quantization import cache_of

    eos = tokenizer.eos_token_id
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        cache = cache_of(out)  # {"cache": ...} or {"past_key_values": ...}
        last = out.logits[0, -1].float()
        results = []
        for text in continuations:
            cont = [*tokenizer(text, add_special_tokens=False).input_ids, eos]
            step = (
                model(
                    input_ids=torch.tensor([cont[:-1]]),
                    **copy.deepcopy(cache),
                    use_cache=True,
                )
                if len(cont) > 1
                else None
            )
            logits = [last] + (
                [step.logits[0, i].float() for i in range(len(cont) - 1)]
                if step is not None
                else []
            )
            lps = selected_logprobs(torch.stack(logits), torch.tensor(cont)).tolist()
            results.append((lps, float(last[cont[0]])))
    return results


def auc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > a random negative), ties counting one half."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def auc_interval(rows: list[dict[str, Any]], key: str, rounds: int = 1000) -> list[float]:
    """95 % bootstrap interval of the AUC, resampling questions."""
    import random

    rng = random.Random(0)
    values = []
    for _ in range(rounds):
        sample = rng.choices(rows, k=len(rows))
        value = auc(
            [r[key] for r in sample if not r["impossible"]],
            [r[key] for r in sample if r["impossible"]],
        )
        if value == value:  # not NaN
            values.append(value)
    values.sort()
    return [
        round(values[int(0.025 * len(values))], 3),
        round(values[int(0.975 * len(values)) - 1], 3),
    ]


def main(argv: list[str] | None = None) -> int:
    from ragkit.generation.grounded import ABSTAIN_PHRASE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--config", default="gemma-adapter-grounded")
    parser.add_argument("--adapter", help="an adapter folder in place of the configuration's")
    args = parser.parse_args(argv)
    items = select(read_items(), args.split, args.limit)
    from ragkit.errors import RagkitError

    try:
        rag = build_pipeline(args.config, ensure_index(), -100.0, adapter=args.adapter)
        rag.generator.warm_up()
    except RagkitError as exc:  # a bad adapter or model: the library's one-line message
        print(f"error: {exc}", file=sys.stderr)
        return 2
    generator = rag.generator
    model, tokenizer = generator.model, generator.tokenizer
    rows = []
    started = time.perf_counter()
    for n, item in enumerate(items, 1):
        answer = rag.ask(item.question)
        prompt = answer.trace.prompt if answer.trace else None
        if prompt is None or answer.abstained:
            continue
        (span_lps, span_first), (abs_lps, abs_first) = continuation_logprobs(
            model, tokenizer, prompt, [" " + answer.answer.strip(), " " + ABSTAIN_PHRASE]
        )
        rows.append(
            {
                "id": item.id,
                "impossible": item.impossible,
                "answer": answer.answer,
                "first_token": span_first - abs_first,
                "sequence": sum(span_lps) - sum(abs_lps),
                "per_token": sum(span_lps) / len(span_lps) - sum(abs_lps) / len(abs_lps),
            }
        )
        if n % 10 == 0:
            print(f"  {n}/{len(items)}", file=sys.stderr, flush=True)
    summary: dict[str, Any] = {
        "split": args.split,
        "questions": len(rows),
        "answerable": sum(not r["impossible"] for r in rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    for key in ("first_token", "sequence", "per_token"):
        summary[f"auc_{key}"] = round(
            auc(
                [r[key] for r in rows if not r["impossible"]],
                [r[key] for r in rows if r["impossible"]],
            ),
            3,
        )
        summary[f"auc_{key}_ci"] = auc_interval(rows, key)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"abstention-signal-{args.split}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1), encoding="utf-8")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
