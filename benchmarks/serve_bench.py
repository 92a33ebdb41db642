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

``--mixed`` (issue 22) runs a different load instead: ``--clients`` threads (default 32) for
``--seconds`` (default 60; ``--quick``: 8 clients for 10 s) each send a mix of ``/v1/search``,
``/v1/query`` and ``/v1/feedback`` (votes, and choices between two of its own answers to one
question; ``--mix`` sets the search,query,feedback weights, default 60,25,15) to a server with its
default limits and a feedback store. It reports throughput, p50/p95/p99 latency per route, errors
by status, connection errors, and whether every acknowledged feedback row reached the store.
Requests in flight at the deadline are waited for and counted.

Models: the packaged default generator (Gemma 3 270M since issue 18) and MiniLM embedder (``--generator`` and
``--index`` swap them). Without ``--index`` the files of ``examples/data`` are indexed once into
``benchmarks/.work/serve_index`` (reused while unchanged).

    nice -n 10 .venv/bin/python benchmarks/serve_bench.py --quick     # ~8 min on 2 shared cores
    nice -n 10 .venv/bin/python benchmarks/serve_bench.py --clients 1,16 --requests 32 \\
        --max-tokens 32 --threads 1
    .venv/bin/python benchmarks/serve_bench.py --clients 32 --seconds 30 --requests 100000
    nice -n 10 .venv/bin/python benchmarks/serve_bench.py --mixed --quick   # 8 clients x 10 s
    .venv/bin/python benchmarks/serve_bench.py --mixed                      # 32 clients x 60 s

Results (JSON) go to ``benchmarks/results/serve-c<clients>-<time>.json`` (``serve-mixed-...``
for ``--mixed``). Loopback only: the
server never binds another interface. Clients and server share one process (and its GIL), which
costs both modes alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import socket
import sqlite3
import statistics
import tempfile
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


def run_clients(worker: Any, clients: int) -> tuple[float, float, float]:
    """Run ``worker(n)`` in ``clients`` threads; wall seconds, this process's CPU seconds, and
    the share of a core other processes used meanwhile (a noise check)."""
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
    return wall, cpu, others


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

    wall, cpu, others = run_clients(worker, clients)
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


MIXED_ROUTES = ("/v1/search", "/v1/query", "/v1/feedback")


def percentile(values: list[float], q: int) -> float | None:
    """The ``q``-th percentile (1..99) of ``values``, None without two of them."""
    if len(values) < 2:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 4)


def mixed_load(
    base: str,
    clients: int,
    seconds: float,
    max_tokens: int,
    k: int,
    weights: tuple[float, float, float],
    seed: int = 0,
) -> dict[str, Any]:
    """``clients`` threads sending searches, questions and feedback back to back until
    ``seconds`` have passed (requests in flight then are waited for); the run's numbers.

    Feedback goes to answers the same client received: a vote, or (a third of the time, when it
    has two answers to one question) a choice between them; before its first answer a client
    searches instead.
    """
    import httpx

    latencies: dict[str, list[float]] = {route: [] for route in MIXED_ROUTES}
    statuses: dict[str, Counter[str]] = {route: Counter() for route in MIXED_ROUTES}
    connection_errors: Counter[str] = Counter()
    acked: Counter[str] = Counter()
    acked_votes: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    search_w, query_w, _ = weights
    total_w = sum(weights)

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        mine: dict[str, list[str]] = {}
        with httpx.Client(base_url=base, timeout=600) as http:
            while time.monotonic() < stop_at:
                roll = rng.random() * total_w
                route = "/v1/search"
                body: dict[str, Any] = {"query": rng.choice(QUESTIONS), "k": k}
                if search_w <= roll < search_w + query_w:
                    question = rng.choice(QUESTIONS[:8])  # repeats: choices need two answers
                    route = "/v1/query"
                    body = {"question": question, "k": k, "max_tokens": max_tokens}
                elif roll >= search_w + query_w and mine:
                    route = "/v1/feedback"
                    pairs = [ids for ids in mine.values() if len(ids) >= 2]
                    if pairs and rng.random() < 1 / 3:
                        chosen, rejected = rng.sample(rng.choice(pairs), 2)
                        body = {"chosen_id": chosen, "rejected_id": rejected}
                    else:
                        answer_id = rng.choice([i for ids in mine.values() for i in ids])
                        body = {"answer_id": answer_id, "vote": rng.choice(["up", "down"])}
                started = time.perf_counter()
                try:
                    response = http.post(route, json=body)
                except httpx.HTTPError as exc:
                    with lock:
                        connection_errors[f"{route} {type(exc).__name__}"] += 1
                    continue
                took = time.perf_counter() - started
                ok = response.status_code == 200
                if ok and route == "/v1/query":
                    mine.setdefault(body["question"], []).append(response.json()["id"])
                with lock:
                    statuses[route][str(response.status_code)] += 1
                    if not ok:
                        continue
                    latencies[route].append(took)
                    if route == "/v1/query":
                        acked["answers"] += 1
                    elif "vote" in body:
                        acked["votes"] += 1
                        acked_votes[(body["answer_id"], 1 if body["vote"] == "up" else -1)] += 1
                    elif route == "/v1/feedback":
                        acked["choices"] += 1

    wall, cpu, others = run_clients(worker, clients)
    routes: dict[str, Any] = {}
    errors: Counter[str] = Counter()
    for route in MIXED_ROUTES:
        counts = statuses[route]
        ok = counts.get("200", 0)
        for status, n in counts.items():
            if status != "200":
                errors[status] += n
        routes[route] = {
            "requests": sum(counts.values()),
            "ok": ok,
            "statuses": dict(counts),
            "throughput_rps": round(ok / wall, 3) if wall else 0.0,
            "p50_s": percentile(latencies[route], 50),
            "p95_s": percentile(latencies[route], 95),
            "p99_s": percentile(latencies[route], 99),
        }
    ok_total = sum(r["ok"] for r in routes.values())
    return {
        "clients": clients,
        "seconds": seconds,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "others_cores": round(others, 2),
        "requests": sum(r["requests"] for r in routes.values()) + sum(connection_errors.values()),
        "ok": ok_total,
        "throughput_rps": round(ok_total / wall, 3) if wall else 0.0,
        "errors_by_status": dict(errors),
        "connection_errors": dict(connection_errors),
        "routes": routes,
        "acknowledged": dict(acked),
        "_acked_votes": acked_votes,
    }


