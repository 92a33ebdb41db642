"""Serving load test (issue 8): concurrent clients against ``ragkit serve`` on loopback.

Starts the app under uvicorn on 127.0.0.1 (a free port) in this process, then, for each
``--clients`` count, runs that many threads that each send ``POST /v1/query`` back to back until
``--requests`` were sent in total (or ``--seconds`` passed). It does this in two modes with the
same questions, greedy decoding and ``--max-tokens``:

- ``batched``: the server's dynamic batching queue (``--batch-wait-ms`` window, batches of up to
  the number of clients);
- ``single``: ``batching=False``, i.e. max batch 1: the same queue, one question per generation
  call, which is serving one request at a time.

For each run it reports requests, errors (by status), p50/p95 latency, throughput (wall and per
CPU-second of this process), the batch sizes the server formed, the seconds the model was busy,
and how many cores other processes used meanwhile (the machine may be shared). It checks that
both modes gave each question the same answer, and prints the batched/single throughput ratio
per client count.

Models: the packaged SmolLM2-135M-Instruct generator and MiniLM embedder (``--generator`` and
``--index`` swap them). Without ``--index`` the files of ``examples/data`` are indexed once into
``benchmarks/.work/serve_index`` (reused while unchanged).

    nice -n 10 .venv/bin/python benchmarks/serve_bench.py --quick     # ~8 min on 2 shared cores
    nice -n 10 .venv/bin/python benchmarks/serve_bench.py --clients 1,16 --requests 32 \\
        --max-tokens 32 --threads 1
    .venv/bin/python benchmarks/serve_bench.py --clients 32 --seconds 30 --requests 100000

Results (JSON) go to ``benchmarks/results/serve-c<clients>-<time>.json``. Loopback only: the
server never binds another interface. Clients and server share one process (and its GIL), which
costs both modes alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = HERE.parent / "examples" / "data"
DEFAULT_INDEX = HERE / ".work" / "serve_index"
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
QUESTIONS = [
    "What is the capital of Alsace?",
    "Which river flows past Strasbourg?",
    "What is materialism in philosophy?",
    "Who first used the phrase war on terror?",
    "What does culture include?",
    "Where is the European Parliament located?",
    "How is physicalism related to materialism?",
    "When did the war on terror begin?",
    "What is the cathedral of Strasbourg known for?",
    "Which languages are spoken in Strasbourg?",
    "What is cultural anthropology?",
    "What did President Bush say at Camp David?",
    "What is dialectical materialism?",
    "When was the University of Strasbourg founded?",
    "How do sociologists define culture?",
    "Which countries took part in the war in Afghanistan?",
]


# ----------------------------------------------------------------------------- set-up


def ensure_index(directory: Path) -> Path:
    """Index ``examples/data`` into ``directory`` with the packaged MiniLM (incremental)."""
    from ragkit.embedding import Embedder
    from ragkit.index import Index, index_paths

    started = time.perf_counter()
    with Index.open_or_create(directory, Embedder(None)) as index:
        report = index_paths(index, [DATA])
    print(
        f"index {directory}: {report.chunks_total} chunks "
        f"({report.files_indexed} file(s) (re)indexed) in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    return directory


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat; (0, 0) off Linux."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0, 0
    fields = [int(x) for x in first]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


# ----------------------------------------------------------------------------- load


def load(
    base: str, clients: int, seconds: float, requests: int, max_tokens: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """``clients`` threads posting questions back to back; the run's numbers and its answers.

    The question order is fixed (client ``n`` asks questions ``n``, ``n + clients``, ...), so
    two runs with the same arguments ask the same questions.
    """
    import httpx

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    answers: dict[str, str] = {}
    lock = threading.Lock()
    sent = 0
    stop_at = time.monotonic() + seconds

    def worker(n: int) -> None:
        nonlocal sent
        with httpx.Client(base_url=base, timeout=600) as http:
            i = n
            while time.monotonic() < stop_at:
                with lock:
                    if sent >= requests:
                        return
                    sent += 1
                question = QUESTIONS[i % len(QUESTIONS)]
                body = {"question": question, "max_tokens": max_tokens}
                i += clients
                started = time.perf_counter()
                answer = None
                try:
                    response = http.post("/v1/query", json=body)
                    status = str(response.status_code)
                    if response.status_code == 200:
                        answer = response.json()["answer"]
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                took = time.perf_counter() - started
                with lock:
                    statuses[status] += 1
                    if answer is not None:
                        latencies.append(took)
                        answers.setdefault(question, answer)

    b0, t0 = cpu_ticks()
    c0 = time.process_time()
    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    cpu = time.process_time() - c0
    b1, t1 = cpu_ticks()
    others = max(0.0, (b1 - b0) / HZ - cpu) / wall if t1 > t0 and wall else float("nan")
    ok = statuses.get("200", 0)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else None
    return {
        "requests": sum(statuses.values()),
        "ok": ok,
        "errors": sum(statuses.values()) - ok,
        "statuses": dict(statuses),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "others_cores": round(others, 2),
        "throughput_rps": round(ok / wall, 4) if wall else 0.0,
        "requests_per_cpu_s": round(ok / cpu, 4) if cpu else 0.0,
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(p95, 3) if p95 is not None else None,
    }, answers


def run_mode(
    rag: Any, mode: str, clients: int, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, str]]:
    """One load run against a fresh app in ``mode`` (``batched`` or ``single``)."""
    from ragkit.server import ServerSettings, create_app

    settings = ServerSettings(
        batching=mode == "batched",
        batch_wait_ms=args.batch_wait_ms,
        max_batch_size=max(clients, 1),
        max_queue=max(64, 2 * clients),
        max_tokens=max(args.max_tokens, 1),
        rate_limit_per_minute=None,
    )
    app = create_app(rag, settings)
    with live_server(app) as base:
        result, answers = load(base, clients, args.seconds, args.requests, args.max_tokens)
    stats = app.state.ragkit.batcher.stats
    result.update(
        batches=stats.batches,
        largest_batch=stats.largest,
        mean_batch=round(stats.items / stats.batches, 2) if stats.batches else None,
        model_busy_s=round(stats.busy_seconds, 3),
    )
    return result, answers


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", type=Path, default=None, help="default: examples/data indexed")
    parser.add_argument("--generator", default=None, help="model (default: packaged SmolLM2)")
    parser.add_argument("--retriever", default="hybrid", choices=["dense", "bm25", "hybrid"])
    parser.add_argument("--k", type=int, default=4, help="passages per question (prompt length)")
    parser.add_argument("--clients", default="1,16", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=32, help="requests per run")
    parser.add_argument("--seconds", type=float, default=600.0, help="time bound per run")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--modes", default="batched,single")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the modes; medians")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="--clients 1,16 --requests 16 --max-tokens 16"
    )
    args = parser.parse_args()
    if args.quick:
        args.clients, args.requests, args.max_tokens = "1,16", 16, 16
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not counts or any(c < 1 or c > 256 for c in counts):
        parser.error("--clients must be 1..256")
    if args.seconds <= 0 or args.seconds > 3600 or args.requests < 1 or args.rounds < 1:
        parser.error("--seconds must be 0..3600, --requests and --rounds >= 1")
    if not set(modes) <= {"batched", "single"}:
        parser.error("--modes takes batched and/or single")

    import torch

    from ragkit.rag import RAGPipeline
    from ragkit.server.app import generation_info
    from ragkit.server.service import Decoding, RAGService

    if args.threads:
        torch.set_num_threads(args.threads)
    index = args.index or ensure_index(DEFAULT_INDEX)
    rag = RAGPipeline.from_index(index, args.generator, k=args.k, retriever=args.retriever)
    rag.generator.warm_up()
    # Untimed warm-up at every batch size used, so one-off allocations are paid before timing;
    # it also measures the prompts, whose length decides what batching can gain on a CPU.
    service = RAGService(rag)
    prompt_tokens: list[int] = []
    for size in sorted({1, len(QUESTIONS), *counts}):
        warm = service.answer_batch(
            Decoding(max_new_tokens=2), [(q, None) for q in QUESTIONS[:size]]
        )
        prompt_tokens = [int(generation_info(a).get("prompt_tokens", 0)) for a in warm]
    report: dict[str, Any] = {
        "benchmark": "serve",
        "index": str(index),
        "model": rag.generator.config.model or "default",
        "retriever": args.retriever,
        "k": args.k,
        "clients": counts,
        "requests": args.requests,
        "seconds": args.seconds,
        "max_tokens": args.max_tokens,
        "prompt_tokens": {
            "min": min(prompt_tokens, default=0),
            "mean": round(statistics.fmean(prompt_tokens), 1) if prompt_tokens else 0,
            "max": max(prompt_tokens, default=0),
        },
        "batch_wait_ms": args.batch_wait_ms,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "runs": {},
        "summary": {},
    }
    print(
        f"model {report['model']}, k={args.k}, {args.retriever}, max_tokens={args.max_tokens}, "
        f"{torch.get_num_threads()} torch thread(s), prompts {report['prompt_tokens']} tokens",
        flush=True,
    )
    for clients in counts:
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        answers: dict[str, dict[str, str]] = {m: {} for m in modes}
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else list(reversed(modes)):
                result, got = run_mode(rag, mode, clients, args)
                runs[mode].append(result)
                answers[mode].update(got)
                print(f"clients={clients} {mode}: {json.dumps(result)}", flush=True)
        report["runs"][str(clients)] = runs
        summary: dict[str, Any] = {
            m: {
                "throughput_rps": median_of(runs[m], "throughput_rps"),
                "requests_per_cpu_s": median_of(runs[m], "requests_per_cpu_s"),
                "p50_s": median_of(runs[m], "p50_s") if all(x["p50_s"] for x in runs[m]) else None,
                "p95_s": median_of(runs[m], "p95_s") if all(x["p95_s"] for x in runs[m]) else None,
                "errors": sum(x["errors"] for x in runs[m]),
                "mean_batch": runs[m][-1]["mean_batch"],
                "others_cores": median_of(runs[m], "others_cores"),
            }
            for m in modes
        }
        if "batched" in modes and "single" in modes:
            common = set(answers["batched"]) & set(answers["single"])
            summary["same_answers"] = (
                f"{sum(answers['batched'][q] == answers['single'][q] for q in common)}/"
                f"{len(common)}"
            )
            single, batched = summary["single"], summary["batched"]
            if single["throughput_rps"] and single["requests_per_cpu_s"]:
                summary["speedup_wall"] = round(
                    batched["throughput_rps"] / single["throughput_rps"], 2
                )
                summary["speedup_cpu"] = round(
                    batched["requests_per_cpu_s"] / single["requests_per_cpu_s"], 2
                )
        report["summary"][str(clients)] = summary
        print(f"clients={clients} summary: {json.dumps(summary)}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"serve-c{'-'.join(map(str, counts))}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main()
