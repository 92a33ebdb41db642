"""What a default answer costs in time (issue 18): the old default generator vs the new, one run.

For each configuration, on an index of the four wiki texts (``../shared/data/wiki``):

- **cold** ``ragkit ask``: a fresh process, timed from spawn to the first byte of the streamed
  answer and to exit, after one untimed run (model cache and page cache warm); median of
  ``--rounds``;
- **warm** ``/v1/query`` on ``ragkit serve`` (models loaded once, one client, sequential
  requests): p50 and p95 over ``--questions`` factual questions about the wiki texts.

Configurations: ``old`` = the packaged SmolLM2 with the previous defaults (chat template, free
decoding, no adapter, 128 new tokens); ``new`` = whatever ``ragkit ask`` does by default now
(``--generator-backend auto``: llama.cpp where it is importable and passed its guard);
``transformers`` / ``llamacpp`` = the same default on one backend explicitly (issue 21; llama.cpp
needs ``llama_cpp`` importable: on ``PYTHONPATH`` or in ``benchmarks/.work/llamacpp-site``).
Configurations alternate within each round so machine noise hits all alike.

    .venv/bin/python benchmarks/default_latency.py --quick     # 1 round, 4 questions
    .venv/bin/python benchmarks/default_latency.py             # 3 rounds, 10 questions
    .venv/bin/python benchmarks/default_latency.py --configs transformers llamacpp  # issue 21
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from llamacpp_site import environment_with_llamacpp  # benchmarks/ is sys.path[0] for the script

ROOT = Path(__file__).resolve().parent.parent
RAGKIT = str(ROOT / ".venv" / "bin" / "ragkit")
WIKI = ROOT.parent / "shared" / "data" / "wiki"
WORK = ROOT / "benchmarks" / ".work" / "default_latency"
QUESTIONS = [
    "In which year was Strasbourg formally designated the seat of the European Parliament?",
    "Which river does Strasbourg lie on?",
    "When was the Grande Île of Strasbourg classified as a World Heritage site?",
    "What is the official seat of the Council of Europe?",
    "Who coined the phrase war on terror?",
    "What is materialism?",
    "When did the War on Terror begin?",
    "What does culture include?",
    "Which cathedral is in Strasbourg?",
    "What is the population of Strasbourg?",
]
CONFIGS = {
    "old": [
        "--generator",
        "smollm2",
        "--adapter",
        "none",
        "--decoding",
        "free",
        "--max-new-tokens",
        "128",
    ],
    "new": [],
    "transformers": ["--generator-backend", "transformers"],
    "llamacpp": ["--generator-backend", "llamacpp"],
}
ENV = environment_with_llamacpp()


def ensure_index() -> Path:
    index = WORK / "wiki-index"
    if not (index / "manifest.json").is_file():
        subprocess.run([RAGKIT, "index", str(WIKI), "--index", str(index)], check=True)
    return index


def cold(index: Path, extra: list[str]) -> tuple[float, float]:
    """Seconds from spawn to the first stdout byte, and to exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [RAGKIT, "ask", QUESTIONS[0], "--index", str(index), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - started
    proc.stdout.read()
    proc.wait()
    return first, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def warm(index: Path, extra: list[str], questions: list[str]) -> list[float]:
    port = free_port()
    serve_extra = [a for a in extra if a not in ("--max-new-tokens", "128")]
    proc = subprocess.Popen(
        [RAGKIT, "serve", "--index", str(index), "--port", str(port), *serve_extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/v1/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        times = []
        for question in questions:
            body: dict[str, object] = {"question": question}
            if "128" in extra:
                body["max_tokens"] = 128
            request = urllib.request.Request(
                f"{url}/v1/query",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            began = time.perf_counter()
            with urllib.request.urlopen(request, timeout=600) as response:
                response.read()
            times.append(time.perf_counter() - began)
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1 round, 4 questions")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["old", "new"])
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.questions = 1, 4
    configs = {name: CONFIGS[name] for name in args.configs}
    index = ensure_index()
    for extra in configs.values():  # untimed: caches warm
        cold(index, extra)
    firsts: dict[str, list[float]] = {name: [] for name in configs}
    exits: dict[str, list[float]] = {name: [] for name in configs}
    for rnd in range(args.rounds):
        order = list(configs.items()) if rnd % 2 == 0 else list(configs.items())[::-1]
        for name, extra in order:
            first, total = cold(index, extra)
            firsts[name].append(first)
            exits[name].append(total)
    report: dict[str, object] = {"rounds": args.rounds, "cpu_count": os.cpu_count()}
    for name, extra in configs.items():
        times = sorted(warm(index, extra, QUESTIONS[: args.questions]))
        report[name] = {
            "cold_first_byte_s": round(statistics.median(firsts[name]), 2),
            "cold_exit_s": round(statistics.median(exits[name]), 2),
            "warm_query_p50_s": round(statistics.median(times), 2),
            "warm_query_p95_s": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
        }
    if "new" in report and "old" in report:
        old, new = report["old"], report["new"]
        assert isinstance(old, dict) and isinstance(new, dict)
        report["ratio_new_over_old"] = {k: round(new[k] / old[k], 2) for k in old if old[k]}
    if "transformers" in report and "llamacpp" in report:
        slow, fast = report["transformers"], report["llamacpp"]
        assert isinstance(slow, dict) and isinstance(fast, dict)
        report["ratio_llamacpp_over_transformers"] = {
            k: round(fast[k] / slow[k], 2) for k in slow if slow[k]
        }
    print(json.dumps(report, indent=1))
    out = ROOT / "benchmarks" / "results" / f"default-latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
