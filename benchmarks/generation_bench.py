"""Generation throughput: ragkit batched vs a one-by-one loop vs plain ``model.generate`` batched.

Prompts are SQuAD questions with their gold paragraph as context (``../shared/data/squad_small.json``),
rendered once through the model's chat template so that all three systems see identical token
ids. Decoding is greedy, so all three produce the same completions (the script checks it) and
tokens/s compare like with like. Token counts include the final EOS and exclude padding.

    .venv/bin/python benchmarks/generation_bench.py --limit 16          # quick (~2 min on 2 cores)
    .venv/bin/python benchmarks/generation_bench.py                     # 64 questions
    .venv/bin/python benchmarks/generation_bench.py --rounds 3 --json out.json

The one-by-one loop is the slowest part; ``--skip-loop`` leaves it out. On a shared machine,
check it is quiet first: the script prints the CPU time other processes used while it ran, and
alternates the systems round by round so that medians and ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad_small.json"
RESULTS = Path(__file__).resolve().parent / "results"


def squad_prompts(path: Path, limit: int) -> list[str]:
    """The first ``limit`` answerable questions, each with its paragraph as context."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    prompts: list[str] = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa.get("is_impossible"):
                    continue
                prompts.append(
                    "Answer the question using the context.\n\n"
                    f"Context: {paragraph['context']}\n\nQuestion: {qa['question']}"
                )
                if len(prompts) == limit:
                    return prompts
    return prompts


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux only)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def machine_busy(seconds: float = 2.0) -> float:
    """Fraction of the machine's CPU busy while this process sleeps (others' load)."""
    b0, t0 = cpu_ticks()
    time.sleep(seconds)
    b1, t1 = cpu_ticks()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else float("nan")


