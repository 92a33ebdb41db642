"""Serving load test (issue 8): concurrent clients against ``ragkit serve`` on loopback.

Starts the app under uvicorn on 127.0.0.1 (a free port) in this process, then runs ``--clients``
threads that each send ``POST /v1/query`` requests back to back, for ``--seconds`` or until
``--max-requests`` were sent in total (both bounds always apply). It does this twice — with
dynamic batching and with ``batching=False`` (one question per generation call) — and reports
for each: requests, errors (by status), p50/p95 latency and throughput, plus the batch sizes the
server saw. Greedy decoding, the same questions and ``max_tokens`` in both modes.

    .venv/bin/python benchmarks/serve_bench.py --index benchmarks/.work/squad_index
    .venv/bin/python benchmarks/serve_bench.py --index IDX --clients 16 --seconds 30 --max-tokens 32

Results (JSON) go to ``benchmarks/results/serve-<clients>-<time>.json``. Loopback only: the
server never binds another interface. Clients and server share one process (and its GIL), which
costs both modes alike; run on an otherwise idle machine for numbers worth comparing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS = [
    "What is the capital of France?",
    "Which river flows through the city?",
    "When was the university founded?",
    "Who wrote the first constitution?",
    "What does the museum contain?",
    "How many people live in the region?",
    "What language is spoken there?",
    "Why was the treaty signed?",
]


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def load(
    base: str, clients: int, seconds: float, max_requests: int, max_tokens: int
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    sent = 0
    stop_at = time.monotonic() + seconds

    def worker(n: int) -> None:
        nonlocal sent
        with httpx.Client(base_url=base, timeout=300) as http:
            i = n
            while time.monotonic() < stop_at:
                with lock:
                    if sent >= max_requests:
                        return
                    sent += 1
                body = {"question": QUESTIONS[i % len(QUESTIONS)], "max_tokens": max_tokens}
                i += clients
                started = time.perf_counter()
                try:
                    status = str(http.post("/v1/query", json=body).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                took = time.perf_counter() - started
                with lock:
                    statuses[status] += 1
                    if status == "200":
                        latencies.append(took)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    health = httpx.get(base + "/v1/health", timeout=30).json()
    ok = statuses.get("200", 0)
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    return {
        "requests": sum(statuses.values()),
        "ok": ok,
        "errors": sum(statuses.values()) - ok,
        "statuses": dict(statuses),
        "wall_s": round(wall, 3),
        "throughput_rps": round(ok / wall, 3) if wall else 0.0,
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(q[18], 3) if latencies else None,
        "batches": health["batches"],
        "largest_batch": health["largest_batch"],
        "mean_batch": round(health["batched_requests"] / health["batches"], 2)
        if health["batches"]
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--generator", default=None, help="model (default: packaged SmolLM2)")
    parser.add_argument("--retriever", default="hybrid", choices=["dense", "bm25", "hybrid"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--modes", default="batched,single")
    args = parser.parse_args()
    if args.clients < 1 or args.clients > 256 or args.seconds <= 0 or args.seconds > 600:
        parser.error("--clients must be 1..256 and --seconds 0..600")

    from ragkit.rag import RAGPipeline
    from ragkit.server import ServerSettings, create_app

    rag = RAGPipeline.from_index(args.index, args.generator, k=4, retriever=args.retriever)
    rag.generator.warm_up()
    rag.ask("warm-up question?")
    report: dict[str, Any] = {
        "benchmark": "serve",
        "index": str(args.index),
        "model": rag.generator.config.model or "default",
        "clients": args.clients,
        "seconds": args.seconds,
        "max_tokens": args.max_tokens,
        "modes": {},
    }
    for mode in args.modes.split(","):
        settings = ServerSettings(
            batching=mode == "batched",
            batch_wait_ms=args.batch_wait_ms,
            max_batch_size=max(args.clients, 1),
            max_queue=max(64, 2 * args.clients),
            max_tokens=max(args.max_tokens, 1),
            rate_limit_per_minute=None,
        )
        with live_server(create_app(rag, settings)) as base:
            result = load(base, args.clients, args.seconds, args.max_requests, args.max_tokens)
        report["modes"][mode] = result
        print(mode, json.dumps(result), flush=True)
    modes = report["modes"]
    if "batched" in modes and "single" in modes and modes["single"]["throughput_rps"]:
        report["speedup"] = round(
            modes["batched"]["throughput_rps"] / modes["single"]["throughput_rps"], 2
        )
        print("batched / single throughput:", report["speedup"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"serve-{args.clients}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main()