def run_mixed(rag: Any, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """One ``--mixed`` run against a fresh app with default limits and a fresh feedback store."""
    from ragkit.feedback import FeedbackStore
    from ragkit.server import ServerSettings, create_app

    search_w, query_w, feedback_w = (float(w) for w in args.mix.split(","))
    weights = (search_w, query_w, feedback_w)
    with tempfile.TemporaryDirectory(prefix="serve-mixed-") as tmp:
        db = Path(tmp) / "feedback.db"
        settings = ServerSettings(
            batch_wait_ms=args.batch_wait_ms,
            max_queue=max(64, 2 * clients),
            max_tokens=max(args.max_tokens, 1),
            feedback_db=db,
        )
        app = create_app(rag, settings)
        with live_server(app) as base:
            result = mixed_load(base, clients, args.seconds, args.max_tokens, args.k, weights)
        acked_votes: Counter[tuple[str, int]] = result.pop("_acked_votes")
        with FeedbackStore(db) as store:
            stored = store.counts()
            conn = sqlite3.connect(db)
            try:
                votes = Counter(conn.execute("SELECT answer_id, value FROM votes").fetchall())
                integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                conn.close()
    stats = app.state.ragkit.batcher.stats
    acked = result["acknowledged"]
    result.update(
        mix=dict(zip(("search", "query", "feedback"), weights, strict=True)),
        feedback_stored=stored,
        feedback_lost={
            "answers": max(0, acked.get("answers", 0) - stored["answers"]),
            "votes": sum((acked_votes - votes).values()),
            "choices": max(0, acked.get("choices", 0) - stored["choices"]),
        },
        feedback_integrity=integrity,
        batches=stats.batches,
        largest_batch=stats.largest,
        mean_batch=round(stats.items / stats.batches, 2) if stats.batches else None,
    )
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


# ----------------------------------------------------------------------------- main


def main_mixed(rag: Any, index: Path, counts: list[int], args: argparse.Namespace) -> None:
    import torch

    from ragkit.server.service import Decoding, RAGService

    RAGService(rag).answer_batch(Decoding(max_new_tokens=2), [(QUESTIONS[0], None)])  # warm-up
    rag.retriever.search(QUESTIONS[1], args.k)
    report: dict[str, Any] = {
        "benchmark": "serve-mixed",
        "index": str(index),
        "model": rag.generator.config.model or "default",
        "generator_backend": type(rag.generator).__name__,
        # what "default" resolved to (the packaged model's converted folder), and the adapter
        "model_source": str(getattr(rag.generator, "_source", "") or ""),
        "adapter": rag.generator.config.adapter,
        "retriever": args.retriever,
        "k": args.k,
        "max_tokens": args.max_tokens,
        "batch_wait_ms": args.batch_wait_ms,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "runs": [],
    }
    print(
        f"mixed load: model {report['model']} ({report['model_source']}, adapter "
        f"{report['adapter']}), k={args.k}, {args.retriever}, "
        f"max_tokens={args.max_tokens}, mix search,query,feedback = {args.mix}, "
        f"{torch.get_num_threads()} torch thread(s)",
        flush=True,
    )
    for clients in counts:
        result = run_mixed(rag, clients, args)
        report["runs"].append(result)
        print(f"clients={clients}: {json.dumps(result)}", flush=True)
        for route, r in result["routes"].items():
            print(
                f"  {route:14s} {r['ok']:6d} ok  {r['throughput_rps']:8.2f} req/s  "
                f"p50 {r['p50_s']}  p95 {r['p95_s']}  p99 {r['p99_s']}  statuses {r['statuses']}",
                flush=True,
            )
        print(
            f"  total {result['ok']} ok in {result['wall_s']} s = {result['throughput_rps']} req/s;"
            f" errors {result['errors_by_status']}, connection errors "
            f"{result['connection_errors']}, feedback lost {result['feedback_lost']}",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"serve-mixed-c{'-'.join(map(str, counts))}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("wrote", out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", type=Path, default=None, help="default: examples/data indexed")
    parser.add_argument(
        "--generator", default=None, help="model (default: the packaged default, Gemma 3 270M)"
    )
    parser.add_argument(
        "--generator-backend",
        default="transformers",
        choices=["transformers", "llamacpp"],
        help="llamacpp: the llama.cpp backend (issue 21; llama_cpp on PYTHONPATH or in "
        "benchmarks/.work/llamacpp-site)",
    )
    parser.add_argument("--retriever", default="hybrid", choices=["dense", "bm25", "hybrid"])
    parser.add_argument("--k", type=int, default=4, help="passages per question (prompt length)")
    parser.add_argument(
        "--clients", default=None, help="comma-separated client counts (default 1,16; mixed: 32)"
    )
    parser.add_argument("--requests", type=int, default=32, help="requests per run")
    parser.add_argument(
        "--seconds", type=float, default=None, help="time bound per run (default 600; mixed: 60)"
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="default 32; quick: 16")
    parser.add_argument(
        "--mixed", action="store_true", help="mixed search/query/feedback load (see above)"
    )
    parser.add_argument("--mix", default="60,25,15", help="mixed: search,query,feedback weights")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--modes", default="batched,single")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the modes; medians")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="--clients 1,16 --requests 16 --max-tokens 16; mixed: --clients 8 --seconds 10",
    )
    args = parser.parse_args()
    if args.mixed:
        args.clients = args.clients or ("8" if args.quick else "32")
        args.seconds = args.seconds or (10.0 if args.quick else 60.0)
        if args.quick:
            args.max_tokens = args.max_tokens or 16
        mix = args.mix.split(",")
        try:
            ok_mix = len(mix) == 3 and all(float(w) >= 0 for w in mix) and sum(map(float, mix)) > 0
        except ValueError:
            ok_mix = False
        if not ok_mix:
            parser.error("--mix takes three non-negative weights: search,query,feedback")
    elif args.quick:
        args.clients, args.requests, args.max_tokens = "1,16", 16, 16
    args.clients = args.clients or "1,16"
    args.max_tokens = args.max_tokens or 32
    args.seconds = args.seconds or 600.0
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
    from ragkit.server.service import Decoding, RAGService
    from ragkit.server.state import generation_info

    if args.threads:
        torch.set_num_threads(args.threads)
    index = args.index or ensure_index(DEFAULT_INDEX)
    generator: Any = args.generator
    if args.generator_backend == "llamacpp":
        import sys

        from llamacpp_site import LLAMACPP_SITE

        sys.path.append(str(LLAMACPP_SITE))
        from ragkit.rag.factory import answering_pipeline

        rag = answering_pipeline(
            index, generator=generator, k=args.k, retriever=args.retriever, backend="llamacpp"
        )
    else:
        rag = RAGPipeline.from_index(index, generator, k=args.k, retriever=args.retriever)
    rag.generator.warm_up()
    if args.mixed:
        main_mixed(rag, index, counts, args)
        return
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
        "generator_backend": type(rag.generator).__name__,
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