def count_completion(new_ids: list[int], eos_ids: set[int]) -> int:
    """Generated tokens up to and including the first EOS (what ragkit reports)."""
    for i, token in enumerate(new_ids):
        if token in eos_ids:
            return i + 1
    return len(new_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=64, help="questions (default 64)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the generator's")
    parser.add_argument("--model", default=None, help="default: the packaged SmolLM2")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--rounds", type=int, default=1, help="alternated repetitions")
    parser.add_argument("--skip-loop", action="store_true", help="leave out the one-by-one loop")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results/generation-<limit>-<time>.json)",
    )
    args = parser.parse_args(argv)

    import torch

    from ragkit.generation import Generator

    print(f"machine busy before start (others): {machine_busy():.0%}", flush=True)
    started = time.perf_counter()
    gen = Generator(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    gen.warm_up()
    load_s = time.perf_counter() - started
    batch_size = gen.batch_size
    model, tok = gen.model, gen.tokenizer
    prompts = squad_prompts(args.data, args.limit)
    rendered = [gen.render(p) for p in prompts]  # identical text for every system
    eos_ids = set(gen.eos_token_ids)
    pad_id = gen.pad_token_id
    m = args.max_new_tokens
    print(
        f"model={gen.source} device={gen.device} dtype={gen.dtype} threads={torch.get_num_threads()} "
        f"prompts={len(prompts)} batch_size={batch_size} max_new_tokens={m} load={load_s:.1f}s",
        flush=True,
    )

    def ragkit_batched() -> tuple[list[str], int]:
        results = gen.generate(rendered, max_new_tokens=m, apply_chat_template=False)
        return [r.text for r in results], sum(r.completion_tokens for r in results)

    def ragkit_loop() -> tuple[list[str], int]:
        results = [
            gen.generate([p], max_new_tokens=m, apply_chat_template=False)[0] for p in rendered
        ]
        return [r.text for r in results], sum(r.completion_tokens for r in results)

    def plain_batched() -> tuple[list[str], int]:
        tok.padding_side = "left"
        texts: list[str] = []
        tokens = 0
        for start in range(0, len(rendered), batch_size):
            chunk = rendered[start : start + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(gen.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=m, do_sample=False, pad_token_id=pad_id)
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                n = count_completion(row, eos_ids)
                tokens += n
                kept = row[: n - 1] if row[n - 1 : n] and row[n - 1] in eos_ids else row[:n]
                texts.append(tok.decode(kept, skip_special_tokens=True))
        return texts, tokens

    systems: dict[str, Callable[[], tuple[list[str], int]]] = {
        "ragkit batched": ragkit_batched,
        "plain model.generate batched": plain_batched,
    }
    if not args.skip_loop:
        systems["ragkit one-by-one loop"] = ragkit_loop

    # warm-up: first calls pay one-off costs (allocator, kernels)
    gen.generate(rendered[:2], max_new_tokens=4, apply_chat_template=False)

    times: dict[str, list[float]] = {name: [] for name in systems}
    cpu_times: dict[str, list[float]] = {name: [] for name in systems}
    tokens: dict[str, int] = {}
    outputs: dict[str, list[str]] = {}
    for round_index in range(args.rounds):
        names = list(systems)
        if round_index % 2:
            names.reverse()  # A B C, C B A, ...: drift in machine load hits all systems alike
        for name in names:
            b0, t0 = cpu_ticks()
            c0 = time.process_time()
            t = time.perf_counter()
            texts, n = systems[name]()
            elapsed = time.perf_counter() - t
            own = time.process_time() - c0
            b1, t1 = cpu_ticks()
            hz = 100.0  # jiffies per second on Linux
            others = max(0.0, (b1 - b0) / hz - own) / elapsed if t1 > t0 else float("nan")
            times[name].append(elapsed)
            cpu_times[name].append(own)
            tokens[name], outputs[name] = n, texts
            print(
                f"round {round_index + 1} {name:<30} {elapsed:7.1f}s {n:6d} tokens "
                f"{n / elapsed:7.1f} tok/s (other processes used {others:.1f} cores)",
                flush=True,
            )

    rates = {name: tokens[name] / statistics.median(times[name]) for name in systems}
    # tokens per CPU-second of this process: far less sensitive to other processes' load
    cpu_rates = {name: tokens[name] / statistics.median(cpu_times[name]) for name in systems}
    reference = outputs["ragkit batched"]
    agreement = {
        name: sum(a == b for a, b in zip(texts, reference, strict=True)) / len(reference)
        for name, texts in outputs.items()
    }
    print("\nmedians:                         wall tokens/s   tokens/CPU-s   same text")
    for name in systems:
        print(f"  {name:<30} {rates[name]:12.1f} {cpu_rates[name]:14.1f}   {agreement[name]:8.0%}")

    def ratio(table: dict[str, float], other: str) -> float:
        return table["ragkit batched"] / table[other]

    plain = "plain model.generate batched"
    ratio_plain = ratio(rates, plain)
    print(
        f"ragkit batched / plain batched = {ratio_plain:.2f} wall, "
        f"{ratio(cpu_rates, plain):.2f} CPU  (target >= 0.9)"
    )
    ratio_loop = None
    loop = "ragkit one-by-one loop"
    if loop in rates:
        ratio_loop = ratio(rates, loop)
        print(
            f"ragkit batched / one-by-one    = {ratio_loop:.2f} wall, "
            f"{ratio(cpu_rates, loop):.2f} CPU  (target >= 3)"
        )
    if args.json is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        args.json = RESULTS / f"generation-{len(prompts)}-{stamp}.json"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "device": gen.device,
                "dtype": str(gen.dtype),
                "batch_size": batch_size,
                "times_s": times,
                "cpu_times_s": cpu_times,
                "tokens_per_cpu_s": cpu_rates,
                "tokens": tokens,
                "tokens_per_s": rates,
                "agreement": agreement,
                "ratio_vs_plain": ratio_plain,
                "ratio_vs_loop": ratio_loop,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
